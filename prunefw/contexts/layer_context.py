"""Layer-wise pruning: each tensor gets its own criteria, pruned on its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.contexts.base import PruningContext, PruningStep, as_criteria, importance_scores
from prunefw.criteria.adapter import container_mask
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError, add_note
from prunefw.layouts import out_in_view
from prunefw.reparametrization import mask_of, qualified_names, release_mask_reference
from prunefw.targets import (
    PruningTarget,
    check_unique,
    is_glob,
    make_target,
    match_modules,
    resolve_module,
    share_tensors,
)

__all__ = ["LayerKey", "LayerPruningContext", "layer_mask"]

#: A key of the layer map: a module, a qualified module name, or either paired
#: with a tensor name.
LayerKey = nn.Module | str | tuple[nn.Module | str, str]


class LayerPruningContext(PruningContext):
    """Prune each listed tensor separately, with its own list of criteria.

    For each tensor, each criterion computes a mask with torch's
    ``PruningContainer`` semantics (it sees only the still-unpruned entries, or for
    ``"structured"`` criteria the surviving channels) and the mask is applied with
    :func:`torch.nn.utils.prune.custom_from_mask`, one call per criterion, in order.
    The result is torch's native reparametrization.

    Args:
        layer_criteria: Maps a key to one criterion or a list of them. A key is a
            module, a qualified module name such as ``"features.0"`` (needs
            ``model``), a glob on qualified names such as
            ``"model.layers.*.mlp.*_proj"`` (needs ``model``; every matching module
            that has the tensor, each pruned on its own with the same criteria), or
            a ``(module or name, tensor name)`` pair to prune a tensor other than
            ``tensor_name``. A Parameter shared by several modules (tied weights) is
            one tensor: list it once, and all its places get its mask.
        model: The model that qualified names refer to; also used to name modules
            in messages and reports.
        tensor_name: The tensor pruned for keys that do not name one (default
            ``"weight"``).

    Raises:
        TargetError: A name not found, a module without the tensor, or a tensor
            listed twice (e.g. as a module and as its name).
        InvalidTypeError: A key or criterion of the wrong type.
        InvalidArgumentError: An empty mapping, or an empty criteria list.

    Example:
        >>> from torch import nn
        >>> from prunefw import LayerPruningContext, MagnitudeCriterion, RandomCriterion
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> LayerPruningContext(
        ...     {"0": [MagnitudeCriterion(amount=0.5), RandomCriterion(0.5, seed=0)],
        ...      model[2]: MagnitudeCriterion(amount=4)},
        ...     model=model,
        ... ).prune()
        >>> int((model[0].weight_mask == 0).sum()), int((model[2].weight_mask == 0).sum())
        (48, 4)
    """

    def __init__(
        self,
        layer_criteria: Mapping[LayerKey, PruningCriterion | Sequence[PruningCriterion]],
        *,
        model: nn.Module | None = None,
        tensor_name: str = "weight",
    ) -> None:
        if not isinstance(layer_criteria, Mapping):
            raise InvalidTypeError(
                "LayerPruningContext expects a mapping {module or name: [criteria]}, "
                f"got {type(layer_criteria).__name__}"
            )
        if not layer_criteria:
            raise InvalidArgumentError(
                "LayerPruningContext got no layers: there is nothing to prune"
            )
        if model is not None and not isinstance(model, nn.Module):
            raise InvalidTypeError(f"model must be an nn.Module or None, got {model!r}")
        self.model = model
        names = qualified_names(model)
        plan: list[tuple[PruningTarget, tuple[PruningCriterion, ...]]] = []
        for key, criteria in layer_criteria.items():
            module, name = key if isinstance(key, tuple) and len(key) == 2 else (key, tensor_name)
            if isinstance(module, str) and is_glob(module):
                matched = match_modules(model, module, name)
                where = f"{module!r} ({len(matched)} tensors)"
                crits = as_criteria(criteria, where)
                plan.extend((make_target(m, name, names, True), crits) for m in matched)
                continue
            given_name = module if isinstance(module, str) else None
            if isinstance(module, str):
                module = resolve_module(model, module)
            target = make_target(module, name, names, model_given=model is not None)
            if given_name is not None and given_name != target.module_name:
                target = replace(target, module_name=given_name)  # registered twice
            plan.append((target, as_criteria(criteria, target.label)))
        check_unique([target for target, _ in plan], aliases=True)
        shared = share_tensors([target for target, _ in plan], model)
        self.plan = tuple(
            (target, criteria) for target, (_, criteria) in zip(shared, plan, strict=True)
        )
        self.targets = tuple(target for target, _ in self.plan)

    @property
    def steps(self) -> tuple[PruningStep, ...]:
        """One layer step per criterion of each tensor, in the order they apply."""
        return tuple(
            PruningStep(crit, (target,), "layer")
            for target, criteria in self.plan
            for crit in criteria
        )

    def _prune(self, step_done: Callable[[str], None]) -> None:
        for target, criteria in self.plan:
            for crit in criteria:
                try:
                    self._apply(target, crit)
                    step_done(f"{crit!r} on {target.label}")
                except Exception as exc:
                    add_note(
                        exc,
                        f"while applying {crit!r} to {target.label}; the model was left unchanged",
                    )
                    raise

    @staticmethod
    def _apply(target: PruningTarget, crit: PruningCriterion) -> None:
        module, name = target.module, target.name
        current = mask_of(module, name)
        mask = layer_mask(
            target,
            crit,
            getattr(module, name).detach(),
            None if current is None else current.detach(),
        )
        prune.custom_from_mask(module, name, mask)
        release_mask_reference(module, name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.label}: {list(c)!r}" for t, c in self.plan)
        return f"LayerPruningContext({{{inner}}})"


def layer_mask(
    target: PruningTarget,
    crit: PruningCriterion,
    weights: torch.Tensor,
    current: torch.Tensor | None,
) -> torch.Tensor:
    """The new mask of ``target`` after ``crit``, as the layer context computes it.

    Args:
        target: The tensor (the criterion's importance scores are asked for it).
        crit: The criterion.
        weights: The tensor's current values.
        current: Its current mask, or ``None`` if it was never pruned.

    Returns:
        The combined mask (the current one times the criterion's decision).
    """
    scores = importance_scores(crit, target)
    default_mask = torch.ones_like(weights) if current is None else current
    method = type(crit).PruningMethod(crit, magnitude=scores is None)
    # Criteria that see the tensor's shape see linear-like weights as (out, in).
    layout = target.layout if crit.PRUNING_TYPE != "unstructured" else None
    return out_in_view(
        container_mask(
            method,
            out_in_view(weights if scores is None else scores, layout),
            out_in_view(default_mask, layout),
            target.name,
        ),
        layout,
    )
