"""Reading a recipe: TOML text or a dict to a validated :class:`~prunefw.recipes.Recipe`.

Everything that needs no model is checked here, raising on the first problem:
keys (with "did you mean"), types, the ``[schedule]`` settings (by
:func:`prunefw.schedule.check_schedule`), the strategy (by
:func:`~prunefw.contexts.global_context.check_strategy`), module type names (see
:mod:`prunefw.recipes.module_types`) and every criterion (see
:mod:`prunefw.recipes.criteria`).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunefw.contexts.global_context import STRATEGIES, check_strategy
from prunefw.errors import InvalidArgumentError, PrunefwError, RecipeError
from prunefw.recipes.criteria import parse_criterion
from prunefw.recipes.messages import did_you_mean, recipe_error
from prunefw.recipes.module_types import module_type_matchers
from prunefw.recipes.schema import (
    GLOBAL_KEYS,
    LAYER_KEYS,
    SCHEDULE_KEYS,
    TOP_KEYS,
    CriterionSpec,
    GlobalSection,
    LayerRule,
    Recipe,
    ScheduleSection,
)
from prunefw.registry import CriterionRegistry, default_registry
from prunefw.schedule import AMOUNT_TYPES, CURVES, check_schedule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["load_recipe", "parse_recipe", "parse_toml"]

_CRITERIA_EXAMPLE = 'criteria = [{ name = "magnitude", amount = 0.5 }]'

_SPARSITY_RULE = "sparsities are numbers in [0, 1] with final_sparsity >= initial_sparsity"
_STEP_RULE = "steps are ints (counts of step() calls) with end_step > start_step >= 0"
#: The fix for a bad ``[schedule]`` value, by key.
_SCHEDULE_RULES = {
    "initial_sparsity": _SPARSITY_RULE,
    "final_sparsity": _SPARSITY_RULE,
    "start_step": _STEP_RULE,
    "end_step": _STEP_RULE,
    "frequency": "frequency is an int >= 1 (steps between pruning events)",
    "curve": f"curve is one of {', '.join(map(repr, CURVES))}",
    "amount_type": f"amount_type is one of {', '.join(map(repr, AMOUNT_TYPES))}",
    "": f"{_SPARSITY_RULE}; {_STEP_RULE}; frequency >= 1",
}


def load_recipe(path: str | Path, *, registry: CriterionRegistry | None = None) -> Recipe:
    """Read and validate a TOML recipe file.

    Args:
        path: The ``.toml`` file.
        registry: Where criterion names are looked up (default: the default
            registry, i.e. the built-ins and every installed plugin).

    Returns:
        The recipe; its ``source`` is ``str(path)``.

    Raises:
        RecipeError: The file cannot be read, is not TOML, or is not a valid
            recipe; the message names the file, the section or rule, and the fix.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise recipe_error(
            source, "file", f"cannot read the recipe: {reason}", "check the path"
        ) from None
    return parse_toml(text, source=source, registry=registry)


def parse_toml(
    text: str, *, source: str = "<recipe>", registry: CriterionRegistry | None = None
) -> Recipe:
    """Parse and validate a recipe from TOML text (this is :meth:`Recipe.from_toml`).

    Args:
        text: The TOML document.
        source: Name of the recipe in messages (the file name).
        registry: Where criterion names are looked up (default: the default registry).

    Returns:
        The recipe.

    Raises:
        RecipeError: Invalid TOML, or an invalid recipe.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise recipe_error(
            source, "toml", f"not valid TOML: {exc}", "check the syntax at that line"
        ) from None
    return parse_recipe(data, source=source, registry=registry)


def parse_recipe(
    data: object, *, source: str = "<recipe>", registry: CriterionRegistry | None = None
) -> Recipe:
    """Validate a recipe given as a dict (this is :meth:`Recipe.from_dict`).

    Args:
        data: The parsed TOML.
        source: Name of the recipe in messages (the file name).
        registry: Where criterion names are looked up (default: the default
            registry); kept in the recipe to build its criteria from.

    Returns:
        The recipe.

    Raises:
        RecipeError: Anything invalid; the message names ``source``, the section
            or rule, and the fix.
    """
    return _Parser(source, registry or default_registry()).recipe(data, registry)


def _describe_value(value: object) -> str:
    """What a TOML value is, for messages: ``"a table"``, ``"an array"``, ``"int 3"``."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


class _Parser:
    """Turns a parsed TOML dict into a :class:`Recipe`, raising on the first problem."""

    def __init__(self, source: str, registry: CriterionRegistry) -> None:
        self.source = source
        self.registry = registry
        self.schedule: ScheduleSection | None = None

    def error(self, where: str, problem: str, fix: str) -> RecipeError:
        """Return (not raise) the error for ``problem`` in ``[where]`` of this recipe."""
        return recipe_error(self.source, where, problem, fix)

    def keys(self, data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.error(
                    where,
                    f"unknown key {key!r}",
                    f"{did_you_mean(key, allowed)}the keys of [{where}] are {', '.join(allowed)}",
                )

    def table(self, value: object, where: str, fix: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(where, f"expected a table, got {_describe_value(value)}", fix)
        return value

    def recipe(self, data: object, registry: CriterionRegistry | None) -> Recipe:
        data = self.table(
            data, "recipe", "a recipe is a TOML document with [global] and/or [[layer]] sections"
        )
        where = "recipe"
        for key in data:
            if key not in TOP_KEYS:
                keys = ", ".join(TOP_KEYS)
                fix = f"{did_you_mean(key, TOP_KEYS)}a recipe has the top-level keys {keys}"
                if key in GLOBAL_KEYS or key in LAYER_KEYS:
                    fix = f"put {key!r} inside a [global] section or a [[layer]] rule"
                raise self.error(where, f"unknown top-level key {key!r}", fix)
        if "schedule" in data:
            self.schedule = self.schedule_section(data["schedule"])
        description = data.get("description")
        if description is not None and not isinstance(description, str):
            raise self.error(
                where,
                f"description must be a string, got {_describe_value(description)}",
                'write description = "..."',
            )
        section = None
        if "global" in data:
            section = self.global_section(data["global"])
        layers: tuple[LayerRule, ...] = ()
        if "layer" in data:
            raw = data["layer"]
            if isinstance(raw, Mapping):
                raise self.error(
                    "layer",
                    "'layer' is a single table; rules are an array of tables",
                    "write each rule as [[layer]] (double brackets)",
                )
            if not isinstance(raw, list):
                raise self.error(
                    "layer",
                    f"expected [[layer]] rules, got {_describe_value(raw)}",
                    "write [[layer]] rules",
                )
            layers = tuple(self.layer_rule(item, index) for index, item in enumerate(raw, 1))
        if section is None and not layers:
            raise self.error(
                where,
                "nothing to prune: no [global] section and no [[layer]] rule",
                f"add a [global] section with {_CRITERIA_EXAMPLE}, or [[layer]] rules",
            )
        if self.schedule is not None and section is not None and layers:
            raise self.error(
                "schedule",
                "a scheduled recipe has both a [global] section and [[layer]] rules; one "
                "schedule follows one sparsity curve, over the [global] tensors together or "
                "over each [[layer]] tensor on its own",
                "keep one of them, or write two recipes and step one gradual pruner for each",
            )
        return Recipe(section, layers, description, self.source, registry, self.schedule)

    def schedule_section(self, value: object) -> ScheduleSection:
        where = "schedule"
        example = "write [schedule] followed by final_sparsity = 0.9 and end_step = 1000"
        data = self.table(value, where, example)
        self.keys(data, SCHEDULE_KEYS, where)
        for key in ("final_sparsity", "end_step"):
            if key not in data:
                raise self.error(where, f"no {key}", example)
        for key in ("curve", "parameter", "amount_type"):
            if key in data and (not isinstance(data[key], str) or not data[key]):
                raise self.error(
                    where,
                    f"{key} must be a non-empty string, got {_describe_value(data[key])}",
                    f"write {key} = {getattr(ScheduleSection, key)!r} (the default)",
                )
        try:
            settings = check_schedule(
                **{key: data[key] for key in SCHEDULE_KEYS if key in data and key != "parameter"}
            )
        except PrunefwError as exc:
            # "GradualPruner(frequency=0): must be >= 1" -> "frequency = 0: must be >= 1"
            found = re.match(r"GradualPruner\((\w+)=(.*?)\): (.*)", str(exc), re.S)
            key, problem = (
                (found[1], f"{found[1]} = {found[2]}: {found[3]}") if found else ("", str(exc))
            )
            raise self.error(
                where, problem, _SCHEDULE_RULES.get(key, _SCHEDULE_RULES[""])
            ) from None
        del settings["per_tensor"]
        return ScheduleSection(**settings, parameter=data.get("parameter", "amount"))

    def global_section(self, value: object) -> GlobalSection:
        where = "global"
        data = self.table(value, where, f"write [global] followed by {_CRITERIA_EXAMPLE}")
        self.keys(data, GLOBAL_KEYS, where)
        try:
            strategy = check_strategy(data.get("strategy", "global_unstructured"))
        except InvalidArgumentError:
            raise self.error(
                where,
                f"unknown strategy {data['strategy']!r}",
                f"use one of {', '.join(map(repr, STRATEGIES))}",
            ) from None
        module_types = None
        if "module_types" in data:
            module_types = self.type_names(data["module_types"], where, "module_types")
        return GlobalSection(
            criteria=self.criteria(data, where, strategy=strategy),
            module_types=module_types,
            include=self.strings(data.get("include"), where, "include"),
            exclude=self.strings(data.get("exclude"), where, "exclude"),
            tensor=self.tensor(data.get("tensor", "weight"), where),
            strategy=strategy,
        )

    def layer_rule(self, value: object, index: int) -> LayerRule:
        where = f"layer #{index}"
        data = self.table(
            value, where, f'write [[layer]] followed by match = "..." and {_CRITERIA_EXAMPLE}'
        )
        self.keys(data, LAYER_KEYS, where)
        match = self.strings(data.get("match"), where, "match")
        module_type: tuple[str, ...] = ()
        if "module_type" in data:
            module_type = self.type_names(data["module_type"], where, "module_type")
        if not match and not module_type:
            raise self.error(
                where,
                "the rule matches nothing: it has neither match nor module_type",
                'add match = "glob on qualified module names" and/or module_type = "Linear"',
            )
        return LayerRule(
            index=index,
            criteria=self.criteria(data, where, strategy=None),
            match=match,
            module_type=module_type,
            tensor=self.tensor(data.get("tensor", "weight"), where),
        )

    def strings(self, value: object, where: str, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.error(
                where,
                f"{key} must be a string or a list of strings, got {value!r}",
                f'write {key} = "features.*" or {key} = ["a.*", "b"]',
            )
        return tuple(items)

    def type_names(self, value: object, where: str, key: str) -> tuple[str, ...]:
        """The module class names under ``key``, each checked without importing anything."""
        names = self.strings(value, where, key)
        if not names:
            raise self.error(
                where, f"{key} is empty", f'name at least one class, e.g. {key} = ["Linear"]'
            )
        module_type_matchers(names, self.source, where, key)
        return names

    def tensor(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(
                where,
                f"tensor must be a parameter name, got {value!r}",
                'write tensor = "weight" (the default) or tensor = "bias"',
            )
        return value

    def criteria(
        self, data: Mapping[str, Any], where: str, *, strategy: str | None
    ) -> tuple[CriterionSpec, ...]:
        if "criteria" not in data:
            raise self.error(where, "no criteria", f"add {_CRITERIA_EXAMPLE}")
        value = data["criteria"]
        if not isinstance(value, list) or not value:
            raise self.error(
                where,
                f"criteria must be a non-empty list, got {value!r}",
                f"write {_CRITERIA_EXAMPLE}",
            )
        if self.schedule is not None and len(value) > 1:
            raise self.error(
                where,
                f"{len(value)} criteria in a scheduled recipe; the schedule steers one "
                "criterion per section or rule",
                "keep the criterion the schedule steers, and apply the others with a "
                "separate recipe",
            )
        error = functools.partial(self.error, where)
        return tuple(
            parse_criterion(
                item,
                index,
                registry=self.registry,
                strategy=strategy,
                schedule=self.schedule,
                error=error,
            )
            for index, item in enumerate(value, 1)
        )
