"""Pruning contexts: global (all tensors ranked together) and layer-wise."""

from prunefw.contexts.base import PruningContext, PruningStep
from prunefw.contexts.global_context import GlobalPruningContext
from prunefw.contexts.layer_context import LayerPruningContext

__all__ = ["GlobalPruningContext", "LayerPruningContext", "PruningContext", "PruningStep"]
