"""The plugin that registers prunefw's built-in criteria, through the same hook as any other."""

from __future__ import annotations

from collections.abc import Sequence

from prunefw.criteria.base import PruningCriterion
from prunefw.criteria.magnitude import MagnitudeCriterion
from prunefw.criteria.percentile import PercentileCriterion
from prunefw.criteria.random import RandomCriterion
from prunefw.hookspecs import hookimpl

__all__ = ["prunefw_register_criteria"]


@hookimpl
def prunefw_register_criteria() -> Sequence[type[PruningCriterion]]:
    """Register ``magnitude``, ``percentile`` and ``random``."""
    return [MagnitudeCriterion, PercentileCriterion, RandomCriterion]
