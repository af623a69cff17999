"""The contract checks on what prunefw's contexts do with a criterion.

* ``layer_context``: :class:`~prunefw.LayerPruningContext` prunes every tensor with
  torch's reparametrization, keeping the weights and adding a valid mask;
* ``global_context``: the same for :class:`~prunefw.GlobalPruningContext` (and its
  ``"streaming"`` strategy if the criterion supports it) for unstructured criteria;
  the global context refuses other ones with
  :class:`~prunefw.errors.PruningTypeError`;
* ``remove_and_make_permanent``: :func:`torch.nn.utils.prune.remove` and
  :func:`prunefw.make_permanent` work afterwards and keep the pruned values;
* ``failure_leaves_model_untouched``: if the criterion raises, the error
  propagates and the model is bit-identical to before.

Each check takes a :class:`~prunefw.testing.subject.CriterionUnderTest` and raises
:class:`~prunefw.testing.ContractFailure` if the criterion breaks the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.contexts import GlobalPruningContext, PruningContext
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import PruningTypeError
from prunefw.permanence import make_permanent
from prunefw.reparametrization import (
    mask_name,
    mask_of,
    orig_name,
    original_of,
    pruned_tensor_names,
)
from prunefw.targets import PruningTarget
from prunefw.testing.failure import (
    MAX_LISTED,
    ContractFailure,
    describe_exception,
    listed,
    requiring,
)
from prunefw.testing.snapshot import ModelSnapshot, same_bits
from prunefw.testing.subject import CriterionUnderTest, shadowed

__all__ = [
    "check_failure_leaves_model_untouched",
    "check_global_context",
    "check_layer_context",
    "check_remove_and_make_permanent",
]


def _weights(targets: Sequence[PruningTarget]) -> dict[str, torch.Tensor]:
    return {t.label: getattr(t.module, t.name).detach().clone() for t in targets}


def _check_reparametrized(
    targets: Sequence[PruningTarget], weights: Mapping[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """Check torch's reparametrization on every target; return copies of the masks."""
    masks = {}
    for t in targets:
        module, name, label = t.module, t.name, t.label
        orig = original_of(module, name)
        mask = mask_of(module, name)
        if orig is None or mask is None or name not in pruned_tensor_names(module):
            raise ContractFailure(
                f"after {where}, {label} must be pruned with torch's reparametrization "
                f"({orig_name(name)} parameter, {mask_name(name)} buffer, pruning forward "
                f"pre-hook); it has parameters {sorted(module._parameters)}, buffers "
                f"{sorted(module._buffers)}, pruning hooks for {pruned_tensor_names(module)}"
            )
        if not same_bits(orig, weights[label]):
            raise ContractFailure(
                f"{where} must not change the weights (only add a mask); {orig_name(label)} "
                "differs from the weights before pruning (does the criterion modify "
                "a tensor in place, e.g. in importance_scores?)"
            )
        if mask.shape != orig.shape or not bool(((mask == 0) | (mask == 1)).all()):
            raise ContractFailure(
                f"after {where}, {mask_name(label)} must hold 0/1 values in the shape "
                f"{tuple(orig.shape)}; it has shape {tuple(mask.shape)} and values "
                f"{sorted(set(mask.detach().reshape(-1).tolist()))[:MAX_LISTED]}"
            )
        if not torch.equal(getattr(module, name), orig * mask):
            raise ContractFailure(
                f"after {where}, {label} must equal {orig_name(name)} * {mask_name(name)}; "
                "it does not"
            )
        masks[label] = mask.detach().clone()
    return masks


def check_layer_context(s: CriterionUnderTest) -> None:
    """The layer context prunes every tensor with torch's reparametrization."""
    model = s.model()
    targets = s.targets(model)
    weights = _weights(targets)
    crit = s.criterion()
    where = f"LayerPruningContext({{each target: {crit!r}}}, model=model).prune()"
    s.prune(s.layer_context(model, targets, crit), s.batches(model), where)
    _check_reparametrized(targets, weights, where)


def check_global_context(s: CriterionUnderTest) -> None:
    """The global context prunes (unstructured) or raises ``PruningTypeError``."""
    model = s.model()
    crit = s.criterion()
    if not s.unstructured:
        _check_refused_globally(model, crit)
        return
    counts = {}
    strategies = ["global_unstructured"]
    if crit.supports_streaming():
        strategies.append("streaming")
    for strategy in strategies:
        if strategy != strategies[0]:
            model, crit = s.model(), s.criterion()
        targets = s.targets(model)
        weights = _weights(targets)
        where = f"GlobalPruningContext(model, {crit!r}, strategy={strategy!r}).prune()"
        s.prune(s.global_context(model, crit, strategy), s.batches(model), where)
        masks = _check_reparametrized(targets, weights, where)
        counts[strategy] = sum(int((mask == 0).sum()) for mask in masks.values())
    if len(set(counts.values())) > 1:
        raise ContractFailure(
            "rank_selection(n) must describe the same decision as compute_mask, so both "
            "global strategies prune the same number of entries; they pruned "
            + ", ".join(f"{count} ({strategy})" for strategy, count in counts.items())
        )


def _check_refused_globally(model: nn.Module, crit: PruningCriterion) -> None:
    """The global context refuses a non-unstructured ``crit`` and leaves ``model`` alone."""
    before = ModelSnapshot.take(model)
    requirement = (
        f"GlobalPruningContext must refuse a {crit.PRUNING_TYPE!r} criterion with "
        "prunefw.errors.PruningTypeError"
    )
    try:
        GlobalPruningContext(model, crit)
    except PruningTypeError:
        pass
    except Exception as exc:
        raise ContractFailure(f"{requirement}; it raised {describe_exception(exc)}") from exc
    else:
        raise ContractFailure(f"{requirement}; it accepted {crit!r}")
    changes = before.diff(ModelSnapshot.take(model))
    if changes:
        raise ContractFailure(
            f"{requirement} and leave the model untouched; changed: {listed(changes)}"
        )


def _check_removed(
    targets: Sequence[PruningTarget], pruned: Mapping[str, torch.Tensor], where: str
) -> None:
    """Check every target is a plain Parameter again, holding its ``pruned`` values."""
    for t in targets:
        module, name = t.module, t.name
        param = module._parameters.get(name)
        leftovers = [orig_name(name)] if original_of(module, name) is not None else []
        leftovers += [mask_name(name)] if mask_of(module, name) is not None else []
        if not isinstance(param, nn.Parameter) or leftovers or name in pruned_tensor_names(module):
            raise ContractFailure(
                f"after {where}, {t.label} must be a plain Parameter again (no "
                f"{orig_name(name)}, {mask_name(name)} or pruning hook); it is "
                f"{type(param).__name__}, leftovers {leftovers}, pruning hooks for "
                f"{pruned_tensor_names(module)}"
            )
        if not same_bits(param, pruned[t.label]):
            raise ContractFailure(
                f"after {where}, {t.label} must hold the pruned values ({orig_name(name)} * "
                f"{mask_name(name)}); it holds other values"
            )


def check_remove_and_make_permanent(s: CriterionUnderTest) -> None:
    """``prune.remove`` and ``prunefw.make_permanent`` work afterwards."""
    runs: list[tuple[str, Callable[[nn.Module], PruningContext]]] = [
        ("LayerPruningContext", lambda m: s.layer_context(m, s.targets(m), s.criterion()))
    ]
    if s.unstructured:
        runs.append(("GlobalPruningContext", lambda m: s.global_context(m, s.criterion())))
    for context, build in runs:
        for how in ("torch.nn.utils.prune.remove", "prunefw.make_permanent"):
            model = s.model()
            keys = sorted(model.state_dict())
            targets = s.targets(model)
            s.prune(build(model), s.batches(model), context)
            pruned = _weights(targets)
            where = f"{how} after pruning with {context}"
            with requiring(f"{how} must work after pruning with {context}"):
                if how == "prunefw.make_permanent":
                    make_permanent(model)
                else:
                    for t in targets:
                        prune.remove(t.module, t.name)
            _check_removed(targets, pruned, where)
            if prune.is_pruned(model) or sorted(model.state_dict()) != keys:
                raise ContractFailure(
                    f"after {where}, the model must not be pruned any more and have the "
                    f"state_dict keys of the unpruned model {keys}; it has "
                    f"{sorted(model.state_dict())}"
                )


class _ProbeError(Exception):
    """Raised by the kit inside the criterion to check the rollback."""


def check_failure_leaves_model_untouched(s: CriterionUnderTest) -> None:
    """An exception inside the criterion propagates and changes nothing."""
    for context in ("layer", "global") if s.unstructured else ("layer",):
        for method in ("compute_mask", "importance_scores"):
            _check_rollback(s, context, method)


def _calls_per_prune(ctx: PruningContext, method: str) -> int:
    """How often ``ctx.prune()`` calls ``method`` of its criteria, from its plan.

    ``importance_scores`` runs once per target of each step; ``compute_mask`` too,
    except in a global step, which ranks all its targets in one call.
    """
    return sum(
        1 if (step.scope, method) == ("global", "compute_mask") else len(step.targets)
        for step in ctx.steps
    )


def _check_rollback(s: CriterionUnderTest, context: str, method: str) -> None:
    """Make ``method`` of the criterion raise inside ``context``; check prune() rolls back."""
    model = s.model()
    targets = s.targets(model)
    batches = s.batches(model)
    crit = s.criterion()
    ctx: PruningContext
    if context == "layer":
        ctx = s.layer_context(model, targets, crit)
    else:
        ctx = s.global_context(model, crit)
    # Raise on the last call, after the other targets were pruned.
    fail_on = _calls_per_prune(ctx, method)
    probe = _ProbeError(f"raised by the contract kit in {method} (call {fail_on})")
    original = getattr(crit, method)
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == fail_on:
            raise probe
        return original(*args, **kwargs)

    requirement = (
        "when the criterion raises, prune() must re-raise that exception and leave the "
        f"model bit-identical; the kit made {crit!r}.{method} raise on call {fail_on} in "
        f"the {context} context"
    )
    before = ModelSnapshot.take(model)
    with shadowed(crit, method, failing):
        try:
            ctx.prune(calibration_data=batches)
        except _ProbeError as exc:
            if exc is not probe:
                raise ContractFailure(f"{requirement}, but another error came out") from exc
        except Exception as exc:
            when = "after" if calls >= fail_on else "before"
            raise ContractFailure(
                f"{requirement}, but prune() raised {describe_exception(exc)} instead ({when} "
                "the kit's exception)"
            ) from exc
        else:
            raise ContractFailure(
                f"{requirement}, but prune() returned normally: {method} was called only "
                f"{calls} time(s)"
            )
    changes = before.diff(ModelSnapshot.take(model))
    if changes:
        raise ContractFailure(f"{requirement}, but the model changed: {listed(changes)}")
