"""Hook specifications: the contract between prunefw and its plugins.

A plugin is any module or object with functions marked by :data:`hookimpl` whose
names match the specifications below. Third-party plugins are found through the
``prunefw`` entry-point group of their distribution::

    # pyproject.toml of a plugin distribution
    [project.entry-points.prunefw]
    mycriteria = "prunefw_mycriteria.plugin"

All hooks are named with the ``prunefw_`` prefix. Every hook is documented in
``docs/hooks.md``; a test fails when a hook is added here without documentation.

Example:
    A complete plugin module:

    >>> import torch
    >>> from prunefw import PruningCriterion, hookimpl
    >>> class KeepAll(PruningCriterion):
    ...     name = "keep-all"
    ...     def compute_mask(self, scores, default_mask):
    ...         return torch.ones_like(scores, dtype=torch.bool)
    >>> @hookimpl
    ... def prunefw_register_criteria():
    ...     return [KeepAll]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from prunefw.criteria.base import PruningCriterion
    from prunefw.layouts import LinearLayerType

__all__ = [
    "PROJECT_NAME",
    "hookimpl",
    "hookspec",
    "prunefw_register_criteria",
    "prunefw_register_linear_layers",
]

#: The pluggy project name; also the entry-point group plugins register under.
PROJECT_NAME = "prunefw"

#: Marker for hook specifications (used by prunefw itself).
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Marker for hook implementations: decorate your plugin's hook functions with it.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def prunefw_register_criteria() -> Sequence[type[PruningCriterion]]:
    """Return the criterion classes this plugin provides.

    Called once per plugin manager, when criteria are first needed (never at
    ``import prunefw``). Each returned object must be a subclass of
    :class:`prunefw.PruningCriterion` whose ``name`` class attribute is a valid,
    unique criterion name (lowercase letters, digits, ``_``, ``-`` and ``.``,
    starting with a letter). The built-in criteria are registered through this
    same hook.

    Returns:
        A sequence of criterion classes (an empty sequence is allowed).

    Raises:
        Nothing on purpose: an exception escaping this hook is reported as a
        :class:`prunefw.errors.PluginError` naming the plugin and its distribution.
        Two plugins returning classes with the same ``name`` raise
        :class:`prunefw.errors.CriterionConflictError` naming both distributions.

    Example:
        >>> from prunefw import MagnitudeCriterion, hookimpl
        >>> @hookimpl
        ... def prunefw_register_criteria():
        ...     return [MagnitudeCriterion]
    """
    raise NotImplementedError  # pragma: no cover - specification only


@hookspec
def prunefw_register_linear_layers() -> Sequence[LinearLayerType]:
    """Return the linear-like module types this plugin knows, with their weight layout.

    A linear-like module computes a linear map of its inputs' last dimension with a
    2-D weight, like ``nn.Linear``. Its weight is a default target of
    :class:`prunefw.GlobalPruningContext`, and criteria that see a tensor's shape
    (per-row, N:M) see it as ``(out_features, in_features)`` whatever its storage
    (see :mod:`prunefw.layouts`). prunefw's built-in plugin registers ``nn.Linear``
    (``"out_in"``) and ``transformers.pytorch_utils.Conv1D`` (``"in_out"``, by name,
    without importing transformers).

    Returns:
        A sequence of :class:`prunefw.layouts.LinearLayerType` (may be empty).

    Raises:
        Nothing on purpose: an exception escaping this hook, or a return value that
        is not a sequence of ``LinearLayerType``, is reported as a
        :class:`prunefw.errors.PluginError` naming the plugin and its distribution.

    Example:
        >>> from prunefw import hookimpl
        >>> from prunefw.layouts import LinearLayerType
        >>> @hookimpl
        ... def prunefw_register_linear_layers():
        ...     return [LinearLayerType("bitsandbytes.nn.Linear8bitLt", "out_in")]
    """
    raise NotImplementedError  # pragma: no cover - specification only
