"""The criterion registry: registered name -> criterion class, built from plugins.

:func:`criterion` and :func:`available_criteria` use a default registry that is
built on first use (never at import) from a fresh
:class:`~prunefw.plugin_manager.PluginManager`, i.e. from the built-in criteria and
every installed plugin. Code that wants its own view (tests, applications that
register plugins in-process) builds a :class:`CriterionRegistry` itself.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prunefw.criteria.base import PruningCriterion
from prunefw.errors import (
    CriterionConflictError,
    InvalidTypeError,
    PluginError,
    UnknownCriterionError,
)
from prunefw.plugin_manager import PluginInfo, PluginManager

__all__ = [
    "CRITERION_NAME_PATTERN",
    "CriterionRegistry",
    "RegisteredCriterion",
    "available_criteria",
    "criterion",
    "default_registry",
]

#: What a registered criterion name looks like.
CRITERION_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.\-]*")


@dataclass(frozen=True)
class RegisteredCriterion:
    """One registry entry: a criterion class and the plugin that provided it.

    Attributes:
        name: The registered name (``cls.name``).
        cls: The criterion class.
        plugin: Where it came from.
    """

    name: str
    cls: type[PruningCriterion]
    plugin: PluginInfo


class CriterionRegistry:
    """An immutable mapping of criterion names to classes.

    Args:
        entries: The entries; names must be valid and unique.

    Raises:
        PluginError: An entry's name is invalid.
        CriterionConflictError: Two entries with different classes share a name.

    Example:
        >>> from prunefw.plugin_manager import PluginManager
        >>> registry = CriterionRegistry.from_plugin_manager(PluginManager(autoload=False))
        >>> registry.names()
        ['ln-structured', 'magnitude', 'percentile', 'random', 'row-magnitude']
        >>> registry.create("magnitude", min_threshold=0.1)
        MagnitudeCriterion(min_threshold=0.1)
    """

    def __init__(self, entries: Iterable[RegisteredCriterion]) -> None:
        self._entries: dict[str, RegisteredCriterion] = {}
        for entry in entries:
            if not CRITERION_NAME_PATTERN.fullmatch(entry.name):
                raise PluginError(
                    f"{entry.plugin.origin} registers {entry.cls.__qualname__} under the "
                    f"invalid name {entry.name!r}; a name is lowercase letters, digits, "
                    "'_', '-' and '.', starting with a letter"
                )
            other = self._entries.get(entry.name)
            if other is not None and other.cls is not entry.cls:
                raise CriterionConflictError(
                    f"criterion name {entry.name!r} is registered twice: by "
                    f"{other.plugin.origin} ({other.cls.__module__}.{other.cls.__qualname__})"
                    f" and by {entry.plugin.origin} "
                    f"({entry.cls.__module__}.{entry.cls.__qualname__}); uninstall or block "
                    "one of them"
                )
            self._entries.setdefault(entry.name, entry)

    @classmethod
    def from_plugin_manager(cls, plugin_manager: PluginManager) -> CriterionRegistry:
        """Build a registry from every plugin's ``prunefw_register_criteria``.

        Args:
            plugin_manager: The plugin manager to ask (it loads entry points first,
                unless autoload is disabled).

        Returns:
            The registry.

        Raises:
            PluginError: A plugin raised, or returned something that is not a
                sequence of :class:`~prunefw.PruningCriterion` subclasses with a name.
            CriterionConflictError: Two plugins registered the same name.
        """
        entries = []
        for result, info in plugin_manager.call_per_plugin("prunefw_register_criteria"):
            if result is None or isinstance(result, (str, bytes)) or not _iterable(result):
                raise PluginError(
                    f"{info.origin}: prunefw_register_criteria must return a sequence of "
                    f"PruningCriterion subclasses, got {result!r}"
                )
            for item in result:
                if not (isinstance(item, type) and issubclass(item, PruningCriterion)):
                    raise PluginError(
                        f"{info.origin}: prunefw_register_criteria returned {item!r}, which "
                        "is not a subclass of prunefw.PruningCriterion"
                    )
                name = getattr(item, "name", None)
                if not isinstance(name, str):
                    raise PluginError(
                        f"{info.origin}: criterion class {item.__qualname__} has no string "
                        f"'name' class attribute (got {name!r})"
                    )
                entries.append(RegisteredCriterion(name, item, info))
        return cls(entries)

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name: str) -> RegisteredCriterion:
        """Return the entry registered under ``name``.

        Raises:
            UnknownCriterionError: No such name; the message lists the known ones.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownCriterionError(
                f"unknown criterion {name!r}; known criteria: {', '.join(self.names())}"
                " (install a plugin that provides it, or check PRUNEFW_DISABLED_PLUGINS)"
            ) from None

    def get(self, name: str) -> type[PruningCriterion]:
        """Return the class registered under ``name``.

        Raises:
            UnknownCriterionError: No such name; the message lists the known ones.
        """
        return self.entry(name).cls

    def create(self, name: str, /, **kwargs: Any) -> PruningCriterion:
        """Build the criterion registered under ``name`` with ``kwargs``.

        Raises:
            UnknownCriterionError: No such name.
            InvalidArgumentError: Bad parameter values (raised by the criterion).
            InvalidTypeError: Unknown or missing parameter names (a ``TypeError``);
                the message lists the parameters the criterion takes.
        """
        cls = self.get(name)
        try:
            signature = inspect.signature(cls)
        except (TypeError, ValueError):  # pragma: no cover - builtins without signature
            return cls(**kwargs)
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise InvalidTypeError(
                f"criterion {name!r} ({cls.__name__}): {exc}; it takes "
                f"{name}({', '.join(map(str, signature.parameters.values()))})"
            ) from None
        return cls(**kwargs)

    def as_dict(self) -> dict[str, type[PruningCriterion]]:
        """Return a new ``{name: class}`` dict, sorted by name."""
        return {name: self._entries[name].cls for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"CriterionRegistry({self.names()})"


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


@functools.cache
def default_registry() -> CriterionRegistry:
    """Return the process-wide registry, building it on first call.

    It is built from a fresh :class:`~prunefw.plugin_manager.PluginManager`, which
    reads ``PRUNEFW_DISABLE_PLUGIN_AUTOLOAD`` and ``PRUNEFW_DISABLED_PLUGINS`` at
    that moment. ``default_registry.cache_clear()`` forgets it (e.g. after
    installing a plugin in a running process).
    """
    return CriterionRegistry.from_plugin_manager(PluginManager())


def criterion(name: str, /, **kwargs: Any) -> PruningCriterion:
    """Build a criterion by its registered name, including plugin-provided ones.

    Args:
        name: Registered name, e.g. ``"magnitude"``.
        **kwargs: The criterion's constructor arguments.

    Returns:
        The criterion, e.g. ``criterion("magnitude", min_threshold=0.1)`` is a
        :class:`~prunefw.MagnitudeCriterion`.

    Raises:
        UnknownCriterionError: No criterion of that name; the message lists the
            known ones.

    Example:
        >>> from prunefw import criterion
        >>> criterion("percentile", lower=0.1, upper=0.9)
        PercentileCriterion(lower=0.1, upper=0.9)
    """
    return default_registry().create(name, **kwargs)


def available_criteria() -> dict[str, type[PruningCriterion]]:
    """Return ``{name: criterion class}`` for every registered criterion.

    Example:
        >>> from prunefw import available_criteria
        >>> {"magnitude", "percentile", "random"} <= set(available_criteria())
        True
    """
    return default_registry().as_dict()
