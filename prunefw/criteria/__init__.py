"""Pruning criteria: the base class and the built-in criteria."""

from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.criteria.ln_structured import LnStructuredCriterion
from prunefw.criteria.magnitude import MagnitudeCriterion
from prunefw.criteria.percentile import PercentileCriterion
from prunefw.criteria.random import RandomCriterion
from prunefw.criteria.row_magnitude import RowMagnitudeCriterion

__all__ = [
    "LnStructuredCriterion",
    "MagnitudeCriterion",
    "PercentileCriterion",
    "PruningCriterion",
    "RandomCriterion",
    "RankSelection",
    "RowMagnitudeCriterion",
]
