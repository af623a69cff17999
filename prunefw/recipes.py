"""Pruning recipes: one TOML file says what to prune and how.

A recipe has an optional ``[global]`` section (criteria ranking all selected
tensors together, through :class:`~prunefw.GlobalPruningContext`) and optional
``[[layer]]`` rules (criteria for the tensors of the modules a rule matches by
qualified-name glob and/or module type, through
:class:`~prunefw.LayerPruningContext`). Criteria are named by their registered
name with keyword arguments, so plugin criteria work by name. Every key is
documented in ``docs/recipes.md``::

    [global]
    criteria = [{ name = "magnitude", amount = 0.5 }]
    module_types = ["Linear", "Conv2d"]
    include = ["features.*"]

    [[layer]]
    match = "classifier"
    criteria = [{ name = "percentile", lower = 0.1, upper = 0.9 }]

Validation happens in two steps, both before the model is touched:

1. :func:`load_recipe` / :meth:`Recipe.from_dict` check everything that needs no
   model: keys, types, criterion names, and criterion parameters (each criterion
   is built once from them, then discarded), module type names, the strategy.
2. :meth:`Recipe.resolve` (called by :func:`apply_recipe`) finds the tensors in
   the model: a rule that matches no tensor, or a tensor matched by two rules,
   is an error.

Every error is a :class:`~prunefw.errors.RecipeError` saying
``<file>: [<section or rule>] <problem>. Fix: <how>``.

Order of application: the ``[global]`` criteria first, then each tensor's rule
criteria, each on the weights still unpruned (so a tensor may be in the global
selection *and* in a layer rule; ``exclude`` it from ``[global]`` if it should
only follow its rule). :func:`apply_recipe` is all-or-nothing: if anything fails,
the model is left exactly as it was.

Example:
    >>> from torch import nn
    >>> from prunefw import sparsity_report
    >>> recipe = Recipe.from_dict(
    ...     {
    ...         "global": {"criteria": [{"name": "magnitude", "amount": 0.5}]},
    ...         "layer": [{"match": "2", "criteria": [{"name": "random", "prune_ratio": 0.5,
    ...                                               "seed": 0}]}],
    ...     }
    ... )
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> contexts = apply_recipe(model, recipe)
    >>> [type(ctx).__name__ for ctx in contexts]
    ['GlobalPruningContext', 'LayerPruningContext']
    >>> sparsity_report(model, pruned_only=True).zeros > 48
    True
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from torch import nn

from prunefw._rollback import rollback_on_error
from prunefw.calibration import Forward
from prunefw.contexts import GlobalPruningContext, LayerPruningContext, PruningContext
from prunefw.contexts.global_context import STRATEGIES
from prunefw.criteria.base import PruningCriterion, format_call
from prunefw.errors import InvalidTypeError, PrunefwError, RecipeError, TargetError
from prunefw.registry import CriterionRegistry, default_registry
from prunefw.schedule import AMOUNT_TYPES, CURVES, GradualPruner, check_schedule
from prunefw.targets import PruningTarget, make_target, select_targets

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "CriterionSpec",
    "GlobalSection",
    "LayerRule",
    "Recipe",
    "ResolvedRecipe",
    "ScheduleSection",
    "Tracker",
    "apply_recipe",
    "gradual_pruner",
    "load_recipe",
]

_T = TypeVar("_T")

#: Keys of a recipe, of its ``[global]`` section and of a ``[[layer]]`` rule.
TOP_KEYS = ("description", "global", "layer", "schedule")
GLOBAL_KEYS = ("criteria", "module_types", "include", "exclude", "tensor", "strategy")
LAYER_KEYS = ("match", "module_type", "tensor", "criteria")
SCHEDULE_KEYS = (
    "final_sparsity",
    "end_step",
    "initial_sparsity",
    "start_step",
    "frequency",
    "curve",
    "parameter",
    "amount_type",
)

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


class Tracker(Protocol):
    """Wraps an iterable to report progress (e.g. a progress bar); must yield every item."""

    def __call__(
        self, items: Iterable[_T], description: str, total: int | None = None
    ) -> Iterable[_T]:
        """Yield ``items``, reporting progress under ``description``."""
        ...  # pragma: no cover


def _no_progress(items: Iterable[_T], description: str, total: int | None = None) -> Iterable[_T]:
    return items


def _fail(source: str, where: str, problem: str, fix: str) -> RecipeError:
    return RecipeError(f"{source}: [{where}] {problem}. Fix: {fix}")


def _close(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


@dataclass(frozen=True)
class CriterionSpec:
    """A criterion by registered name with its keyword arguments.

    Attributes:
        name: The registered name, e.g. ``"magnitude"``.
        params: The keyword arguments.

    Example:
        >>> spec = CriterionSpec("magnitude", {"amount": 0.5})
        >>> spec.build()
        MagnitudeCriterion(amount=0.5)
        >>> str(spec), spec.to_dict()
        ('magnitude(amount=0.5)', {'name': 'magnitude', 'amount': 0.5})
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(
        self, registry: CriterionRegistry | None = None, **overrides: Any
    ) -> PruningCriterion:
        """Return a new criterion (from ``registry``, default: the default registry).

        ``overrides`` are keyword arguments that replace or add to :attr:`params`
        (a ``[schedule]`` sets the amount this way).
        """
        return (registry or default_registry()).create(self.name, **{**self.params, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe form: ``{"name": ..., **params}``."""
        return {"name": self.name, **self.params}

    def __str__(self) -> str:
        return format_call(self.name, self.params)


@dataclass(frozen=True)
class GlobalSection:
    """The ``[global]`` section: criteria over all selected tensors together.

    Attributes:
        criteria: Applied in order, each on the entries still unpruned.
        module_types: Names of module classes (``"Linear"`` from ``torch.nn``, or a
            dotted import path); ``None`` means the global context's default
            (Linear and convolutions).
        include: Globs a module's qualified name must match (empty: any).
        exclude: Globs that remove modules.
        tensor: The tensor pruned in each selected module.
        strategy: ``"global_unstructured"`` or ``"streaming"``.
    """

    criteria: tuple[CriterionSpec, ...]
    module_types: tuple[str, ...] | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tensor: str = "weight"
    strategy: str = "global_unstructured"

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe form of the section (defaults left out)."""
        data: dict[str, Any] = {"criteria": [spec.to_dict() for spec in self.criteria]}
        if self.module_types is not None:
            data["module_types"] = list(self.module_types)
        if self.include:
            data["include"] = list(self.include)
        if self.exclude:
            data["exclude"] = list(self.exclude)
        if self.tensor != "weight":
            data["tensor"] = self.tensor
        if self.strategy != "global_unstructured":
            data["strategy"] = self.strategy
        return data


@dataclass(frozen=True)
class LayerRule:
    """A ``[[layer]]`` rule: criteria for the tensors of the modules it matches.

    A module matches if its qualified name matches one of the ``match`` globs (if
    any) and it is an instance of one of the ``module_type`` classes (if any).

    Attributes:
        index: The rule's position in the recipe, from 1.
        criteria: Applied in order to each matched tensor on its own.
        match: Globs on qualified module names (``fnmatch``, case-sensitive).
        module_type: Names of module classes (as in :class:`GlobalSection`).
        tensor: The tensor pruned in each matched module.
    """

    index: int
    criteria: tuple[CriterionSpec, ...]
    match: tuple[str, ...] = ()
    module_type: tuple[str, ...] = ()
    tensor: str = "weight"

    @property
    def label(self) -> str:
        """``"layer #<index>"``, as in messages."""
        return f"layer #{self.index}"

    def describe(self) -> str:
        """Return what the rule matches, e.g. ``"match='fc*', module_type='Linear'"``."""
        parts = []
        if self.match:
            parts.append(f"match={_one_or_list(self.match)!r}")
        if self.module_type:
            parts.append(f"module_type={_one_or_list(self.module_type)!r}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe form of the rule (defaults left out)."""
        data: dict[str, Any] = {}
        if self.match:
            data["match"] = _one_or_list(self.match)
        if self.module_type:
            data["module_type"] = _one_or_list(self.module_type)
        if self.tensor != "weight":
            data["tensor"] = self.tensor
        data["criteria"] = [spec.to_dict() for spec in self.criteria]
        return data


@dataclass(frozen=True)
class ScheduleSection:
    """The ``[schedule]`` section: prune gradually instead of at once.

    With a schedule, the recipe's criteria are applied by a
    :class:`~prunefw.GradualPruner` (see :func:`gradual_pruner`) that sets each
    criterion's ``parameter`` at every pruning event, so that the sparsity of the
    selected tensors follows the curve. The other attributes are the pruner's
    arguments of the same names.

    Attributes:
        final_sparsity: The sparsity from ``end_step`` on.
        end_step: The last pruning event.
        initial_sparsity: The sparsity at ``start_step``.
        start_step: The first pruning event.
        frequency: Steps between pruning events.
        curve: ``"cubic"``, ``"linear"`` or ``"constant"``.
        parameter: The criterion keyword the schedule sets (``"amount"`` for
            ``magnitude``, ``"prune_ratio"`` for ``random``).
        amount_type: ``"fraction"`` (of what remains) or ``"count"``.
    """

    final_sparsity: float
    end_step: int
    initial_sparsity: float = 0.0
    start_step: int = 0
    frequency: int = 1
    curve: str = "cubic"
    parameter: str = "amount"
    amount_type: str = "fraction"

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe form of the section (defaults left out)."""
        data: dict[str, Any] = {"final_sparsity": self.final_sparsity, "end_step": self.end_step}
        defaults = ScheduleSection(self.final_sparsity, self.end_step)
        for key in SCHEDULE_KEYS[2:]:
            if getattr(self, key) != getattr(defaults, key):
                data[key] = getattr(self, key)
        return data

    def probe(self) -> float | int:
        """The zero amount of the right type (what a criterion is checked with)."""
        return 0 if self.amount_type == "count" else 0.0


def _one_or_list(values: tuple[str, ...]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe's tensors in one model (see :meth:`Recipe.resolve`).

    Attributes:
        global_targets: The tensors of the ``[global]`` section (empty if none).
        layer_targets: Each rule with the tensors it matched, in recipe order.
    """

    global_targets: tuple[PruningTarget, ...]
    layer_targets: tuple[tuple[LayerRule, tuple[PruningTarget, ...]], ...]

    def labels(self) -> dict[str, list[str]]:
        """Return ``{"global" or "layer #i": [tensor labels]}``."""
        result = {"global": [t.label for t in self.global_targets]} if self.global_targets else {}
        for rule, targets in self.layer_targets:
            result[rule.label] = [t.label for t in targets]
        return result


@dataclass(frozen=True)
class Recipe:
    """A validated pruning recipe (build it with :func:`load_recipe` or :meth:`from_dict`).

    Attributes:
        global_section: The ``[global]`` section, or ``None``.
        layers: The ``[[layer]]`` rules, in file order.
        description: Free text from the ``description`` key.
        source: Where the recipe came from (a file name), for messages.
        registry: The criterion registry its names were checked against (and
            criteria are built from); ``None`` means the default registry.
        schedule: The ``[schedule]`` section, or ``None`` (prune at once).
    """

    global_section: GlobalSection | None = None
    layers: tuple[LayerRule, ...] = ()
    description: str | None = None
    source: str = "<recipe>"
    registry: CriterionRegistry | None = field(default=None, compare=False, repr=False)
    schedule: ScheduleSection | None = None

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "<recipe>",
        registry: CriterionRegistry | None = None,
    ) -> Recipe:
        """Validate a recipe given as a dict (the parsed TOML) and return it.

        Args:
            data: ``{"global": {...}, "layer": [{...}, ...], "description": "..."}``.
            source: Name of the recipe in messages (the file name).
            registry: Where criterion names are looked up (default: the default
                registry, i.e. built-ins and installed plugins).

        Returns:
            The recipe.

        Raises:
            RecipeError: Anything invalid; the message names ``source``, the
                section or rule, and the fix.

        Example:
            >>> try:
            ...     Recipe.from_dict({"global": {"criteria": ["magnitud"]}}, source="r.toml")
            ... except RecipeError as err:
            ...     print(str(err).split(". Fix: ")[0])
            ...     print(str(err).split(". Fix: ")[1][:25])
            r.toml: [global] criterion #1: unknown criterion 'magnitud'
            did you mean 'magnitude'?
        """
        return _Parser(source, registry or default_registry()).recipe(data, registry)

    @classmethod
    def from_toml(
        cls, text: str, *, source: str = "<recipe>", registry: CriterionRegistry | None = None
    ) -> Recipe:
        """Parse and validate a recipe from TOML text (see :meth:`from_dict`).

        Raises:
            RecipeError: Invalid TOML, or an invalid recipe.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _fail(
                source, "toml", f"not valid TOML: {exc}", "check the syntax at that line"
            ) from None
        return cls.from_dict(data, source=source, registry=registry)

    def to_dict(self) -> dict[str, Any]:
        """Return the recipe as the dict :meth:`from_dict` reads (the TOML structure)."""
        data: dict[str, Any] = {}
        if self.description is not None:
            data["description"] = self.description
        if self.global_section is not None:
            data["global"] = self.global_section.to_dict()
        if self.layers:
            data["layer"] = [rule.to_dict() for rule in self.layers]
        if self.schedule is not None:
            data["schedule"] = self.schedule.to_dict()
        return data

    def criteria(self) -> Iterator[tuple[str, CriterionSpec]]:
        """Yield ``(section or rule label, spec)`` for every criterion, in order."""
        if self.global_section is not None:
            for spec in self.global_section.criteria:
                yield "global", spec
        for rule in self.layers:
            for spec in rule.criteria:
                yield rule.label, spec

    def resolve(self, model: nn.Module) -> ResolvedRecipe:
        """Find the tensors every section and rule prunes in ``model``.

        Args:
            model: The model the recipe will be applied to (not modified).

        Returns:
            The tensors, per section and rule.

        Raises:
            RecipeError: ``[global]`` selects nothing, a rule matches no tensor, or
                a tensor is matched by two rules.
            InvalidTypeError: ``model`` is not an ``nn.Module``.
        """
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(f"a recipe applies to an nn.Module, got {model!r}")
        global_targets: tuple[PruningTarget, ...] = ()
        if self.global_section is not None:
            global_targets = self._global_targets(model, self.global_section)
        names = {id(module): name for name, module in model.named_modules()}
        owners: dict[tuple[int, str], LayerRule] = {}
        layers = []
        for rule in self.layers:
            targets = self._rule_targets(model, rule, names)
            for target in targets:
                other = owners.setdefault(target.key, rule)
                if other is not rule:
                    raise _fail(
                        self.source,
                        rule.label,
                        f"{target.label} is also matched by [{other.label}] "
                        f"({other.describe()}); a tensor takes its criteria from one rule",
                        f"narrow the match or module_type of [{rule.label}] or "
                        f"[{other.label}], or list all the tensor's criteria in one rule",
                    )
            layers.append((rule, targets))
        return ResolvedRecipe(global_targets, tuple(layers))

    def _global_targets(
        self, model: nn.Module, section: GlobalSection
    ) -> tuple[PruningTarget, ...]:
        types = None
        if section.module_types is not None:
            types = [_module_type(name) for name in section.module_types]
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
            raise _fail(
                self.source,
                "global",
                f"selects no tensor of {type(model).__name__}: {exc}",
                "widen module_types/include or narrow exclude; the model's modules: "
                + _module_summary(model, section.tensor),
            ) from None

    def _rule_targets(
        self, model: nn.Module, rule: LayerRule, names: dict[int, str]
    ) -> tuple[PruningTarget, ...]:
        types = tuple(_module_type(name) for name in rule.module_type)
        matched = [
            (qualname, module)
            for qualname, module in model.named_modules()
            if (not rule.match or any(fnmatch.fnmatchcase(qualname, p) for p in rule.match))
            and (not types or isinstance(module, types))
        ]
        targets = tuple(
            make_target(module, rule.tensor, names, model_given=True)
            for _, module in matched
            if _has_tensor(module, rule.tensor)
        )
        if targets:
            return targets
        if matched:
            shown = ", ".join(f"{q or '(model)'} ({type(m).__name__})" for q, m in matched[:5])
            problem = (
                f"{rule.describe()} matches {shown}{', ...' if len(matched) > 5 else ''}, but "
                f"none has a parameter {rule.tensor!r}"
            )
        else:
            problem = f"{rule.describe()} matches no module of {type(model).__name__}"
        hint = ""
        if rule.match:
            candidates = [q for q, m in model.named_modules() if _has_tensor(m, rule.tensor)]
            hint = _close(rule.match[0], candidates)
        raise _fail(
            self.source,
            rule.label,
            problem,
            f"{hint}match the qualified names (globs like 'features.*' work) or types of "
            f"modules with a {rule.tensor!r} parameter: {_module_summary(model, rule.tensor)}; "
            "or remove the rule",
        )


def _has_tensor(module: nn.Module, name: str) -> bool:
    if isinstance(module._parameters.get(name), nn.Parameter):
        return True
    return isinstance(module._parameters.get(name + "_orig"), nn.Parameter) and hasattr(
        module, name + "_mask"
    )


def _module_summary(model: nn.Module, tensor: str, limit: int = 8) -> str:
    items = [
        f"{qualname or '(model)'} ({type(module).__name__})"
        for qualname, module in model.named_modules()
        if _has_tensor(module, tensor)
    ]
    if not items:
        return f"none has a {tensor!r} parameter"
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _torch_module_names() -> list[str]:
    return sorted(
        name
        for name in dir(nn)
        if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Module)
    )


def _module_type(name: str) -> type[nn.Module]:
    """Resolve ``"Linear"`` (a ``torch.nn`` class) or ``"pkg.mod.Class"``.

    Raises:
        LookupError: The name does not resolve to an ``nn.Module`` subclass; the
            message says why.
    """
    if "." in name:
        module_name, _, attribute = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            raise LookupError(f"cannot import {module_name!r} ({exc})") from None
        except AttributeError:
            raise LookupError(f"module {module_name!r} has no attribute {attribute!r}") from None
    else:
        obj = getattr(nn, name, None)
        if obj is None:
            raise LookupError(f"torch.nn has no module class {name!r}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise LookupError(f"{name!r} is {obj!r}, not an nn.Module subclass")
    return obj


class _Parser:
    """Turns a parsed TOML dict into a :class:`Recipe`, raising on the first problem."""

    def __init__(self, source: str, registry: CriterionRegistry) -> None:
        self.source = source
        self.registry = registry
        self.schedule: ScheduleSection | None = None

    def fail(self, where: str, problem: str, fix: str) -> RecipeError:
        return _fail(self.source, where, problem, fix)

    def keys(self, data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(
                    where,
                    f"unknown key {key!r}",
                    f"{_close(key, allowed)}the keys of [{where}] are {', '.join(allowed)}",
                )

    def table(self, value: object, where: str, fix: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a table, got {_kind(value)}", fix)
        return value

    def recipe(self, data: object, registry: CriterionRegistry | None) -> Recipe:
        data = self.table(
            data, "recipe", "a recipe is a TOML document with [global] and/or [[layer]] sections"
        )
        where = "recipe"
        for key in data:
            if key not in TOP_KEYS:
                keys = ", ".join(TOP_KEYS)
                fix = f"{_close(key, TOP_KEYS)}a recipe has the top-level keys {keys}"
                if key in GLOBAL_KEYS or key in LAYER_KEYS:
                    fix = f"put {key!r} inside a [global] section or a [[layer]] rule"
                raise self.fail(where, f"unknown top-level key {key!r}", fix)
        if "schedule" in data:
            self.schedule = self.schedule_section(data["schedule"])
        description = data.get("description")
        if description is not None and not isinstance(description, str):
            raise self.fail(
                where,
                f"description must be a string, got {_kind(description)}",
                'write description = "..."',
            )
        section = None
        if "global" in data:
            section = self.global_section(data["global"])
        layers: tuple[LayerRule, ...] = ()
        if "layer" in data:
            raw = data["layer"]
            if isinstance(raw, Mapping):
                raise self.fail(
                    "layer",
                    "'layer' is a single table; rules are an array of tables",
                    "write each rule as [[layer]] (double brackets)",
                )
            if not isinstance(raw, list):
                raise self.fail(
                    "layer", f"expected [[layer]] rules, got {_kind(raw)}", "write [[layer]] rules"
                )
            layers = tuple(self.layer_rule(item, index) for index, item in enumerate(raw, 1))
        if section is None and not layers:
            raise self.fail(
                where,
                "nothing to prune: no [global] section and no [[layer]] rule",
                f"add a [global] section with {_CRITERIA_EXAMPLE}, or [[layer]] rules",
            )
        if self.schedule is not None and section is not None and layers:
            raise self.fail(
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
                raise self.fail(where, f"no {key}", example)
        for key in ("curve", "parameter", "amount_type"):
            if key in data and (not isinstance(data[key], str) or not data[key]):
                raise self.fail(
                    where,
                    f"{key} must be a non-empty string, got {_kind(data[key])}",
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
            raise self.fail(where, problem, _SCHEDULE_RULES.get(key, _SCHEDULE_RULES[""])) from None
        del settings["per_tensor"]
        return ScheduleSection(**settings, parameter=data.get("parameter", "amount"))

    def global_section(self, value: object) -> GlobalSection:
        where = "global"
        data = self.table(value, where, f"write [global] followed by {_CRITERIA_EXAMPLE}")
        self.keys(data, GLOBAL_KEYS, where)
        strategy = data.get("strategy", "global_unstructured")
        if strategy not in STRATEGIES:
            raise self.fail(
                where,
                f"unknown strategy {strategy!r}",
                f"use one of {', '.join(map(repr, STRATEGIES))}",
            )
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
        module_type = ()
        if "module_type" in data:
            module_type = self.type_names(data["module_type"], where, "module_type")
        if not match and not module_type:
            raise self.fail(
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
            raise self.fail(
                where,
                f"{key} must be a string or a list of strings, got {value!r}",
                f'write {key} = "features.*" or {key} = ["a.*", "b"]',
            )
        return tuple(items)

    def type_names(self, value: object, where: str, key: str) -> tuple[str, ...]:
        names = self.strings(value, where, key)
        if not names:
            raise self.fail(
                where, f"{key} is empty", f'name at least one class, e.g. {key} = ["Linear"]'
            )
        for name in names:
            try:
                _module_type(name)
            except LookupError as exc:
                raise self.fail(
                    where,
                    f"{key}: {exc}",
                    f"{_close(name, _torch_module_names())}use the name of a torch.nn class "
                    "(Linear, Conv2d, ...) or the dotted import path of your own class "
                    "(mypackage.layers.MyBlock)",
                ) from None
        return names

    def tensor(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(
                where,
                f"tensor must be a parameter name, got {value!r}",
                'write tensor = "weight" (the default) or tensor = "bias"',
            )
        return value

    def criteria(
        self, data: Mapping[str, Any], where: str, *, strategy: str | None
    ) -> tuple[CriterionSpec, ...]:
        if "criteria" not in data:
            raise self.fail(where, "no criteria", f"add {_CRITERIA_EXAMPLE}")
        value = data["criteria"]
        if not isinstance(value, list) or not value:
            raise self.fail(
                where,
                f"criteria must be a non-empty list, got {value!r}",
                f"write {_CRITERIA_EXAMPLE}",
            )
        if self.schedule is not None and len(value) > 1:
            raise self.fail(
                where,
                f"{len(value)} criteria in a scheduled recipe; the schedule steers one "
                "criterion per section or rule",
                "keep the criterion the schedule steers, and apply the others with a "
                "separate recipe",
            )
        return tuple(
            self.criterion(item, where, index, strategy) for index, item in enumerate(value, 1)
        )

    def criterion(
        self, item: object, where: str, index: int, strategy: str | None
    ) -> CriterionSpec:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise self.fail(
                where,
                f"criterion #{index} is {item!r}; a criterion is a table with a name",
                'write { name = "magnitude", amount = 0.5 }',
            )
        name = item["name"]
        params = {key: value for key, value in item.items() if key != "name"}
        what = f"criterion #{index}"
        if name not in self.registry:
            known = self.registry.names()
            raise self.fail(
                where,
                f"{what}: unknown criterion {name!r}",
                f"{_close(name, known)}known criteria: {', '.join(known)} (install the plugin "
                "that provides it, or check PRUNEFW_DISABLED_PLUGINS)",
            )
        cls = self.registry.get(name)
        what = f"{what} {name!r}"
        signature = _signature(cls)
        probe = params
        if self.schedule is not None:
            probe = self.scheduled_parameters(cls, signature, params, where, what)
        self.check_parameters(cls, signature, probe, where, what)
        try:
            built = cls(**probe)
        except (PrunefwError, ValueError, TypeError) as exc:
            raise self.fail(
                where,
                f"{what}: bad parameters: {exc}",
                f"give valid values: {_usage(name, signature)}",
            ) from None
        if strategy is not None and built.PRUNING_TYPE != "unstructured":
            raise self.fail(
                where,
                f"{what} has PRUNING_TYPE {built.PRUNING_TYPE!r}; the global section ranks "
                "all tensors together and takes 'unstructured' criteria only",
                "move it to a [[layer]] rule",
            )
        if strategy == "streaming" and type(built).rank_selection is (
            PruningCriterion.rank_selection
        ):
            raise self.fail(
                where,
                f"{what} does not support strategy = 'streaming' (no rank_selection())",
                "remove the strategy key to use 'global_unstructured'",
            )
        return CriterionSpec(name, params)

    def scheduled_parameters(
        self,
        cls: type[PruningCriterion],
        signature: inspect.Signature | None,
        params: dict[str, Any],
        where: str,
        what: str,
    ) -> dict[str, Any]:
        """``params`` plus the scheduled parameter at zero, after checking it can be set."""
        assert self.schedule is not None
        key = self.schedule.parameter
        if key in params:
            raise self.fail(
                where,
                f"{what} sets {key} = {params[key]!r}, but the [schedule] sets {key} at every "
                "pruning event",
                f"remove {key} from the criterion; final_sparsity in [schedule] says how far "
                "to prune",
            )
        if signature is not None:
            names, takes_any = _keywords(signature)
            if key not in names and not takes_any:
                raise self.fail(
                    where,
                    f"{what} has no parameter {key!r} for the [schedule] to set",
                    f"{_close(key, names)}set parameter in [schedule] to the keyword of the "
                    f"criterion's amount: {_usage(cls.name, signature)}",
                )
        return {**params, key: self.schedule.probe()}

    def check_parameters(
        self,
        cls: type[PruningCriterion],
        signature: inspect.Signature | None,
        params: dict[str, Any],
        where: str,
        what: str,
    ) -> None:
        if signature is None:
            return
        accepted, var_keyword = _keywords(signature)
        for key in params:
            if key not in accepted and not var_keyword:
                raise self.fail(
                    where,
                    f"{what}: unknown parameter {key!r}",
                    f"{_close(key, accepted)}the criterion takes {_usage(cls.name, signature)}",
                )
        try:
            signature.bind(**params)
        except TypeError as exc:
            raise self.fail(
                where, f"{what}: {exc}", f"write {_usage(cls.name, signature)}"
            ) from None


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
    """``"percentile(lower, upper)"``: how a criterion is written in a recipe."""
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


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


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
        raise _fail(source, "file", f"cannot read the recipe: {reason}", "check the path") from None
    return Recipe.from_toml(text, source=source, registry=registry)


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

    Returns:
        The contexts that were applied, in order (record them with
        :meth:`prunefw.history.PruningHistory.from_contexts`).

    Raises:
        RecipeError: The recipe does not fit the model (see :meth:`Recipe.resolve`),
            or a criterion needs calibration data and none was given.
        PrunefwError: A context or criterion refused the model (the model is
            unchanged).
    """
    if not isinstance(recipe, Recipe):
        raise InvalidTypeError(f"apply_recipe() expects a Recipe, got {recipe!r}")
    if recipe.schedule is not None:
        raise _fail(
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
        ctx = GlobalPruningContext(
            model, criteria, parameters=pairs, strategy=recipe.global_section.strategy
        )
        contexts.append((ctx, "global"))
    layer_items = []
    for rule, targets in resolved.layer_targets:
        criteria = tuple(spec.build(registry) for spec in rule.criteria)
        layer_items.extend((rule, target, criteria) for target in targets)
    if any(c.requires_calibration for _, _, criteria in layer_items for c in criteria):
        mapping = {(t.module, t.name): criteria for _, t, criteria in layer_items}
        contexts.append((LayerPruningContext(mapping, model=model), "layer rules"))
    else:
        for rule, target, criteria in layer_items:
            ctx = LayerPruningContext({(target.module, target.name): criteria}, model=model)
            contexts.append((ctx, rule.label))

    needing = [
        (where, spec)
        for where, spec in recipe.criteria()
        if registry.get(spec.name).requires_calibration
    ]
    if needing and calibration_data is None:
        where, spec = needing[0]
        raise _fail(
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
            if batches is not None and _needs_calibration(ctx):
                total = len(batches) if isinstance(batches, Sized) else None
                data = track(batches, "calibration", total)
            try:
                ctx.prune(data, forward=forward)
            except Exception as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"in {recipe.source} [{where}]")
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
    amount that lands the curve's target. Every check of :meth:`Recipe.resolve` runs
    here, before any training step.

    Args:
        model: The model to prune (not modified here; :meth:`GradualPruner.step`
            prunes it).
        recipe: A recipe with a ``[schedule]`` section.

    Returns:
        The pruner; call its ``step()`` once per optimizer step (pass
        ``calibration_data`` to ``step()`` for criteria that need activations).

    Raises:
        RecipeError: The recipe has no ``[schedule]``, or does not fit the model.
        InvalidTypeError: ``recipe`` is not a :class:`Recipe`.

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
        raise _fail(
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
    plan = [
        ((target.module, target.name), rule.criteria[0])
        for rule, targets in resolved.layer_targets
        for target in targets
    ]

    def layer_context(amounts: Mapping[tuple[nn.Module, str], float | int]) -> PruningContext:
        criteria = {pair: spec.build(registry, **{key: amounts[pair]}) for pair, spec in plan}
        return LayerPruningContext(criteria, model=model)

    return pruner(layer_context, per_tensor=True)


def _needs_calibration(ctx: PruningContext) -> bool:
    criteria: Iterable[PruningCriterion]
    if isinstance(ctx, GlobalPruningContext):
        criteria = ctx.criteria
    elif isinstance(ctx, LayerPruningContext):
        criteria = [crit for _, crits in ctx.plan for crit in crits]
    else:  # pragma: no cover - apply_recipe builds only these two
        criteria = []
    return any(crit.requires_calibration for crit in criteria)
