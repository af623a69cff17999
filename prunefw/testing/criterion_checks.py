"""The contract checks on what a criterion decides: its name, its masks, and their repeatability.

* ``registered``: a plugin registers the class under its valid, unique name;
* ``mask_shape_and_values``: ``compute_mask`` returns a bool or 0/1 mask of the
  scores' shape without modifying its inputs (whole channels for structured ones);
* ``never_unprunes``: pruning on top of earlier masks never revives an entry;
* ``deterministic``: two criteria from ``make_criterion()`` prune two equal models
  identically, whatever the global RNGs.

Each check takes a :class:`~prunefw.testing.subject.CriterionUnderTest` and raises
:class:`~prunefw.testing.ContractFailure` if the criterion breaks the contract.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from prunefw.calibration import calibrate
from prunefw.contexts.base import importance_scores
from prunefw.criteria.base import PruningCriterion
from prunefw.criteria.random import RandomCriterion
from prunefw.errors import UnknownCriterionError
from prunefw.plugin_manager import DISABLED_PLUGINS_ENV, PluginManager
from prunefw.registry import CRITERION_NAME_PATTERN, CriterionRegistry
from prunefw.reparametrization import mask_name, mask_of
from prunefw.targets import PruningTarget
from prunefw.testing.defaults import MODEL_SEED
from prunefw.testing.failure import ContractFailure, listed, requiring
from prunefw.testing.snapshot import BitPattern, same_bits
from prunefw.testing.subject import CriterionUnderTest, seeded_rngs, shadowed

__all__ = [
    "check_deterministic",
    "check_mask_shape_and_values",
    "check_never_unprunes",
    "check_registered",
]

#: The seeds of the global RNGs for the two prunings the ``deterministic`` check compares.
_DETERMINISM_SEEDS = (1, 2)
#: The kit's own earlier pruning in ``never_unprunes``: a seeded random 25%.
_PRIOR_RATIO = 0.25
_PRIOR_SEED = 1234


def check_registered(s: CriterionUnderTest) -> None:
    """A plugin registers the class through the hook under its valid, unique name."""
    cls = s.criterion_class
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not CRITERION_NAME_PATTERN.fullmatch(name):
        raise ContractFailure(
            f"{s.label}.name must be a valid criterion name (lowercase letters, digits, "
            f"'_', '-' and '.', starting with a letter); it is {name!r}"
        )
    if s.plugin is None:
        how = "the plugin manager (entry points of the 'prunefw' group loaded)"
        with requiring(f"{how} must load the installed plugins"):
            pm = PluginManager(autoload=True)
    else:
        how = "a fresh PluginManager(autoload=False) with the given plugin"
        pm = PluginManager(autoload=False)
        with requiring(f"the given plugin {s.plugin!r} must register on {how}"):
            pm.register(s.plugin)
    requirement = (
        f"{s.label} must be registered through the prunefw_register_criteria hook under "
        f"its unique name {name!r}"
    )
    with requiring(f"{requirement}; building the registry from {how}"):
        registry = CriterionRegistry.from_plugin_manager(pm)
    try:
        entry = registry.entry(name)
    except UnknownCriterionError:
        blocked = os.environ.get(DISABLED_PLUGINS_ENV, "").strip()
        hint = (
            "install the plugin's distribution (e.g. pip install -e .), or set plugin = "
            "<your plugin module> to check an in-process plugin"
            if s.plugin is None
            else "does the plugin's prunefw_register_criteria return the class?"
        )
        if blocked:
            hint += f"; note {DISABLED_PLUGINS_ENV}={blocked!r} blocks entry points"
        raise ContractFailure(
            f"{requirement}; no plugin registers {name!r} on {how} (registered: "
            f"{', '.join(registry.names())}): {hint}"
        ) from None
    if entry.cls is not cls:
        raise ContractFailure(
            f"{requirement}; {name!r} is registered to {entry.cls.__module__}."
            f"{entry.cls.__qualname__} (by {entry.plugin.origin}), not to "
            f"{cls.__module__}.{cls.__qualname__}"
        )


def _scores(crit: PruningCriterion, target: PruningTarget) -> torch.Tensor:
    """The scores the adapter hands to ``compute_mask`` for an unpruned tensor."""
    scores = importance_scores(crit, target)
    weights = getattr(target.module, target.name).detach()
    scores = weights.abs() if scores is None else scores
    return scores.reshape(-1) if crit.PRUNING_TYPE == "unstructured" else scores


def check_mask_shape_and_values(s: CriterionUnderTest) -> None:
    """``compute_mask`` returns a bool or 0/1 mask of the scores' shape, inputs untouched."""
    model = s.model()
    targets = s.targets(model)
    batches = s.batches(model)
    crit = s.criterion()
    if crit.requires_calibration:
        with requiring("calibration (reset_calibration, then observe per forward) must run"):
            calibrate(model, [(crit, targets)], batches)
    structured = crit.PRUNING_TYPE == "structured"
    dim = getattr(crit, "dim", None)
    if structured and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise ContractFailure(
            f"a 'structured' criterion must have an int attribute dim (the channel "
            f"dimension torch's PruningContainer slices); {crit!r} has dim={dim!r}"
        )
    for target in targets:
        with requiring(f"importance_scores must return None or scores for {target.label}"):
            scores = _scores(crit, target)
        default_mask = torch.ones_like(scores)
        saved_scores, saved_mask = scores.clone(), default_mask.clone()
        shape = tuple(scores.shape)
        with requiring(f"compute_mask must return a mask for {target.label}"):
            mask = crit.compute_mask(scores, default_mask)
        requirement = (
            f"compute_mask(scores, default_mask) must return a bool or 0/1 torch.Tensor of "
            f"the scores' shape {shape} ({crit.PRUNING_TYPE} criterion, {target.label})"
        )
        if not isinstance(mask, torch.Tensor):
            raise ContractFailure(f"{requirement}; it returned {type(mask).__name__}")
        if tuple(mask.shape) != shape:
            raise ContractFailure(f"{requirement}; it returned a mask of shape {tuple(mask.shape)}")
        if mask.is_complex():
            raise ContractFailure(f"{requirement}; it returned a {mask.dtype} mask")
        if mask.dtype != torch.bool:
            bad = ~((mask == 0) | (mask == 1))
            if bool(bad.any()):
                examples = [repr(v) for v in mask[bad].reshape(-1)[:3].tolist()]
                raise ContractFailure(
                    f"{requirement}; it returned a {mask.dtype} mask with {int(bad.sum())} "
                    f"entries that are neither 0 nor 1 (e.g. {', '.join(examples)})"
                )
        changed = [
            argument
            for argument, now, saved in (
                ("scores", scores, saved_scores),
                ("default_mask", default_mask, saved_mask),
            )
            if not same_bits(now, saved)
        ]
        if changed:
            raise ContractFailure(
                f"compute_mask must not modify its arguments in place (torch may hand it "
                f"views of the module's mask); it changed {' and '.join(changed)} for "
                f"{target.label}"
            )
        if structured:
            assert isinstance(dim, int)
            if not -len(shape) <= dim < len(shape):
                raise ContractFailure(
                    f"a 'structured' criterion's dim must index the pruned tensor; "
                    f"{crit!r} has dim={dim}, {target.label} has shape {shape}"
                )
            kept = (mask != 0).movedim(dim, 0).reshape(shape[dim], -1)
            mixed = (kept.any(dim=1) & ~kept.all(dim=1)).nonzero().reshape(-1).tolist()
            if mixed:
                raise ContractFailure(
                    f"a 'structured' criterion must prune whole channels along dim={dim} "
                    f"of an unpruned tensor; on {target.label} its mask keeps part of "
                    f"channel(s) {listed([str(i) for i in mixed])}"
                )


def check_never_unprunes(s: CriterionUnderTest) -> None:
    """Pruning on top of earlier masks never revives a pruned entry."""
    model = s.model()
    targets = s.targets(model)
    batches = s.batches(model)
    prior = RandomCriterion(_PRIOR_RATIO, seed=_PRIOR_SEED)
    s.prune(
        s.layer_context(model, targets, prior),
        None,
        f"the kit's earlier pruning ({prior!r} in a layer context)",
    )
    masks = masks_of(targets)
    crit = s.criterion()
    calls: list[tuple[torch.Tensor, object]] = []  # (default_mask, returned mask)
    original = crit.compute_mask

    def recording(scores: torch.Tensor, default_mask: torch.Tensor) -> Any:
        before = default_mask.detach().clone()
        mask = original(scores, default_mask)
        calls.append((before, mask.detach().clone() if isinstance(mask, torch.Tensor) else mask))
        return mask

    for step in ("once", "again"):
        where = f"pruning {step} with {crit!r} in a layer context, on top of earlier masks"
        with shadowed(crit, "compute_mask", recording):
            s.prune(s.layer_context(model, targets, crit), batches, where)
        for default_mask, mask in calls:
            if not isinstance(mask, torch.Tensor) or mask.shape != default_mask.shape:
                continue  # the adapter refuses it; mask_shape_and_values says why
            revived = int(((default_mask == 0) & (mask != 0)).sum())
            if revived:
                pruned = int((default_mask == 0).sum())
                raise ContractFailure(
                    f"compute_mask must never keep an entry that default_mask marks as "
                    f"pruned (combine with it, e.g. mask & (default_mask != 0)): torch's "
                    f"PruningContainer takes the mask of a {crit.PRUNING_TYPE!r} method as "
                    f"it is. When {where}, it returned keep for {revived} of the {pruned} "
                    f"entries its default_mask of shape {tuple(default_mask.shape)} marks "
                    "as pruned"
                )
        calls.clear()
        new_masks = masks_of(targets)
        for label, mask in new_masks.items():
            revived = int(((masks[label] == 0) & (mask != 0)).sum())
            if revived:
                raise ContractFailure(
                    f"an entry pruned earlier must stay pruned; after {where}, {revived} "
                    f"pruned entries of {label} are kept again"
                )
        masks = new_masks


def masks_of(targets: Sequence[PruningTarget]) -> dict[str, torch.Tensor]:
    """Copy the mask of every (pruned) target, by label.

    Raises:
        ContractFailure: A target has no mask buffer.
    """
    masks = {}
    for t in targets:
        mask = mask_of(t.module, t.name)
        if mask is None:
            raise ContractFailure(
                f"after pruning, {t.label} must have a mask buffer {mask_name(t.name)}; it has "
                f"buffers {sorted(t.module._buffers)}"
            )
        masks[t.label] = mask.detach().clone()
    return masks


def check_deterministic(s: CriterionUnderTest) -> None:
    """Seeded criteria prune equal models identically, whatever the global RNGs."""

    def run(seed: int) -> tuple[dict[str, BitPattern], dict[str, dict[str, torch.Tensor]]]:
        masks = {}
        with seeded_rngs(seed):
            model = s.model()
            weights = {key: BitPattern(value) for key, value in model.state_dict().items()}
            targets = s.targets(model)
            crit = s.criterion()
            s.prune(s.layer_context(model, targets, crit), s.batches(model), "the layer context")
            masks["the layer context"] = masks_of(targets)
            if s.unstructured:
                model = s.model()
                targets = s.targets(model)
                crit = s.criterion()
                s.prune(s.global_context(model, crit), s.batches(model), "the global context")
                masks["the global context"] = masks_of(targets)
        return weights, masks

    first_model, first = run(_DETERMINISM_SEEDS[0])
    second_model, second = run(_DETERMINISM_SEEDS[1])
    if first_model != second_model:
        differ = [key for key in first_model if first_model[key] != second_model.get(key)]
        raise ContractFailure(
            "make_model() must build the same model every time (the kit calls it after "
            f"torch.manual_seed({MODEL_SEED})); two calls built models whose state_dicts "
            f"differ: {listed(differ or sorted(set(second_model) - set(first_model)))}"
        )
    for where, masks in first.items():
        differ = [
            f"{label} ({int((masks[label] != second[where][label]).sum())} entries)"
            for label in masks
            if not torch.equal(masks[label], second[where][label])
        ]
        if differ:
            raise ContractFailure(
                "two criteria from make_criterion() must prune two equal models "
                "identically (make_criterion() must return a new, seeded instance each "
                "time, which must not depend on the global RNGs); in "
                f"{where}, the masks of {listed(differ)} differ between two runs with "
                "different global RNG states"
            )
