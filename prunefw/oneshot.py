"""One call to prune a model's linear layers to a sparsity with a named criterion."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from torch import nn

from prunefw.calibration import Forward
from prunefw.contexts import GlobalPruningContext, LayerPruningContext, PruningContext
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.progress import ProgressCallback
from prunefw.registry import default_registry
from prunefw.targets import select_targets

__all__ = ["SPARSITY_PARAMETERS", "prune_model"]

#: The constructor parameters that set a criterion's sparsity, tried in this order.
SPARSITY_PARAMETERS = ("sparsity", "amount", "prune_ratio")


def _build(
    criterion: str | PruningCriterion, sparsity: float | None, kwargs: dict[str, Any]
) -> PruningCriterion:
    if isinstance(criterion, PruningCriterion):
        if sparsity is not None or kwargs:
            raise InvalidArgumentError(
                f"prune_model() got the criterion instance {criterion!r} and also "
                "sparsity/criterion arguments; give a criterion name with them, or the "
                "instance alone"
            )
        return criterion
    if not isinstance(criterion, str):
        raise InvalidTypeError(
            f"prune_model() expects a criterion name or a PruningCriterion, got {criterion!r}"
        )
    cls = default_registry().get(criterion)
    if sparsity is not None:
        accepted = inspect.signature(cls).parameters
        parameter = next((p for p in SPARSITY_PARAMETERS if p in accepted), None)
        if parameter is None:
            raise InvalidArgumentError(
                f"criterion {criterion!r} takes no sparsity (none of "
                f"{', '.join(SPARSITY_PARAMETERS)}); call prune_model(model, {criterion!r}, "
                "**its_arguments) without sparsity"
            )
        kwargs = {parameter: sparsity, **kwargs}
    return default_registry().create(criterion, **kwargs)


def prune_model(
    model: nn.Module,
    criterion: str | PruningCriterion = "magnitude",
    sparsity: float | None = None,
    *,
    scope: Literal["global", "layer"] | None = None,
    calibration_data: Iterable[Any] | None = None,
    forward: Forward | None = None,
    progress: ProgressCallback | None = None,
    module_types: Sequence[type[nn.Module] | str] | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    include_output_head: bool = False,
    **criterion_kwargs: Any,
) -> PruningContext:
    """Prune the default targets of ``model`` to ``sparsity`` with a criterion, in one call.

    The targets are the global context's defaults (linear-like layers and
    convolutions, not embeddings, not the output head: for a transformer, its
    blocks' linear layers), narrowed by ``module_types``/``include``/``exclude``.
    ``sparsity`` goes to the criterion's ``sparsity``, ``amount`` or ``prune_ratio``
    parameter, whichever it has.

    Args:
        model: The model.
        criterion: A registered criterion name (``"magnitude"``, ``"wanda"``, ...) or
            a criterion instance (then no ``sparsity`` or ``criterion_kwargs``).
        sparsity: The fraction to prune.
        scope: ``"global"`` (rank all targets together,
            :class:`~prunefw.GlobalPruningContext`) or ``"layer"`` (each target on
            its own with the same criterion, :class:`~prunefw.LayerPruningContext`).
            Default: ``"global"`` for ``"unstructured"`` criteria, else ``"layer"``.
        calibration_data: Batches for criteria that calibrate (e.g. Wanda).
        forward: How to call the model on a batch (see :meth:`PruningContext.prune`).
        progress: A progress callback (see :mod:`prunefw.progress`).
        module_types: Module types to select (classes or names).
        include: Glob(s) on qualified module names to keep.
        exclude: Glob(s) on qualified module names to drop.
        include_output_head: Also prune the output head.
        **criterion_kwargs: More arguments for the criterion, e.g. ``pattern="2:4"``.

    Returns:
        The context that pruned the model (its :attr:`~PruningContext.steps` say what
        was done; ``make_permanent()`` makes it permanent).

    Raises:
        UnknownCriterionError: No criterion of that name.
        InvalidArgumentError: A bad scope or sparsity, or a criterion without a
            sparsity parameter given one.
        PruningTypeError: ``scope="global"`` with a criterion that is not
            ``"unstructured"``.

    Example:
        >>> from torch import nn
        >>> from prunefw import prune_model, sparsity_report
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> ctx = prune_model(model, "magnitude", 0.5)
        >>> [step.scope for step in ctx.steps], sparsity_report(model, pruned_only=True).sparsity
        (['global'], 0.5)
    """
    crit = _build(criterion, sparsity, dict(criterion_kwargs))
    if scope is None:
        scope = "global" if crit.PRUNING_TYPE == "unstructured" else "layer"
    ctx: PruningContext
    if scope == "global":
        ctx = GlobalPruningContext(
            model,
            crit,
            module_types=module_types,
            include=include,
            exclude=exclude,
            include_output_head=include_output_head,
        )
    elif scope == "layer":
        targets = select_targets(
            model,
            module_types=module_types,
            include=include,
            exclude=exclude,
            include_output_head=include_output_head,
        )
        ctx = LayerPruningContext({(t.module, t.name): crit for t in targets}, model=model)
    else:
        raise InvalidArgumentError(
            f"prune_model(scope={scope!r}): expected 'global', 'layer' or None"
        )
    ctx.prune(calibration_data, forward=forward, progress=progress)
    return ctx
