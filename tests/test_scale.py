"""Issue 13: the default global call scales (strategy="auto"), and bool masks."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from conftest import make_mlp
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
    load_pruned_state_dict,
    make_permanent,
)
from prunefw.contexts import global_context
from prunefw.contexts.global_context import (
    AUTO_MEMORY_FRACTION,
    GLOBAL_UNSTRUCTURED_PEAK,
    STRATEGIES,
    available_memory,
    choose_strategy,
    streams_identically,
)
from prunefw.errors import InvalidArgumentError, InvalidTypeError


def model_factory(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Conv1d(2, 3, 3), nn.Linear(30, 7))
    with torch.no_grad():  # ties
        for p in model.parameters():
            p.copy_((p / 0.01).round() * 0.01)
    return model


def weight_bytes(model: nn.Module) -> int:
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
    return sum(getattr(t.module, t.name).numel() * 4 for t in ctx.targets)


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight_mask for m in model.modules() if hasattr(m, "weight_mask")]


class NoRank(PruningCriterion):
    name = "test-no-rank"

    def compute_mask(self, scores, default_mask):
        return scores > scores.median()


# --- the auto rule --------------------------------------------------------------------------


def test_auto_is_the_default_and_a_valid_strategy():
    assert STRATEGIES == ("auto", "global_unstructured", "streaming")
    ctx = GlobalPruningContext(make_mlp(), MagnitudeCriterion(amount=0.5))
    assert ctx.strategy == "auto" and ctx.strategy_used is None
    ctx.prune()
    assert ctx.strategy_used == "global_unstructured"  # a small model on any machine


def test_available_memory_is_read_from_the_system():
    available = available_memory()
    assert available is not None and available > 0


@pytest.mark.parametrize(
    "criteria",
    [
        [MagnitudeCriterion(amount=0.5)],
        [PercentileCriterion(0.1, 0.8)],
        [MagnitudeCriterion(min_threshold=0.01)],
        [MagnitudeCriterion(amount=0.3), PercentileCriterion(0.2, 0.9)],
    ],
)
def test_the_rule_by_size_against_available_memory(criteria):
    model = model_factory()
    ctx = GlobalPruningContext(model, criteria)
    need = GLOBAL_UNSTRUCTURED_PEAK * weight_bytes(model) / AUTO_MEMORY_FRACTION
    assert choose_strategy(ctx.criteria, ctx.targets, available=int(need) + 1) == (
        "global_unstructured"
    )
    assert choose_strategy(ctx.criteria, ctx.targets, available=int(need) - 1) == "streaming"
    assert ctx.resolve_strategy(available=10**15) == "global_unstructured"
    assert ctx.resolve_strategy(available=1) == "streaming"


def test_random_and_unrankable_criteria_never_stream_automatically():
    model = model_factory()
    random = RandomCriterion(0.5, seed=0)
    state = random.generator.get_state()
    for criteria in ([random], [MagnitudeCriterion(amount=0.5), random], [NoRank()]):
        ctx = GlobalPruningContext(model, criteria)
        assert ctx.resolve_strategy(available=1) == "global_unstructured"
    # the probe asked a copy: the seeded generator did not advance
    assert torch.equal(random.generator.get_state(), state)
    assert not streams_identically(random, 100)
    assert streams_identically(MagnitudeCriterion(amount=0.5), 100)
    assert not streams_identically(NoRank(), 100)


def test_unknown_available_memory_keeps_torchs_path(monkeypatch):
    monkeypatch.setattr(global_context, "available_memory", lambda: None)
    ctx = GlobalPruningContext(model_factory(), MagnitudeCriterion(amount=0.5))
    assert ctx.resolve_strategy() == "global_unstructured"


@pytest.mark.parametrize(
    "criteria",
    [
        lambda: [MagnitudeCriterion(amount=0.5)],
        lambda: [PercentileCriterion(0.25, 0.75)],
        lambda: [MagnitudeCriterion(amount=0.3), PercentileCriterion(0.1, 0.9)],
    ],
)
def test_a_plain_call_streams_when_memory_is_short_with_the_same_masks(monkeypatch, criteria):
    reference = model_factory()
    GlobalPruningContext(reference, criteria(), strategy="global_unstructured").prune()
    monkeypatch.setattr(global_context, "available_memory", lambda: 1 << 10)
    model = model_factory()
    ctx = GlobalPruningContext(model, criteria())
    ctx.prune()
    assert ctx.strategy_used == "streaming"
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b) and a.dtype == b.dtype


def test_random_under_short_memory_gives_torchs_masks(monkeypatch):
    reference = model_factory()
    GlobalPruningContext(
        reference, RandomCriterion(0.4, seed=7), strategy="global_unstructured"
    ).prune()
    monkeypatch.setattr(global_context, "available_memory", lambda: 1 << 10)
    model = model_factory()
    ctx = GlobalPruningContext(model, RandomCriterion(0.4, seed=7))
    ctx.prune()
    assert ctx.strategy_used == "global_unstructured"
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b)


def test_strategy_forces_either_way(monkeypatch):
    monkeypatch.setattr(global_context, "available_memory", lambda: 1 << 10)
    ctx = GlobalPruningContext(
        model_factory(), MagnitudeCriterion(amount=0.5), strategy="global_unstructured"
    )
    ctx.prune()
    assert ctx.strategy_used == "global_unstructured"
    monkeypatch.setattr(global_context, "available_memory", lambda: 1 << 50)
    ctx = GlobalPruningContext(
        model_factory(), MagnitudeCriterion(amount=0.5), strategy="streaming"
    )
    ctx.prune()
    assert ctx.strategy_used == "streaming"
    with pytest.raises(InvalidArgumentError, match="'auto', 'global_unstructured', 'streaming'"):
        GlobalPruningContext(model_factory(), MagnitudeCriterion(amount=0.5), strategy="fast")


# --- bool masks -----------------------------------------------------------------------------

BOTH = ["global_unstructured", "streaming"]


def pruned(strategy: str, mask_dtype=torch.bool, seed: int = 0) -> nn.Module:
    model = model_factory(seed)
    GlobalPruningContext(
        model, MagnitudeCriterion(amount=0.6), strategy=strategy, mask_dtype=mask_dtype
    ).prune()
    return model


@pytest.mark.parametrize("strategy", BOTH)
def test_bool_masks_are_torchs_reparametrization(strategy):
    model, reference = pruned(strategy), pruned(strategy, mask_dtype=None)
    x = torch.randn(2, 2, 40)
    for module, ref in zip(model.modules(), reference.modules(), strict=True):
        if not hasattr(module, "weight_mask"):
            continue
        assert module.weight_mask.dtype == torch.bool
        assert ref.weight_mask.dtype == torch.float32
        assert torch.equal(module.weight_mask, ref.weight_mask.bool())
        assert isinstance(module.weight_orig, nn.Parameter)
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
        hook = next(iter(module._forward_pre_hooks.values()))
        assert isinstance(hook, prune.CustomFromMask) and hook.mask is module.weight_mask
    assert prune.is_pruned(model)
    assert torch.equal(model[0](x), reference[0](x))
    clone = copy.deepcopy(model)
    assert clone[0].weight_mask.dtype == torch.bool
    assert torch.equal(clone[0](x), model[0](x))
    prune.remove(model[0], "weight")
    assert torch.equal(model[0].weight, reference[0].weight)
    make_permanent(model)
    make_permanent(reference)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("strategy", BOTH)
def test_bool_masks_state_dict_round_trip(strategy):
    model = pruned(strategy)
    state = model.state_dict()
    assert state["0.weight_mask"].dtype == torch.bool
    fresh = model_factory(1)
    load_pruned_state_dict(fresh, state)
    x = torch.randn(3, 2, 40)
    for a, b in zip(masks(fresh), masks(model), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(fresh[0](x), model[0](x))


@pytest.mark.parametrize("first", BOTH)
@pytest.mark.parametrize("second", [*BOTH, "layer"])
def test_pruning_again_on_top_of_bool_masks(first, second):
    model = pruned(first)
    before = [m.clone() for m in masks(model)]
    if second == "layer":
        LayerPruningContext({model[0]: MagnitudeCriterion(amount=0.5)}).prune()
        expected = [torch.float32, torch.bool, torch.bool]
    else:
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy=second).prune()
        expected = [torch.float32] * 3
    for old, new, dtype in zip(before, masks(model), expected, strict=True):
        # torch's PruningContainer casts a re-pruned mask to the weight's dtype;
        # streaming does the same unless mask_dtype says otherwise
        assert new.dtype == dtype
        assert not bool((new.bool() & ~old).any())  # nothing un-pruned
    alive = sum(int(m.sum()) for m in masks(model))
    if second != "layer":
        assert alive == sum(int(m.sum()) for m in before) - round(
            0.5 * sum(int(m.sum()) for m in before)
        )
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            assert torch.equal(module.weight, module.weight_orig * module.weight_mask)


@pytest.mark.parametrize("strategy", BOTH)
def test_bool_masks_stay_bool_when_asked_again(strategy):
    model = pruned(strategy)
    GlobalPruningContext(
        model, PercentileCriterion(0.1, 0.9), strategy=strategy, mask_dtype=torch.bool
    ).prune()
    assert all(m.dtype == torch.bool for m in masks(model))
    reference = pruned(strategy, mask_dtype=None)
    GlobalPruningContext(reference, PercentileCriterion(0.1, 0.9), strategy=strategy).prune()
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b.bool())


def test_bool_masks_save_three_bytes_per_fp32_weight():
    def saved(model: nn.Module) -> int:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        return buffer.tell()

    lean, fat = pruned("streaming"), pruned("streaming", mask_dtype=None)
    n = sum(m.numel() for m in masks(lean))
    assert sum(m.nbytes for m in masks(lean)) == n
    assert sum(m.nbytes for m in masks(fat)) == 4 * n
    assert saved(fat) - saved(lean) >= 3 * n


def test_mask_dtype_is_checked():
    with pytest.raises(InvalidTypeError, match="mask_dtype"):
        GlobalPruningContext(make_mlp(), MagnitudeCriterion(amount=0.5), mask_dtype="bool")
    with pytest.raises(InvalidArgumentError, match=r"torch\.bool or a float dtype"):
        GlobalPruningContext(make_mlp(), MagnitudeCriterion(amount=0.5), mask_dtype=torch.int8)
    model = make_mlp()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), mask_dtype=torch.float16).prune()
    assert model[0].weight_mask.dtype == torch.float16


def test_llm_benchmark_smoke_run():
    """benchmarks/bench_llm.py on a 4-layer toy Llama: every case runs and checks its masks."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("transformers")
    pytest.importorskip("prunefw_wanda")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_llm.py"), "--size", "tiny", "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if "|" in line}
    assert "ran streaming" in rows["streaming_bool"] and "== default_call" in rows["streaming_bool"]
    assert "4 progress events" in rows["sequential_wanda"]
    assert all("masks ok" in rows[c] for c in ("default_call", "oneshot_wanda", "sequential_wanda"))


def test_bool_mask_autograd_keeps_the_one_byte_mask():
    model = pruned("streaming")
    saved = model[0].weight.grad_fn._saved_other
    assert saved.dtype == torch.bool and saved.data_ptr() == model[0].weight_mask.data_ptr()


# --- smallest_k on large vectors: the sampled window and its fallback ----------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("miss", [False, True])
def test_smallest_k_window_and_fallback_match_a_stable_sort(monkeypatch, dtype, miss):
    from prunefw import _radix, selection

    monkeypatch.setattr(_radix, "CHUNK", 1000)
    monkeypatch.setattr(_radix, "SAMPLE", 64)
    if miss:
        monkeypatch.setattr(selection, "sample_window", lambda sample, rank, n: (None, -(2**31)))
    n = selection._KTHVALUE_MAX + 4321
    gen = torch.Generator().manual_seed(5)
    values = ((torch.randn(n, generator=gen) * 8).round() / 8).to(dtype)  # ties, signs
    values[::89] = -0.0
    for k in (1, 12_345, n // 2, n - 1):
        order = torch.sort(values.double(), stable=True).indices[:k]
        expected = torch.zeros(n, dtype=torch.bool)
        expected[order] = True
        assert torch.equal(selection.smallest_k(values, k), expected)
