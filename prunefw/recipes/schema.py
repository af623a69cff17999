"""What a recipe is: frozen dataclasses for the recipe, its sections and its criteria.

:class:`Recipe` holds a validated recipe; :meth:`Recipe.from_dict` and
:meth:`Recipe.from_toml` build one through :mod:`prunefw.recipes.parse`, and
:meth:`Recipe.resolve` finds its tensors in a model through
:mod:`prunefw.recipes.resolve` (both modules build these classes, so they are
imported where they are called).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunefw.criteria.base import PruningCriterion, format_call
from prunefw.registry import CriterionRegistry, default_registry
from prunefw.targets import PruningTarget

__all__ = [
    "GLOBAL_KEYS",
    "LAYER_KEYS",
    "SCHEDULE_KEYS",
    "TOP_KEYS",
    "CriterionSpec",
    "GlobalSection",
    "LayerRule",
    "Recipe",
    "ResolvedRecipe",
    "ScheduleSection",
]

#: Keys of a recipe, of its ``[global]`` section, of a ``[[layer]]`` rule and of
#: its ``[schedule]`` section.
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

        Args:
            registry: Where :attr:`name` is looked up.
            **overrides: Keyword arguments that replace or add to :attr:`params`
                (a ``[schedule]`` sets the amount this way).

        Returns:
            The criterion.
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
            dotted path, see :mod:`prunefw.recipes.module_types`); ``None`` means
            the global context's default (Linear and convolutions).
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


def _one_or_list(values: tuple[str, ...]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


@dataclass(frozen=True)
class ScheduleSection:
    """The ``[schedule]`` section: prune gradually instead of at once.

    With a schedule, the recipe's criteria are applied by a
    :class:`~prunefw.GradualPruner` (see :func:`~prunefw.recipes.gradual_pruner`)
    that sets each criterion's ``parameter`` at every pruning event, so that the
    sparsity of the selected tensors follows the curve. The other attributes are
    the pruner's arguments of the same names.

    Attributes:
        final_sparsity: The sparsity from ``end_step`` on.
        end_step: The last pruning event.
        initial_sparsity: The sparsity at ``start_step``.
        start_step: The first pruning event.
        frequency: Steps between pruning events.
        curve: ``"cubic"``, ``"linear"`` or ``"constant"``.
        parameter: The criterion keyword the schedule sets (``"amount"`` for
            ``magnitude``, ``"prune_ratio"`` for ``random``).
        amount_type: What ``parameter`` receives: ``"fraction"`` (of what
            remains), ``"count"`` or ``"sparsity"``.

    Example:
        >>> section = ScheduleSection(final_sparsity=0.9, end_step=100, amount_type="count")
        >>> section.to_dict(), section.validation_amount
        ({'final_sparsity': 0.9, 'end_step': 100, 'amount_type': 'count'}, 0)
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

    @property
    def validation_amount(self) -> float | int:
        """The ``parameter`` value a criterion is built with when the recipe is checked.

        Zero, of the type the schedule will pass: ``0`` for ``"count"``, else ``0.0``.
        """
        return 0 if self.amount_type == "count" else 0.0


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
    """A validated pruning recipe.

    Build it with :func:`~prunefw.recipes.load_recipe`, :meth:`from_toml` or
    :meth:`from_dict`; prune with :func:`~prunefw.recipes.apply_recipe` (or
    :func:`~prunefw.recipes.gradual_pruner` if it has a ``[schedule]``).

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
            >>> from prunefw.errors import RecipeError
            >>> try:
            ...     Recipe.from_dict({"global": {"criteria": ["magnitud"]}}, source="r.toml")
            ... except RecipeError as err:
            ...     print(str(err).split(". Fix: ")[0])
            ...     print(str(err).split(". Fix: ")[1][:25])
            r.toml: [global] criterion #1: unknown criterion 'magnitud'
            did you mean 'magnitude'?
        """
        from prunefw.recipes.parse import parse_recipe

        return parse_recipe(data, source=source, registry=registry)

    @classmethod
    def from_toml(
        cls, text: str, *, source: str = "<recipe>", registry: CriterionRegistry | None = None
    ) -> Recipe:
        """Parse and validate a recipe from TOML text (see :meth:`from_dict`).

        Args:
            text: The TOML document.
            source: Name of the recipe in messages (the file name).
            registry: Where criterion names are looked up.

        Returns:
            The recipe.

        Raises:
            RecipeError: Invalid TOML, or an invalid recipe.
        """
        from prunefw.recipes.parse import parse_toml

        return parse_toml(text, source=source, registry=registry)

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
        from prunefw.recipes.resolve import resolve_recipe

        return resolve_recipe(self, model)
