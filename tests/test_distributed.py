"""Pruning on torch.distributed: FSDP2 shards and DDP replicas, 2 and 3 CPU processes (gloo).

Each world size is launched once per module (a fixture; every launch has a hard
timeout and kills stragglers) and runs the scenarios of ``distributed_scenarios.py``
in one process group. Each scenario compares every mask and the outputs of the
distributed run with single-process pruning of the same weights, on every rank; a
test here fails with the tracebacks of the ranks where its scenario failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from distributed_scenarios import inputs, launch, make_mlp, masks

from prunefw import make_permanent, sparsity_report

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)

#: Seconds one launch (all scenarios of one world size) may take before it is killed.
TIMEOUT = 300

SCENARIOS = {
    2: [
        "global_contexts",
        "global_default_strategy",
        "unseeded_random",
        "reused_random_criterion",
        "layer_contexts",
        "training",
        "permanent",
        "rollback",
        "ddp",
        "checkpoint",
        "gradual_fsdp",
        "docs_examples",
        "hsdp",
    ],
    3: [
        "global_contexts",
        "unseeded_random",
        "layer_contexts",
        "training",
        "rollback",
        "ddp",
        "checkpoint",
        "docs_examples",
        "hsdp",
    ],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``runs(world)``: the results of the scenarios on ``world`` ranks (launched once)."""
    tmp = tmp_path_factory.mktemp("distributed")
    cache: dict[int, dict[str, dict[int, Any]]] = {}

    def get(world: int) -> dict[str, dict[int, Any]]:
        if world == 3:
            get(2)  # the 3-rank run loads the 2-rank run's checkpoint
        if world not in cache:
            cache[world] = launch(world, SCENARIOS[world], tmp, TIMEOUT)
        return cache[world]

    get.tmp = tmp  # type: ignore[attr-defined]
    return get


def check(runs: Any, world: int, name: str) -> None:
    results = runs(world)[name]
    failed = {rank: error for rank, error in sorted(results.items()) if error}
    assert not failed, "\n".join(f"--- rank {r} of {world}:\n{e}" for r, e in failed.items())


WORLDS = pytest.mark.parametrize("world", [2, 3])


@WORLDS
def test_global_pruning_of_sharded_model_equals_single_process(runs: Any, world: int) -> None:
    """Magnitude (amount, count, threshold), percentile, random, a plugin criterion, ties:
    every mask, the outputs and sparsity_report on every rank equal single-process."""
    check(runs, world, "global_contexts")


def test_magnitude_and_percentile_equal_the_default_strategy(runs: Any) -> None:
    check(runs, 2, "global_default_strategy")


@WORLDS
def test_hsdp_two_dimensional_mesh(runs: Any, world: int) -> None:
    """Replicate x Shard(0) meshes (world x 1: replicas only, 1 x world: shards only)."""
    check(runs, world, "hsdp")


@WORLDS
def test_unseeded_random_gives_one_mask_on_every_rank(runs: Any, world: int) -> None:
    check(runs, world, "unseeded_random")


def test_a_reused_random_criterion_draws_as_in_one_process(runs: Any) -> None:
    check(runs, 2, "reused_random_criterion")


@WORLDS
def test_layer_context_on_sharded_model_equals_single_process(runs: Any, world: int) -> None:
    """Built-ins, random, and the installed nm plugin (N:M) on DTensor shards."""
    check(runs, world, "layer_contexts")


@WORLDS
def test_training_continues_with_masks_enforced(runs: Any, world: int) -> None:
    check(runs, world, "training")


def test_make_permanent_on_sharded_model(runs: Any) -> None:
    check(runs, 2, "permanent")


@WORLDS
def test_a_failing_rank_rolls_back_every_rank(runs: Any, world: int) -> None:
    check(runs, world, "rollback")


@WORLDS
def test_ddp_identical_masks_gradual_pruner_and_checkpoint(runs: Any, world: int) -> None:
    check(runs, world, "ddp")


@WORLDS
def test_sharded_checkpoint_round_trip(runs: Any, world: int) -> None:
    """Save with DCP, load into a fresh sharded model (3 ranks also load the 2-rank one)."""
    check(runs, world, "checkpoint")


def test_gradual_pruner_on_sharded_model(runs: Any) -> None:
    check(runs, 2, "gradual_fsdp")


def _reference(runs: Any, name: str) -> dict[str, Any]:
    check(runs, 2, "checkpoint" if name.startswith("fsdp") else "ddp")
    return torch.load(Path(runs.tmp) / name, weights_only=True)  # type: ignore[no-any-return]


def test_sharded_checkpoint_loads_into_a_single_process_model(runs: Any) -> None:
    from prunefw.distributed import load_pruned_checkpoint

    reference = _reference(runs, "fsdp-ref-2.pt")
    model = make_mlp(seed=9)
    extra = load_pruned_checkpoint(
        model, str(Path(runs.tmp) / "fsdp-ckpt-2"), extra={"state": {"step": 0}}
    )
    assert extra == {"state": {"step": 7}}
    for got, expected in zip(masks(model), reference["masks"], strict=True):
        assert torch.equal(got, expected)
    x = inputs()
    assert torch.equal(model(x), reference["output"])
    pruned = sparsity_report(model, pruned_only=True).zeros
    make_permanent(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert torch.equal(model(x), reference["output"])
    assert sparsity_report(model).zeros >= pruned


def test_ddp_checkpoint_loads_into_a_single_process_model_with_the_pruner_state(runs: Any) -> None:
    from prunefw.distributed import load_pruned_checkpoint

    reference = _reference(runs, "ddp-ref-2.pt")
    model = make_mlp(seed=1)
    template = {"pruner": {"step_count": 0, "config": {}}}
    extra = load_pruned_checkpoint(model, str(Path(runs.tmp) / "ddp-ckpt-2"), extra=template)
    assert extra["pruner"]["step_count"] == 5
    for got, expected in zip(masks(model), reference["masks"], strict=True):
        assert torch.equal(got, expected)
    loaded = model.state_dict()
    differ = [k for k, v in reference["state"].items() if not torch.equal(loaded[k], v)]
    assert not differ, f"loaded tensors differ from the saved model's: {differ}"
    assert torch.equal(model(inputs()), reference["output"])


@WORLDS
def test_docs_examples_run_on_every_rank(runs: Any, world: int) -> None:
    check(runs, world, "docs_examples")


def test_docs_single_process_example_loads_the_docs_checkpoint(
    runs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed_scenarios import doc_blocks

    check(runs, 2, "docs_examples")
    check(runs, 3, "docs_examples")  # the last writer of pruned-ckpt
    monkeypatch.chdir(Path(runs.tmp) / "docs")
    namespace: dict[str, Any] = {}
    exec(compile(doc_blocks()[1], "docs/distributed.md (one process)", "exec"), namespace)
    model = namespace["model"]
    assert sparsity_report(model).zeros >= round(0.8 * (32 * 64 + 64 * 10))


# -- single-process pieces ----------------------------------------------------------------


def test_random_keys_of_a_block_are_the_streaming_strategys() -> None:
    from prunefw.distributed._select import random_block

    generator = torch.Generator().manual_seed(11)
    sequence = torch.randint(-(2**31), 2**31, (5000,), generator=generator, dtype=torch.int32)
    for start, count in [(0, 5000), (0, 17), (1234, 2000), (4999, 1), (3000, 0)]:
        assert torch.equal(random_block(11, start, count), sequence[start : start + count])


def test_without_a_process_group_nothing_is_distributed() -> None:
    from prunefw import GlobalPruningContext, MagnitudeCriterion
    from prunefw.contexts.base import _distributed_prune

    assert not torch.distributed.is_initialized()
    context = GlobalPruningContext(make_mlp(), [MagnitudeCriterion(amount=0.5)])
    assert _distributed_prune(context) is None
