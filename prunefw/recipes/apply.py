"""Applying a recipe: at once (:func:`apply_recipe`) or gradually (:func:`gradual_pruner`).

Both resolve the recipe against the model first (every check runs before anything
changes), then build the contexts: the ``[global]`` section as a
:class:`~prunefw.GlobalPruningContext`, the ``[[layer]]`` rules as
:class:`~prunefw.LayerPruningContext` objects. A :class:`Tracker` reports progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from typing import Any, Protocol, TypeVar

from torch import nn

from prunefw._rollback import rollback_on_error
from prunefw.calibration import Forward
from prunefw.contexts import GlobalPruningContext, LayerPruningContext, PruningContext
from prunefw.contexts.layer_context import LayerKey
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidTypeError, add_note
from prunefw.recipes.messages import recipe_error
from prunefw.recipes.schema import CriterionSpec, LayerRule, Recipe
from prunefw.registry import default_registry
from prunefw.schedule import GradualPruner
from prunefw.sequential import prune_sequential
from prunefw.targets import PruningTarget

__all__ = ["Tracker", "apply_recipe", "gradual_pruner"]

_T = TypeVar("_T")


class Tracker(Protocol):
    """Wraps an iterable to report progress (e.g. a progress bar); must yield every item."""

    def __call__(
        self, items: Iterable[_T], description: str, total: int | None = None
    ) -> Iterable[_T]:
        """Yield ``items``, reporting progress under ``description``.

        Args:
            items: What is being worked through (contexts, calibration batches).
            description: What the work is: ``"pruning"`` or ``"calibration"``.
            total: The number of items, if known.

        Returns:
            An iterable of the same items, in order.
        """
        ...  # pragma: no cover


def _no_progress(items: Iterable[_T], description: str, total: int | None = None) -> Iterable[_T]:
    return items


def _reusable(batches: Iterable[Any]) -> Iterable[Any]:
    """Batches that can be iterated more than once (a one-shot iterator becomes a list)."""
    return list(batches) if iter(batches) is batches else batches


def apply_recipe(
    model: nn.Module,
    recipe: Recipe,
    *,
    calibration_data: Iterable[Any] | None = None,
    forward: Forward | None = None,
    track: Tracker | None = None,
    sequential: bool = False,
) -> list[PruningContext]:
    """Prune ``model`` as ``recipe`` says, all-or-nothing.

    Builds every context first (so every check runs before anything changes), then
    prunes: the ``[global]`` section as one
    :class:`~prunefw.GlobalPruningContext`, then the layer rules. Layer rules run
    as one :class:`~prunefw.LayerPruningContext` per tensor (so progress can be
    shown tensor by tensor), or as one context for all their tensors if a
    criterion needs calibration (so the batches run through the model once per
    context, not once per tensor). The masks are the same either way. If anything
    fails, every module is restored and the error propagates.

    Args:
        model: The model to prune.
        recipe: A validated recipe.
        calibration_data: Batches for criteria with ``requires_calibration`` (see
            :mod:`prunefw.calibration`); a one-shot iterator is read into a list
            so that several contexts can use it.
        forward: How to call the model on one batch (see
            :meth:`~prunefw.PruningContext.prune`).
        track: Progress reporting: wraps the contexts and the calibration batches
            (see :class:`Tracker`); default: none.
        sequential: Calibrate the layer rules block by block
            (:func:`~prunefw.sequential.prune_sequential`: each decoder layer on the
            outputs of the already-pruned layers before it, one layer's statistics
            at a time) instead of running the whole model once. Only the context
            whose criteria need calibration is affected; its targets must lie in
            the model's blocks (e.g. ``model.layers``).

    Returns:
        The contexts that were applied, in order (record them with
        :meth:`prunefw.history.PruningHistory.from_contexts`).

    Raises:
        RecipeError: The recipe does not fit the model (see
            :meth:`~prunefw.recipes.Recipe.resolve`), has a ``[schedule]``, or a
            criterion needs calibration data and none was given.
        InvalidTypeError: ``recipe`` is not a :class:`~prunefw.recipes.Recipe`.
        PrunefwError: A context or criterion refused the model (the model is
            unchanged).
    """
    if not isinstance(recipe, Recipe):
        raise InvalidTypeError(f"apply_recipe() expects a Recipe, got {recipe!r}")
    if recipe.schedule is not None:
        raise recipe_error(
            recipe.source,
            "schedule",
            "the recipe prunes gradually during training ([schedule]); apply_recipe prunes at once",
            "build the pruner with prunefw.recipes.gradual_pruner(model, recipe) and call its "
            "step() from the training loop (docs/gradual.md), or remove [schedule] and give "
            "the criterion its amount to prune at once",
        )
    track = track or _no_progress
    registry = recipe.registry or default_registry()
    resolved = recipe.resolve(model)
    contexts: list[tuple[PruningContext, str]] = []
    if recipe.global_section is not None:
        criteria = [spec.build(registry) for spec in recipe.global_section.criteria]
        pairs = [(target.module, target.name) for target in resolved.global_targets]
        global_context = GlobalPruningContext(
            model, criteria, parameters=pairs, strategy=recipe.global_section.strategy
        )
        contexts.append((global_context, "global"))
    layer_items: list[tuple[LayerRule, PruningTarget, tuple[PruningCriterion, ...]]] = []
    for rule, targets in resolved.layer_targets:
        rule_criteria = tuple(spec.build(registry) for spec in rule.criteria)
        layer_items.extend((rule, target, rule_criteria) for target in targets)
    if any(crit.requires_calibration for _, _, crits in layer_items for crit in crits):
        mapping: dict[LayerKey, Sequence[PruningCriterion]] = {
            (target.module, target.name): crits for _, target, crits in layer_items
        }
        contexts.append((LayerPruningContext(mapping, model=model), "layer rules"))
    else:
        for rule, target, crits in layer_items:
            one: dict[LayerKey, Sequence[PruningCriterion]] = {(target.module, target.name): crits}
            contexts.append((LayerPruningContext(one, model=model), rule.label))

    needing = [
        (where, spec)
        for where, spec in recipe.criteria()
        if registry.get(spec.name).requires_calibration
    ]
    if needing and calibration_data is None:
        where, spec = needing[0]
        raise recipe_error(
            recipe.source,
            where,
            f"criterion {spec.name!r} needs calibration data (activations of the model)",
            "pass calibration_data= to apply_recipe (command line: prunefw prune "
            "--calibration FILE)",
        )
    batches = None if calibration_data is None else _reusable(calibration_data)
    modules = [target.module for ctx, _ in contexts for target in ctx.targets]
    with rollback_on_error(modules):
        for ctx, where in track(list(contexts), "pruning", len(contexts)):
            data = None
            if batches is not None and ctx.requires_calibration:
                total = len(batches) if isinstance(batches, Sized) else None
                data = track(batches, "calibration", total)
            try:
                if sequential and data is not None:
                    prune_sequential(ctx, data, forward=forward)
                else:
                    ctx.prune(data, forward=forward)
            except Exception as exc:
                add_note(exc, f"in {recipe.source} [{where}]")
                raise
    return [ctx for ctx, _ in contexts]


def gradual_pruner(model: nn.Module, recipe: Recipe) -> GradualPruner:
    """Return the :class:`~prunefw.GradualPruner` a scheduled recipe describes for ``model``.

    The recipe's ``[schedule]`` gives the pruner's settings; its ``[global]`` section
    (one criterion: all selected tensors follow the curve together, through
    :class:`~prunefw.GlobalPruningContext`) or its ``[[layer]]`` rules (one criterion
    each: every matched tensor follows the curve on its own, ``per_tensor=True``,
    through :class:`~prunefw.LayerPruningContext`) say what is pruned and how. At each
    pruning event the criterion is built with the schedule's ``parameter`` set to the
    amount that lands the curve's target. Every check of
    :meth:`~prunefw.recipes.Recipe.resolve` runs here, before any training step.

    Args:
        model: The model to prune (not modified here; :meth:`GradualPruner.step`
            prunes it).
        recipe: A recipe with a ``[schedule]`` section.

    Returns:
        The pruner; call its ``step()`` once per optimizer step (pass
        ``calibration_data`` to ``step()`` for criteria that need activations).

    Raises:
        RecipeError: The recipe has no ``[schedule]``, or does not fit the model.
        InvalidTypeError: ``recipe`` is not a :class:`~prunefw.recipes.Recipe`.

    Example:
        >>> from torch import nn
        >>> recipe = Recipe.from_toml('''
        ... [global]
        ... criteria = ["magnitude"]
        ... [schedule]
        ... final_sparsity = 0.75
        ... end_step = 4
        ... ''')
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        >>> pruner = gradual_pruner(model, recipe)
        >>> for _ in range(5):
        ...     _ = pruner.step()
        >>> pruner.sparsity()
        0.75
    """
    if not isinstance(recipe, Recipe):
        raise InvalidTypeError(f"gradual_pruner() expects a Recipe, got {recipe!r}")
    schedule = recipe.schedule
    if schedule is None:
        raise recipe_error(
            recipe.source,
            "schedule",
            "the recipe has no [schedule] section: it prunes at once",
            "apply it with apply_recipe(model, recipe), or add a [schedule] section with "
            "final_sparsity and end_step",
        )
    registry = recipe.registry or default_registry()
    resolved = recipe.resolve(model)
    key = schedule.parameter

    def pruner(factory: Callable[[Any], PruningContext], per_tensor: bool) -> GradualPruner:
        return GradualPruner(
            factory,
            initial_sparsity=schedule.initial_sparsity,
            final_sparsity=schedule.final_sparsity,
            start_step=schedule.start_step,
            end_step=schedule.end_step,
            frequency=schedule.frequency,
            curve=schedule.curve,
            amount_type=schedule.amount_type,
            per_tensor=per_tensor,
        )

    section = recipe.global_section
    if section is not None:
        spec = section.criteria[0]
        pairs = [(target.module, target.name) for target in resolved.global_targets]

        def global_context(amount: float | int) -> PruningContext:
            criterion = spec.build(registry, **{key: amount})
            return GlobalPruningContext(
                model, criterion, parameters=pairs, strategy=section.strategy
            )

        return pruner(global_context, per_tensor=False)
    plan: list[tuple[tuple[nn.Module, str], CriterionSpec]] = [
        ((target.module, target.name), rule.criteria[0])
        for rule, targets in resolved.layer_targets
        for target in targets
    ]

    def layer_context(amounts: Mapping[tuple[nn.Module, str], float | int]) -> PruningContext:
        criteria: dict[LayerKey, PruningCriterion] = {
            pair: spec.build(registry, **{key: amounts[pair]}) for pair, spec in plan
        }
        return LayerPruningContext(criteria, model=model)

    return pruner(layer_context, per_tensor=True)
