"""What ``prune()`` does under torch.distributed: the sharded and the replicated flows."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import torch
from torch import nn

from prunefw._rollback import rollback_on_error
from prunefw.calibration import Forward, calibrate, calibration_batches
from prunefw.contexts.base import PruningContext, PruningStep, reporting_batches
from prunefw.contexts.layer_context import layer_mask
from prunefw.criteria.adapter import mask_problem
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import (
    InvalidArgumentError,
    InvalidMaskError,
    TargetError,
    WholeTensorPrunedWarning,
    add_note,
)
from prunefw.huggingface import install_guards
from prunefw.progress import ProgressCallback, ProgressEvent
from prunefw.reparametrization import install_deepcopy_support, mask_of, refresh_pruned_tensor
from prunefw.targets import PruningTarget, check_finite

from ._collectives import Collectives, DistributedPruningError
from ._fsdp import fsdp_unit_of
from ._select import global_keep
from ._shards import (
    LocalShard,
    apply_local_mask,
    commit,
    is_dtensor,
    local_shard,
    stored_tensor,
)

__all__ = ["distributed_prune_for", "prune_replicated", "prune_sharded"]

Flow = Callable[[PruningContext, Any, Any, Any], None]


def _is_replicated_model(model: nn.Module | None) -> bool:
    if model is None:
        return False
    from torch.nn.parallel import DistributedDataParallel

    return any(isinstance(module, DistributedDataParallel) for module in model.modules())


def distributed_prune_for(context: PruningContext) -> Flow | None:
    """The flow for ``context`` under an initialised process group, or ``None``.

    * Some target is a DTensor (FSDP2 ``fully_shard``, or ``distribute_tensor``):
      :func:`prune_sharded`.
    * Else, the model contains a ``DistributedDataParallel`` and there are several
      ranks: :func:`prune_replicated`.
    * Else ``None``: prune in process (each rank on its own, no collective).
    """
    if any(is_dtensor(stored_tensor(t.module, t.name)) for t in context.targets):
        return prune_sharded
    if torch.distributed.get_world_size() > 1 and _is_replicated_model(context.model):
        return prune_replicated
    return None


# -- shared by both flows ---------------------------------------------------------------


def _plan_fingerprint(context: PruningContext) -> str:
    parts = []
    for step in context.steps:
        tensors = [
            (t.label, tuple(stored_tensor(t.module, t.name).shape), str(t.module.__class__))
            for t in step.targets
        ]
        parts.append(repr((step.scope, repr(step.criterion), tensors)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _check_same_plan(coll: Collectives, context: PruningContext) -> None:
    """Refuse ranks that called ``prune()`` with different plans (before touching anything)."""
    gathered = coll.all_gather_object((_plan_fingerprint(context), repr(context)[:300]))
    fingerprints = cast(list[tuple[str, str]], gathered)
    if len({fp for fp, _ in fingerprints}) > 1:
        listing = "; ".join(f"rank {r}: {text}" for r, (_, text) in enumerate(fingerprints))
        raise DistributedPruningError(
            "the ranks called prune() with different plans (criteria, amounts or "
            f"targets); every rank must prune the same way: {listing}"
        )


def _generators(criteria: Iterable[PruningCriterion]) -> Iterator[torch.Generator]:
    for crit in criteria:
        for value in vars(crit).values():
            if isinstance(value, torch.Generator) and value.device.type == "cpu":
                yield value


def sync_generators(coll: Collectives, criteria: Iterable[PruningCriterion]) -> None:
    """Give every criterion's random generator rank 0's state (one broadcast each).

    A ``RandomCriterion`` without a seed draws its seed from the operating system,
    differently on every rank; after this, every rank draws the same keys.
    """
    for generator in _generators(criteria):
        state = generator.get_state()
        coll.broadcast(state, src=0)
        generator.set_state(state)


# -- sharded (DTensor) -------------------------------------------------------------------


def _check_target(target: PruningTarget) -> LocalShard:
    """The local checks of one target (no collective): what ``check_stored_mask`` does."""
    if target.aliases:
        raise TargetError(
            f"{target.label} is shared with {', '.join(a.label for a in target.aliases)} "
            "(tied weights); pruning tied sharded weights is not supported"
        )
    shard = local_shard(target)
    if shard.values.is_meta:
        raise TargetError(
            f"{target.label} is on the meta device (it has no values to rank): materialize "
            "the model first, e.g. model.to_empty(device='cpu') and load its weights"
        )
    if shard.mask is not None:
        problem = mask_problem(shard.mask, shard.values.shape)
        if problem is not None:
            raise InvalidMaskError(
                f"{target.label} has a mask {problem} (this rank's block); a mask is a 0/1 "
                "tensor of the weight's shape"
            )
    check_finite(target, shard.values if shard.mask is None else shard.values * shard.mask)
    return shard


def _selects(step: PruningStep, numel: int) -> bool:
    """Whether a step runs as a distributed rank selection (else: the gather path).

    Global steps always do. A layer step does for a criterion whose rank selection
    is not random: the layer context draws a random criterion's keys differently
    (from the criterion's generator over the surviving entries), and the gather
    path reproduces that exactly. The generator is restored after asking.
    """
    crit = step.criterion
    if step.scope == "global":
        return True
    if crit.PRUNING_TYPE != "unstructured" or not crit.supports_streaming():
        return False
    states = [(g, g.get_state()) for g in _generators([crit])]
    try:
        selection = crit.rank_selection(numel)
    finally:
        for generator, state in states:
            generator.set_state(state)
    return selection is not None and selection.random_seed is None


def _layer_step_gathered(coll: Collectives, crit: PruningCriterion, shard: LocalShard) -> None:
    """A layer step on a full copy of one target (every rank computes the same mask).

    The target's values (and mask) are all-gathered, the criterion sees the module
    with the full tensor in place of the DTensor, and each rank keeps its block of
    the resulting mask: exactly what the layer context gives in one process, for any
    criterion, at the cost of one full tensor at a time (as FSDP's own all-gather).
    """
    module, name = shard.target.module, shard.target.name
    stored = shard.stored
    mask = mask_of(module, name)
    values = coll_full(coll, stored)
    full_mask = None
    if mask is not None:
        full_mask = coll_full(coll, mask) if is_dtensor(mask) else mask.detach()
        values = values * full_mask.to(values.dtype)
    missing = object()
    saved = vars(module).get(name, missing)
    vars(module)[name] = values  # the criterion sees a plain, full tensor
    try:
        new = layer_mask(shard.target, crit, values, full_mask)
    finally:
        if saved is missing:
            del vars(module)[name]
        else:
            vars(module)[name] = saved
    keep = shard.block(new) != 0
    if shard.mask is not None:
        keep &= shard.mask != 0
    apply_local_mask(_without_mask(shard), keep)


def _without_mask(shard: LocalShard) -> LocalShard:
    """``shard`` with no current mask: ``keep`` already includes it."""
    return LocalShard(shard.target, shard.stored, shard.values, None, shard.offset, shard.owned)


def coll_full(coll: Collectives, tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor (a vote, then its all-gather); plain tensors as is."""
    if not is_dtensor(tensor):
        return tensor.detach()
    coll.vote()
    full = tensor.detach().full_tensor()  # type: ignore[attr-defined]
    from ._collectives import tally

    tally("all_gather", full.numel() * full.element_size() // coll.world, coll.world)
    return full


def _warn_whole_tensors_globally(coll: Collectives, context: PruningContext) -> None:
    """``_warn_whole_tensors`` with global counts (one all-reduce for all targets)."""
    flagged: list[tuple[PruningStep, PruningTarget]] = []
    for step in context.steps:
        # Threshold criteria, recognised as in process (never by asking rank_selection(),
        # which would draw from a random criterion's generator).
        if getattr(step.criterion, "min_threshold", None) is None:
            continue
        flagged.extend((step, target) for target in step.targets)
    if not flagged:
        return
    alive = torch.zeros(len(flagged), dtype=torch.int64)
    for i, (_, target) in enumerate(flagged):
        shard = local_shard(target)
        if shard.owned and shard.mask is not None:
            alive[i] = int(torch.count_nonzero(shard.mask))
        elif shard.owned:
            alive[i] = shard.values.numel()
    coll.all_reduce(alive)
    for i, (step, target) in enumerate(flagged):
        numel = stored_tensor(target.module, target.name).numel()
        if numel and not int(alive[i]) and mask_of(target.module, target.name) is not None:
            warnings.warn(
                f"{step.criterion!r} pruned all {numel} entries of {target.label}: every "
                "magnitude is below the threshold (freshly initialised weights are often "
                "small); use an amount, or a smaller threshold",
                WholeTensorPrunedWarning,
                stacklevel=4,
            )


def _reshard(targets: Iterable[PruningTarget]) -> None:
    """Put FSDP units owning the targets in their sharded state (FSDP's ``reshard()``)."""
    for target in targets:
        for name in (target.name + "_orig", target.name):
            unit = fsdp_unit_of(target.module, name)
            reshard = getattr(unit, "reshard", None)
            if callable(reshard):
                reshard()
                break


def prune_sharded(
    context: PruningContext,
    calibration_data: Iterable[Any] | None,
    forward: Forward | None,
    progress: ProgressCallback | None,
) -> None:
    """``context.prune()`` for DTensor targets (see :mod:`prunefw.distributed`)."""
    coll = Collectives()
    _check_same_plan(coll, context)
    sync_generators(coll, context.criteria)
    _reshard(context.targets)
    targets = context.targets
    modules = [module for target in targets for module in target.modules]
    steps = context.steps

    def body() -> None:
        for target in targets:
            _check_target(target)
            refresh_pruned_tensor(target.module, target.name)
        for step in steps:
            if step.scope == "global" and not step.criterion.supports_streaming():
                raise InvalidArgumentError(
                    f"{step.criterion!r} has no rank_selection(); pruning sharded (DTensor) "
                    "targets globally needs one (the global threshold is found with "
                    "collectives, without gathering the tensors); use LayerPruningContext, "
                    "or give the criterion a rank_selection()"
                )
        batches = calibration_data
        if progress is not None and batches is not None and context.requires_calibration:
            batches = reporting_batches(calibration_batches(batches), progress)
        if context.requires_calibration:
            coll.vote()  # calibration runs the model: FSDP's collectives
        calibrate(context.model, context._calibration_plan(), batches, forward)
        for done, step in enumerate(steps, start=1):
            crit = step.criterion
            label = ", ".join(t.label for t in step.targets[:4])
            try:
                shards = [local_shard(t) for t in step.targets]
                numel = sum(s.shape.numel() for s in shards)
                if _selects(step, numel):
                    for shard, keep in zip(shards, global_keep(coll, crit, shards), strict=True):
                        apply_local_mask(shard, keep)
                else:
                    _layer_step_gathered(coll, crit, shards[0])
            except Exception as exc:
                if not coll.aborted:
                    add_note(exc, f"while applying {crit!r} to {label} (sharded)")
                raise
            if progress is not None:
                progress(ProgressEvent("prune", done, len(steps), f"{crit!r} on {label}"))
        for target in targets:
            install_deepcopy_support(target.module)
        _warn_whole_tensors_globally(coll, context)

    with rollback_on_error(modules):
        coll.run(body)
    # Every rank agreed: the irreversible part (stored shards, FSDP's records).
    for target in targets:
        if is_dtensor(stored_tensor(target.module, target.name)):
            commit(target.module, target.name)
    if context.model is not None:
        install_guards(context.model)


# -- replicated (DDP) -------------------------------------------------------------------


def _mask_digest(targets: Iterable[PruningTarget]) -> torch.Tensor:
    """Per target: the pruned entries and the sum of their flat indices.

    Equal digests on every rank mean equal masks, short of a contrived coincidence.
    """
    rows = []
    for target in targets:
        mask = mask_of(target.module, target.name)
        if mask is None:
            rows.append((0, 0))
            continue
        pruned = (mask.detach().reshape(-1) == 0).nonzero().squeeze(1)
        rows.append((pruned.numel(), int(pruned.sum())))
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)


def prune_replicated(
    context: PruningContext,
    calibration_data: Iterable[Any] | None,
    forward: Forward | None,
    progress: ProgressCallback | None,
) -> None:
    """``context.prune()`` for a DDP model: every rank prunes its replica identically.

    The ranks agree on the plan, random generators take rank 0's state, every rank
    runs the in-process prune, and a digest of the masks is compared: if any rank
    failed or any mask differs, every rank rolls back.
    """
    coll = Collectives()
    _check_same_plan(coll, context)
    sync_generators(coll, context.criteria)
    targets = context.targets

    def body() -> None:
        context._prune_all(calibration_data, forward, progress, before_calibration=coll.vote)
        digest = _mask_digest(targets)
        low = coll.all_reduce(digest.clone(), op="min")
        high = coll.all_reduce(digest.clone(), op="max")
        if not torch.equal(low, high):
            differ = [
                t.label for t, a, b in zip(targets, low, high, strict=True) if not torch.equal(a, b)
            ]
            raise DistributedPruningError(
                f"the ranks computed different masks for {', '.join(differ)}: their weights "
                "differ (a DDP model's replicas stay identical; was a rank changed by hand?)"
            )

    with rollback_on_error(module for target in targets for module in target.modules):
        coll.run(body)
    if context.model is not None:
        install_guards(context.model)
