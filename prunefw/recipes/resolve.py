"""Resolving a recipe against a model: the tensors each section and rule prunes.

The tensors are selected by :func:`prunefw.targets.select_targets`, as a
:class:`~prunefw.GlobalPruningContext` selects them: the ``[global]`` section with
its ``module_types``/``include``/``exclude`` (leaving the model's output head out,
as the global context does), each ``[[layer]]`` rule with its ``module_type`` and
its ``match`` globs as ``include`` (the output head included: a rule names its
modules). What is recipe-specific is here: a rule that matches no tensor and a
tensor matched by two rules are errors, and every error says what the model has
instead.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from prunefw.errors import InvalidTypeError, RecipeError, TargetError
from prunefw.recipes.messages import did_you_mean, recipe_error
from prunefw.recipes.module_types import module_type_matchers
from prunefw.recipes.schema import GlobalSection, LayerRule, Recipe, ResolvedRecipe
from prunefw.targets import PruningTarget, is_module_type, make_target, select_targets

__all__ = ["resolve_recipe"]


def resolve_recipe(recipe: Recipe, model: nn.Module) -> ResolvedRecipe:
    """Find the tensors every section and rule of ``recipe`` prunes in ``model``.

    This is :meth:`Recipe.resolve <prunefw.recipes.Recipe.resolve>`.

    Args:
        recipe: The recipe.
        model: The model the recipe will be applied to (not modified).

    Returns:
        The tensors, per section and rule.

    Raises:
        RecipeError: ``[global]`` selects nothing, a rule matches no tensor, a
            tensor is matched by two rules, or a dotted module type name names no
            module class of the (now imported) module.
        InvalidTypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> from torch import nn
        >>> half = [{"name": "magnitude", "amount": 0.5}]
        >>> recipe = Recipe.from_dict(
        ...     {
        ...         "global": {"criteria": half, "exclude": ["2"]},
        ...         "layer": [{"module_type": "Linear", "tensor": "bias", "criteria": half}],
        ...     }
        ... )
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        >>> resolve_recipe(recipe, model).labels()
        {'global': ['0.weight'], 'layer #1': ['0.bias', '2.bias']}
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"a recipe applies to an nn.Module, got {model!r}")
    global_targets: tuple[PruningTarget, ...] = ()
    if recipe.global_section is not None:
        global_targets = _global_targets(recipe.source, model, recipe.global_section)
    owners: dict[tuple[int, str], LayerRule] = {}
    layers = []
    for rule in recipe.layers:
        targets = _rule_targets(recipe.source, model, rule)
        for target in targets:
            other = owners.setdefault(target.key, rule)
            if other is not rule:
                raise recipe_error(
                    recipe.source,
                    rule.label,
                    f"{target.label} is also matched by [{other.label}] "
                    f"({other.describe()}); a tensor takes its criteria from one rule",
                    f"narrow the match or module_type of [{rule.label}] or "
                    f"[{other.label}], or list all the tensor's criteria in one rule",
                )
        layers.append((rule, targets))
    return ResolvedRecipe(global_targets, tuple(layers))


def _global_targets(
    source: str, model: nn.Module, section: GlobalSection
) -> tuple[PruningTarget, ...]:
    types = None
    if section.module_types is not None:
        types = module_type_matchers(section.module_types, source, "global", "module_types")
    try:
        return tuple(
            select_targets(
                model,
                module_types=types,
                include=list(section.include) or None,
                exclude=list(section.exclude) or None,
                tensor_name=section.tensor,
            )
        )
    except TargetError as exc:
        raise recipe_error(
            source,
            "global",
            f"selects no tensor of {type(model).__name__}: {exc}",
            "widen module_types/include or narrow exclude; the model's modules: "
            + _module_summary(model, section.tensor),
        ) from None


def _rule_targets(source: str, model: nn.Module, rule: LayerRule) -> tuple[PruningTarget, ...]:
    types = module_type_matchers(rule.module_type, source, rule.label, "module_type")
    try:
        return tuple(
            select_targets(
                model,
                module_types=types or (nn.Module,),
                include=list(rule.match) or None,
                tensor_name=rule.tensor,
                include_output_head=True,  # a rule names its modules; only [global] skips it
            )
        )
    except TargetError as exc:
        raise _no_tensor_error(source, model, rule, types, exc) from None


def _no_tensor_error(
    source: str,
    model: nn.Module,
    rule: LayerRule,
    types: Sequence[type[nn.Module] | str],
    exc: TargetError,
) -> RecipeError:
    """The error for a rule that selects no tensor, saying what the model has instead."""
    # Only to explain the error: the modules the rule's globs and types match.
    matched = [
        (qualname, module)
        for qualname, module in model.named_modules()
        if (not rule.match or any(fnmatch.fnmatchcase(qualname, p) for p in rule.match))
        and (not types or is_module_type(module, types))
    ]
    if any(_has_prunable(module, rule.tensor) for _, module in matched):
        problem = f"{rule.describe()}: {exc}"  # e.g. a 'weight' that is not a Parameter
    elif matched:
        shown = ", ".join(f"{q or '(model)'} ({type(m).__name__})" for q, m in matched[:5])
        problem = (
            f"{rule.describe()} matches {shown}{', ...' if len(matched) > 5 else ''}, but "
            f"none has a parameter {rule.tensor!r}"
        )
    else:
        problem = f"{rule.describe()} matches no module of {type(model).__name__}"
    hint = ""
    if rule.match:
        candidates = [q for q, m in model.named_modules() if _has_prunable(m, rule.tensor)]
        hint = did_you_mean(rule.match[0], candidates)
    return recipe_error(
        source,
        rule.label,
        problem,
        f"{hint}match the qualified names (globs like 'features.*' work) or types of "
        f"modules with a {rule.tensor!r} parameter: {_module_summary(model, rule.tensor)}; "
        "or remove the rule",
    )


def _has_prunable(module: nn.Module, tensor: str) -> bool:
    """Whether ``module.tensor`` can be pruned (what :func:`~prunefw.targets.make_target` takes)."""
    try:
        make_target(module, tensor, {}, model_given=False)
    except TargetError:
        return False
    return True


def _module_summary(model: nn.Module, tensor: str, limit: int = 8) -> str:
    """``"0 (Linear), 2 (Linear)"``: the modules of ``model`` with a prunable ``tensor``."""
    items = [
        f"{qualname or '(model)'} ({type(module).__name__})"
        for qualname, module in model.named_modules()
        if _has_prunable(module, tensor)
    ]
    if not items:
        return f"none has a {tensor!r} parameter"
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
