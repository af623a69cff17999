"""The plugin that registers prunefw's built-ins, through the same hooks as any other plugin."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from prunefw.criteria.base import PruningCriterion
from prunefw.criteria.ln_structured import LnStructuredCriterion
from prunefw.criteria.magnitude import MagnitudeCriterion
from prunefw.criteria.percentile import PercentileCriterion
from prunefw.criteria.random import RandomCriterion
from prunefw.criteria.row_magnitude import RowMagnitudeCriterion
from prunefw.hookspecs import hookimpl
from prunefw.layouts import LinearLayerType

__all__ = ["prunefw_register_criteria", "prunefw_register_linear_layers"]


@hookimpl
def prunefw_register_criteria() -> Sequence[type[PruningCriterion]]:
    """Register the built-in criteria: magnitude, percentile, random, row- and ln-structured."""
    return [
        MagnitudeCriterion,
        PercentileCriterion,
        RandomCriterion,
        RowMagnitudeCriterion,
        LnStructuredCriterion,
    ]


@hookimpl
def prunefw_register_linear_layers() -> Sequence[LinearLayerType]:
    """Register ``nn.Linear`` and Hugging Face's ``Conv1D`` (by name: nothing is imported)."""
    return [
        LinearLayerType(nn.Linear, "out_in"),
        LinearLayerType("transformers.pytorch_utils.Conv1D", "in_out"),
    ]
