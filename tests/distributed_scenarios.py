"""Multi-process scenarios for tests/test_distributed.py (CPU, gloo, 127.0.0.1).

:func:`launch` starts ``world`` processes (``forkserver`` with torch preloaded: a
fresh interpreter per worker would re-import torch, seconds each), which join one
gloo process group and run the named scenarios in order. Every scenario runs on every
rank, compares the distributed result with single-process pruning of the same
weights computed in the same process, and raises on any difference; the launcher
collects ``{scenario: {rank: None or traceback}}``. A scenario that fails on one rank
only still lets the others go on: the checks come after the collectives.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import prunefw
from prunefw import (
    GlobalPruningContext,
    GradualPruner,
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
    RankSelection,
    hookimpl,
    make_permanent,
    sparsity_report,
)
from prunefw.selection import smallest_k

Scenario = Callable[[int, int, Path], None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


# -- models and helpers ----------------------------------------------------------------


def make_mlp(seed: int = 0, quantum: float | None = None) -> nn.Sequential:
    """Linear layers with uneven row counts (23, 12, 5 rows over 2 or 3 ranks).

    Inputs 16 and 12 wide: rows of the first and last weights split into groups of 4
    (the N:M plugin); the middle one's 23 do not.
    """
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(16, 23), nn.ReLU(), nn.Linear(23, 12), nn.ReLU(), nn.Linear(12, 5)
    )
    if quantum is not None:  # many equal magnitudes: the tie rule across ranks
        with torch.no_grad():
            for p in model.parameters():
                p.copy_((p / quantum).round() * quantum)
    return model


def shard(model: nn.Module, world: int) -> nn.Module:
    """FSDP2: each Linear its own unit, then the root (parameters become Shard(0) DTensors)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def linears(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor (a collective), a plain tensor as is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach()


def masks(model: nn.Module) -> list[torch.Tensor | None]:
    out = []
    for module in linears(model):
        mask = module._buffers.get("weight_mask")
        out.append(None if mask is None else full(mask).to(torch.float32))
    return out


def assert_same_masks(got: list[Any], expected: list[Any], what: str) -> None:
    assert len(got) == len(expected), what
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a is None or b is None:
            assert a is None and b is None, f"{what}: layer {i}: one is unpruned"
            continue
        assert torch.equal(a, b.to(a.dtype)), (
            f"{what}: layer {i}: {int((a != b).sum())} of {a.numel()} mask entries differ"
        )


def inputs(seed: int = 1, batch: int = 6) -> torch.Tensor:
    return torch.randn(batch, 16, generator=torch.Generator().manual_seed(seed))


def all_equal_across_ranks(tensors: list[torch.Tensor]) -> bool:
    """Whether every rank holds the same tensors (gathered to every rank)."""
    mine = [t.detach().cpu() for t in tensors]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return all(
        all(torch.equal(a, b) for a, b in zip(other, mine, strict=True)) for other in gathered
    )


def local_state(model: nn.Module) -> list[Any]:
    """What pruning may change on this rank: names, objects, local bytes, hooks, FSDP records."""
    from prunefw.distributed._fsdp import fsdp_param_of

    def bits(t: torch.Tensor) -> bytes:
        local = t.to_local() if hasattr(t, "to_local") else t
        return bytes(local.detach().contiguous().reshape(-1).view(torch.uint8).numpy())

    state: list[Any] = []
    for name, module in model.named_modules():
        state.append((name, "params", [(k, id(v), bits(v)) for k, v in module._parameters.items()]))
        state.append((name, "buffers", [(k, id(v), bits(v)) for k, v in module._buffers.items()]))
        state.append((name, "pre", [(k, id(h)) for k, h in module._forward_pre_hooks.items()]))
        state.append((name, "post", [(k, id(h)) for k, h in module._forward_hooks.items()]))
        state.append((name, "attrs", sorted(vars(module))))
        for pname in ("weight", "weight_orig"):
            if fsdp_param_of(module, pname) is not None:
                state.append((name, "fsdp", pname))
    return state


class SignedScores(PruningCriterion):
    """A plugin criterion: prunes the lowest *signed* weights (scores computed elementwise)."""

    name = "test-signed"

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
        return getattr(module, name).detach() * 1.0  # a DTensor for a sharded model

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return ~smallest_k(scores, round(self.amount * scores.numel()))

    def rank_selection(self, n: int) -> RankSelection:
        return RankSelection(smallest=round(self.amount * n))

    def config(self) -> dict[str, Any]:
        return {"amount": self.amount}


class _TestPlugin:
    @hookimpl
    def prunefw_register_criteria(self) -> tuple[type[PruningCriterion], ...]:
        return (SignedScores,)


def plugin_criterion(name: str, **kwargs: Any) -> PruningCriterion:
    """A criterion by name from a plugin manager with the test plugin registered in process."""
    from prunefw.plugin_manager import PluginManager
    from prunefw.registry import CriterionRegistry

    manager = PluginManager()
    manager.register(_TestPlugin(), name="test-distributed-plugin")
    return CriterionRegistry.from_plugin_manager(manager).get(name)(**kwargs)


class FailsOnLastRank(MagnitudeCriterion):
    """Raises in importance_scores on the last rank only, after others have pruned."""

    name = "test-fails-on-last-rank"

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor | None:
        if dist.get_rank() == dist.get_world_size() - 1:
            raise RuntimeError(f"boom on rank {dist.get_rank()}")
        return None


# -- scenarios --------------------------------------------------------------------------

GLOBAL_CASES: list[tuple[str, Callable[[], list[PruningCriterion]]]] = [
    ("magnitude", lambda: [MagnitudeCriterion(amount=0.5)]),
    ("magnitude-count", lambda: [MagnitudeCriterion(amount=137)]),
    ("magnitude-threshold", lambda: [MagnitudeCriterion(min_threshold=0.1)]),
    ("percentile", lambda: [PercentileCriterion(0.1, 0.8)]),
    ("random", lambda: [RandomCriterion(0.4, seed=3)]),
    ("magnitude+random", lambda: [MagnitudeCriterion(amount=0.3), RandomCriterion(0.5, seed=1)]),
    ("plugin", lambda: [plugin_criterion("test-signed", amount=0.45)]),
]


def _global_case(
    world: int, crits: Callable[[], list[PruningCriterion]], quantum: float | None
) -> None:
    reference = make_mlp(quantum=quantum)
    GlobalPruningContext(reference, crits(), strategy="streaming").prune()
    model = shard(make_mlp(quantum=quantum), world)
    GlobalPruningContext(model, crits()).prune()  # the same user call
    got = masks(model)
    x = inputs()
    out = model(x)
    report = sparsity_report(model, pruned_only=True)
    expected = sparsity_report(reference, pruned_only=True)
    assert_same_masks(got, masks(reference), "masks")
    assert torch.equal(out, reference(x)), "outputs differ"
    assert [(t.label, t.zeros, t.numel) for t in report.tensors] == [
        (t.label, t.zeros, t.numel) for t in expected.tensors
    ], "sparsity_report differs from single-process"
    for module in linears(model):  # masks are stored sharded, like the weights
        assert type(module.weight_mask).__name__ == "DTensor"


@scenario
def global_contexts(rank: int, world: int, tmp: Path) -> None:
    """Every built-in and a plugin criterion: masks, outputs, reports = single-process."""
    for _, crits in GLOBAL_CASES:
        _global_case(world, crits, quantum=None)
    for _, crits in GLOBAL_CASES[:4]:  # many ties: the tie rule across ranks
        _global_case(world, crits, quantum=0.05)
    from prunefw import _radix

    chunk, _radix.CHUNK = _radix.CHUNK, 7  # keys in chunks of 7: ties across chunks
    try:
        for _, crits in GLOBAL_CASES:
            _global_case(world, crits, quantum=0.05)
    finally:
        _radix.CHUNK = chunk


@scenario
def global_default_strategy(rank: int, world: int, tmp: Path) -> None:
    """Magnitude and percentile also equal the default strategy (global_unstructured)."""
    for crits in (
        lambda: [MagnitudeCriterion(amount=0.6)],
        lambda: [PercentileCriterion(0.2, 0.9)],
    ):
        reference = make_mlp(quantum=0.05)
        GlobalPruningContext(reference, crits()).prune()
        model = shard(make_mlp(quantum=0.05), world)
        GlobalPruningContext(model, crits()).prune()
        assert_same_masks(masks(model), masks(reference), "masks vs global_unstructured")


@scenario
def reused_random_criterion(rank: int, world: int, tmp: Path) -> None:
    """One seeded random criterion object pruning twice: its generator advances as in process."""
    reference, model = make_mlp(), shard(make_mlp(), world)
    crits = [RandomCriterion(0.3, seed=8), RandomCriterion(0.3, seed=8)]
    for m, crit in zip((reference, model), crits, strict=True):
        strategy = {"strategy": "streaming"} if m is reference else {}
        GlobalPruningContext(m, [crit], **strategy).prune()
        GlobalPruningContext(m, [crit], **strategy).prune()
        LayerPruningContext({m[2]: crit}).prune()
    assert_same_masks(masks(model), masks(reference), "masks")


@scenario
def hsdp(rank: int, world: int, tmp: Path) -> None:
    """HSDP (2-D mesh, Replicate x Shard(0)): replicas count once; masks, outputs, training."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    for shape in ((world, 1), (1, world)):
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=("replicate", "shard"))
        reference, model = make_mlp(quantum=0.05), make_mlp(quantum=0.05)
        for module in linears(model):
            fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        from torch.distributed.tensor import Replicate, Shard

        assert all(m.weight.placements == (Replicate(), Shard(0)) for m in linears(model))
        crits = [MagnitudeCriterion(amount=0.4), PercentileCriterion(0.1, 0.9)]
        GlobalPruningContext(reference, crits, strategy="streaming").prune()
        crits = [MagnitudeCriterion(amount=0.4), PercentileCriterion(0.1, 0.9)]
        GlobalPruningContext(model, crits).prune()
        LayerPruningContext({reference[0]: RandomCriterion(0.2, seed=1)}).prune()
        LayerPruningContext({model[0]: RandomCriterion(0.2, seed=1)}).prune()
        x = inputs()
        model(x).sum().backward()  # the mask gather in backward, on a 2-D mesh
        got, out = masks(model), model(x)
        report = sparsity_report(model, pruned_only=True).zeros
        assert_same_masks(got, masks(reference), f"HSDP {shape} masks")
        assert torch.equal(out, reference(x)), f"HSDP {shape} outputs differ"
        assert report == sparsity_report(reference, pruned_only=True).zeros


@scenario
def unseeded_random(rank: int, world: int, tmp: Path) -> None:
    """Unseeded random criteria: rank 0's generator, so one mask everywhere."""
    model = shard(make_mlp(), world)
    crit = RandomCriterion(0.5)
    GlobalPruningContext(model, [crit]).prune()
    LayerPruningContext({model[2]: RandomCriterion(0.3)}).prune()
    got = masks(model)
    assert all_equal_across_ranks([m for m in got if m is not None])


@scenario
def layer_contexts(rank: int, world: int, tmp: Path) -> None:
    """LayerPruningContext: built-ins (rank-selection and gather paths) and the nm plugin."""

    def plan(m: nn.Module) -> dict[Any, Any]:
        return {
            m[0]: [MagnitudeCriterion(amount=0.5), RandomCriterion(0.3, seed=5)],
            "2": PercentileCriterion(0.2, 0.9),
            m[4]: [prunefw.criterion("nm", n=2, m=4), MagnitudeCriterion(min_threshold=0.05)],
        }

    reference = make_mlp(quantum=0.05)
    model = shard(make_mlp(quantum=0.05), world)
    LayerPruningContext(plan(reference), model=reference).prune()
    LayerPruningContext(plan(model), model=model).prune()
    nm = {"0": prunefw.criterion("nm", n=1, m=4)}  # a second round, on pruned tensors
    LayerPruningContext(nm, model=reference).prune()
    LayerPruningContext(nm, model=model).prune()
    x = inputs()
    got, out = masks(model), model(x)
    assert_same_masks(got, masks(reference), "layer masks")
    assert torch.equal(out, reference(x)), "outputs differ"


@scenario
def training(rank: int, world: int, tmp: Path) -> None:
    """Training continues: masked values all-gathered, masked gradients, zeros stay zero."""
    reference = make_mlp()
    model = shard(make_mlp(), world)
    for m in (reference, model):
        GlobalPruningContext(m, [MagnitudeCriterion(amount=0.6)]).prune()
    optimizers = [
        torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.1) for m in (reference, model)
    ]
    x = inputs(batch=8)
    for _ in range(3):
        for m, opt in zip((reference, model), optimizers, strict=True):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
        for module in linears(model):  # gradients of pruned entries are zero
            grad = module.weight_orig.grad.to_local()
            assert not bool((grad * (1 - module.weight_mask.to_local())).any())
        for opt in optimizers:
            opt.step()
    for module in linears(model):  # the stored shards FSDP all-gathers are masked
        values = module.weight_orig.to_local()
        assert not bool((values * (1 - module.weight_mask.to_local())).any())
    # Prune again after training (a gradual step), then compare everything.
    for m in (reference, model):
        GlobalPruningContext(m, [MagnitudeCriterion(amount=0.25)]).prune()
    got, out = masks(model), model(x)
    report = sparsity_report(model, pruned_only=True)
    assert_same_masks(got, masks(reference), "masks after training")
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-6)
    assert report.zeros == sparsity_report(reference, pruned_only=True).zeros


@scenario
def permanent(rank: int, world: int, tmp: Path) -> None:
    """make_permanent: plain sharded Parameters again, FSDP keeps training them."""
    reference = make_mlp()
    model = shard(make_mlp(), world)
    for m in (reference, model):
        GlobalPruningContext(m, [PercentileCriterion(0.3, 0.9)]).prune()
        make_permanent(m)
    x = inputs()
    out = model(x)
    assert sorted(model.state_dict()) == sorted(reference.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert not torch.nn.utils.prune.is_pruned(model)
    assert torch.equal(out, reference(x))
    weights = [full(m.weight) for m in linears(model)]
    for got, expected in zip(weights, [m.weight for m in linears(reference)], strict=True):
        assert torch.equal(got, expected.detach())
    model(x).sum().backward()  # FSDP still owns the (renamed back) parameters
    torch.optim.SGD(model.parameters(), lr=0.1).step()


@scenario
def rollback(rank: int, world: int, tmp: Path) -> None:
    """A rank that raises mid-prune: every rank raises and every model is unchanged."""
    from prunefw.distributed import DistributedPruningError

    model = shard(make_mlp(), world)
    GlobalPruningContext(model, [MagnitudeCriterion(amount=0.2)]).prune()  # already pruned once
    x = inputs()
    before, out_before = local_state(model), model(x)
    failing = [
        lambda: GlobalPruningContext(
            model, [MagnitudeCriterion(amount=0.3), FailsOnLastRank(amount=0.5)]
        ),
        lambda: LayerPruningContext(
            {model[0]: MagnitudeCriterion(amount=0.5), model[2]: FailsOnLastRank(amount=0.5)}
        ),
    ]
    errors = []
    for make in failing:
        try:
            make().prune()
        except DistributedPruningError as exc:
            errors.append(("remote", str(exc)))
        except RuntimeError as exc:
            errors.append(("own", str(exc)))
        else:
            errors.append(("none", ""))
    # Ranks that called prune() differently are refused, before anything changes.
    amount = 0.1 if rank == 0 else 0.2
    try:
        GlobalPruningContext(model, [MagnitudeCriterion(amount=amount)]).prune()
    except DistributedPruningError as exc:
        errors.append(("plan", str(exc)))
    else:
        errors.append(("none", ""))
    after, out_after = local_state(model), model(x)
    last = rank == world - 1
    for kind, text in errors[:2]:
        assert kind == ("own" if last else "remote"), (kind, text)
        assert f"boom on rank {world - 1}" in text
    assert errors[2][0] == "plan" and "different plans" in errors[2][1]
    assert after == before, "the model changed"
    assert torch.equal(out_after, out_before)


@scenario
def ddp(rank: int, world: int, tmp: Path) -> None:
    """DDP: identical masks on every rank (unseeded random too), GradualPruner, DCP, rollback."""
    from torch.nn.parallel import DistributedDataParallel

    from prunefw.distributed import DistributedPruningError, save_pruned_checkpoint

    reference = make_mlp()
    GlobalPruningContext(reference, [MagnitudeCriterion(amount=0.5)]).prune()
    model = DistributedDataParallel(make_mlp())
    GlobalPruningContext(model, [MagnitudeCriterion(amount=0.5)]).prune()
    assert_same_masks(masks(model), masks(reference), "DDP magnitude masks")
    GlobalPruningContext(model, [RandomCriterion(0.3)]).prune()  # unseeded
    assert all_equal_across_ranks([m for m in masks(model) if m is not None]), "random masks differ"
    before = local_state(model)
    try:
        GlobalPruningContext(model, [FailsOnLastRank(amount=0.5)]).prune()
    except (DistributedPruningError, RuntimeError) as exc:
        raised: BaseException | None = exc
    else:
        raised = None
    assert isinstance(raised, RuntimeError if rank == world - 1 else DistributedPruningError)
    assert local_state(model) == before, "DDP model changed after a failed prune"

    # Gradual pruning while training on different data per rank.
    model = DistributedDataParallel(make_mlp(seed=1))
    pruner = GradualPruner(
        lambda fraction: GlobalPruningContext(model, [RandomCriterion(fraction)]),
        final_sparsity=0.8,
        end_step=4,
        frequency=2,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        model(inputs(seed=100 + rank)).pow(2).mean().backward()
        optimizer.step()
        pruner.step()
    assert all_equal_across_ranks([m for m in masks(model) if m is not None]), (
        "gradual masks differ"
    )
    assert abs(pruner.sparsity() - 0.8) < 1e-3
    assert all_equal_across_ranks([p.detach() for p in model.parameters()]), "weights differ"
    save_pruned_checkpoint(
        model, str(tmp / f"ddp-ckpt-{world}"), extra={"pruner": pruner.state_dict()}
    )
    if rank == 0:
        reference_state = {k: v.clone() for k, v in model.module.state_dict().items()}
        torch.save(
            {"masks": masks(model), "output": model.module(inputs()), "state": reference_state},
            tmp / f"ddp-ref-{world}.pt",
        )


@scenario
def checkpoint(rank: int, world: int, tmp: Path) -> None:
    """DCP: save sharded, load into a fresh sharded model; keep a reference for one process."""
    from prunefw.distributed import load_pruned_checkpoint, save_pruned_checkpoint

    model = shard(make_mlp(), world)
    GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.5), RandomCriterion(0.2, seed=4)]
    ).prune()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(inputs()).sum().backward()
    optimizer.step()
    path = tmp / f"fsdp-ckpt-{world}"
    save_pruned_checkpoint(model, str(path), extra={"state": {"step": 7}})
    x = inputs()
    expected_masks, expected_out = masks(model), model(x)
    fresh = shard(make_mlp(seed=9), world)
    extra = load_pruned_checkpoint(fresh, str(path), extra={"state": {"step": 0}})
    got_masks, got_out = masks(fresh), fresh(x)
    assert extra == {"state": {"step": 7}}
    assert_same_masks(got_masks, expected_masks, "masks after load")
    assert torch.equal(got_out, expected_out)
    if rank == 0:
        torch.save({"masks": expected_masks, "output": expected_out}, tmp / f"fsdp-ref-{world}.pt")
    other = tmp / "fsdp-ckpt-2"
    if world != 2 and other.exists():  # written by the 2-rank run: reshard on load
        resharded = shard(make_mlp(seed=9), world)
        load_pruned_checkpoint(resharded, str(other), extra={})
        got = masks(resharded)
        assert_same_masks(got, torch.load(tmp / "fsdp-ref-2.pt")["masks"], "2 -> 3 ranks")


@scenario
def gradual_fsdp(rank: int, world: int, tmp: Path) -> None:
    """GradualPruner on a sharded model (see the xfail test)."""
    reference = make_mlp()
    model = shard(make_mlp(), world)
    pruners = [
        GradualPruner(
            lambda fraction, m=m: GlobalPruningContext(m, [MagnitudeCriterion(amount=fraction)]),
            final_sparsity=0.7,
            end_step=2,
            frequency=1,
        )
        for m in (reference, model)
    ]
    for _ in range(3):
        for pruner in pruners:
            pruner.step()
    assert_same_masks(masks(model), masks(reference), "gradual masks")


DOCS = Path(__file__).resolve().parent.parent / "docs" / "distributed.md"


def doc_blocks() -> list[str]:
    """The python blocks of docs/distributed.md: FSDP workflow, single-process load, DDP."""
    import re

    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)


@scenario
def docs_examples(rank: int, world: int, tmp: Path) -> None:
    """docs/distributed.md's FSDP and DDP examples run as written, on every rank."""
    fsdp, _, ddp = doc_blocks()
    here = os.getcwd()
    (tmp / "docs").mkdir(exist_ok=True)
    os.chdir(tmp / "docs")
    try:
        exec(compile(fsdp, "docs/distributed.md (FSDP)", "exec"), {})
        exec(compile(ddp, "docs/distributed.md (DDP)", "exec"), {})
    finally:
        os.chdir(here)


# -- launcher ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, names: list[str], tmp: str, results: Any) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ.setdefault("PRUNEFW_DISABLED_PLUGINS", "")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        for name in names:
            start = time.perf_counter()
            try:
                SCENARIOS[name](rank, world, Path(tmp))
                error = None
            except BaseException:
                error = traceback.format_exc()
            results.put((name, rank, error, time.perf_counter() - start))
    finally:
        dist.destroy_process_group()


def launch(world: int, names: list[str], tmp: Path, timeout: float) -> dict[str, dict[int, Any]]:
    """Run ``names`` on ``world`` ranks; ``{name: {rank: None | traceback}}`` (and timings).

    Ranks that do not report within ``timeout`` seconds are killed and their missing
    scenarios reported as timed out.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "prunefw", "torch.distributed.fsdp"])
    results = context.Queue()
    port = _free_port()
    processes = [
        context.Process(
            target=_worker, args=(r, world, port, names, str(tmp), results), daemon=True
        )
        for r in range(world)
    ]
    for process in processes:
        process.start()
    report: dict[str, dict[int, Any]] = {name: {} for name in names}
    timings: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    expected = world * len(names)
    received = 0
    while received < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            name, rank, error, seconds = results.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                break
            continue
        report[name][rank] = error
        timings[name] = max(timings.get(name, 0.0), seconds)
        received += 1
    for process in processes:
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    for name in names:
        for rank in range(world):
            report[name].setdefault(rank, f"rank {rank} did not report (timed out or crashed)")
    report["_timings"] = dict(timings)  # type: ignore[assignment]
    return report
