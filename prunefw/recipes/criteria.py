"""Checking a recipe's criterion against its class, before any model exists.

A criterion in a recipe is a registered name with keyword arguments. It is checked
by introspecting the class's signature (unknown or missing parameters, with "did
you mean"), then built once from the parameters (the class's own checks run) and
discarded; in ``[global]`` it must also fit the global context
(:func:`~prunefw.contexts.global_context.check_global_criterion`); under a
``[schedule]`` it must take the scheduled parameter and leave it to the schedule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from prunefw.contexts.global_context import check_global_criterion
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, PrunefwError, PruningTypeError, RecipeError
from prunefw.recipes.messages import did_you_mean
from prunefw.recipes.schema import CriterionSpec, ScheduleSection
from prunefw.registry import CriterionRegistry

__all__ = ["ErrorFactory", "parse_criterion"]

#: Makes the :class:`~prunefw.errors.RecipeError` for ``(problem, fix)`` in the
#: section or rule being parsed.
ErrorFactory = Callable[[str, str], RecipeError]


def parse_criterion(
    item: object,
    index: int,
    *,
    registry: CriterionRegistry,
    strategy: str | None,
    schedule: ScheduleSection | None,
    error: ErrorFactory,
) -> CriterionSpec:
    """Check one entry of a ``criteria`` list and return it as a spec.

    Args:
        item: The entry: a name, or a table with ``name`` and keyword arguments.
        index: Its position in the list, from 1 (``criterion #<index>`` in messages).
        registry: Where the name is looked up and the class comes from.
        strategy: The ``[global]`` strategy, or ``None`` in a ``[[layer]]`` rule.
        schedule: The recipe's ``[schedule]``, or ``None``.
        error: Makes the error for a problem and its fix.

    Returns:
        The spec.

    Raises:
        RecipeError: Not a criterion table, an unknown name, bad parameters, a
            criterion ``[global]`` cannot run, or a parameter the schedule cannot set.
    """
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise error(
            f"criterion #{index} is {item!r}; a criterion is a table with a name",
            'write { name = "magnitude", amount = 0.5 }',
        )
    name = item["name"]
    params = {key: value for key, value in item.items() if key != "name"}
    what = f"criterion #{index}"
    if name not in registry:
        known = registry.names()
        raise error(
            f"{what}: unknown criterion {name!r}",
            f"{did_you_mean(name, known)}known criteria: {', '.join(known)} (install the "
            "plugin that provides it, or check PRUNEFW_DISABLED_PLUGINS)",
        )
    cls = registry.get(name)
    what = f"{what} {name!r}"
    signature = _signature(cls)
    arguments = params
    if schedule is not None:
        arguments = _with_scheduled_parameter(cls, signature, params, schedule, what, error)
    _check_parameters(cls, signature, arguments, what, error)
    try:
        built = cls(**arguments)
    except (PrunefwError, ValueError, TypeError) as exc:
        raise error(
            f"{what}: bad parameters: {exc}", f"give valid values: {_usage(name, signature)}"
        ) from None
    if strategy is not None:
        try:
            check_global_criterion(built, strategy)
        except PruningTypeError:
            raise error(
                f"{what} has PRUNING_TYPE {built.PRUNING_TYPE!r}; the global section ranks "
                "all tensors together and takes 'unstructured' criteria only",
                "move it to a [[layer]] rule",
            ) from None
        except InvalidArgumentError:
            raise error(
                f"{what} does not support strategy = {strategy!r} (no rank_selection())",
                "remove the strategy key to use 'global_unstructured'",
            ) from None
    return CriterionSpec(name, params)


def _with_scheduled_parameter(
    cls: type[PruningCriterion],
    signature: inspect.Signature | None,
    params: dict[str, Any],
    schedule: ScheduleSection,
    what: str,
    error: ErrorFactory,
) -> dict[str, Any]:
    """``params`` plus the scheduled parameter at its validation amount, once it can be set."""
    key = schedule.parameter
    if key in params:
        raise error(
            f"{what} sets {key} = {params[key]!r}, but the [schedule] sets {key} at every "
            "pruning event",
            f"remove {key} from the criterion; final_sparsity in [schedule] says how far to prune",
        )
    if signature is not None:
        names, takes_any = _keywords(signature)
        if key not in names and not takes_any:
            raise error(
                f"{what} has no parameter {key!r} for the [schedule] to set",
                f"{did_you_mean(key, names)}set parameter in [schedule] to the keyword of the "
                f"criterion's amount: {_usage(cls.name, signature)}",
            )
    return {**params, key: schedule.validation_amount}


def _check_parameters(
    cls: type[PruningCriterion],
    signature: inspect.Signature | None,
    params: dict[str, Any],
    what: str,
    error: ErrorFactory,
) -> None:
    """Check ``params`` against the signature: every key accepted, nothing required missing."""
    if signature is None:
        return
    accepted, var_keyword = _keywords(signature)
    for key in params:
        if key not in accepted and not var_keyword:
            raise error(
                f"{what}: unknown parameter {key!r}",
                f"{did_you_mean(key, accepted)}the criterion takes {_usage(cls.name, signature)}",
            )
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise error(f"{what}: {exc}", f"write {_usage(cls.name, signature)}") from None


def _signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return None


def _keywords(signature: inspect.Signature) -> tuple[list[str], bool]:
    """The parameters a criterion can be given by keyword, and whether it takes ``**kwargs``."""
    params = signature.parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _usage(name: str, signature: inspect.Signature | None) -> str:
    """Return how a criterion is written in a recipe, e.g. ``"percentile(lower, upper)"``.

    Args:
        name: The criterion's registered name.
        signature: The signature of its class (``None`` if it has none).

    Example:
        >>> from prunefw import MagnitudeCriterion
        >>> _usage("magnitude", inspect.signature(MagnitudeCriterion))
        'magnitude(min_threshold=None, amount=None)'
    """
    if signature is None:  # pragma: no cover - builtins without signatures
        return f"{name}(...)"
    parts = []
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            parts.append("...")
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            default = "" if param.default is param.empty else f"={param.default!r}"
            parts.append(f"{param.name}{default}")
    return f"{name}({', '.join(parts)})"
