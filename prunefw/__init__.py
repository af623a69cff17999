"""prunefw: plugin-extensible pruning for PyTorch, built on ``torch.nn.utils.prune``.

Criteria are pluggy plugins found through the ``prunefw`` entry-point group; each
is adapted to a :class:`torch.nn.utils.prune.BasePruningMethod`, so the global
context runs on :func:`torch.nn.utils.prune.global_unstructured`, the layer context
on :func:`torch.nn.utils.prune.custom_from_mask`, and the result is torch's own
reparametrization (``weight_orig``, ``weight_mask``, forward pre-hook).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunefw import GlobalPruningContext, MagnitudeCriterion, make_permanent
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> GlobalPruningContext(model, [MagnitudeCriterion(amount=0.5)]).prune()
    >>> torch.nn.utils.prune.is_pruned(model)
    True
    >>> _ = make_permanent(model)
    >>> torch.nn.utils.prune.is_pruned(model)
    False
"""

from prunefw._version import __version__
from prunefw.checkpoint import load_pruned_state_dict
from prunefw.contexts import (
    GlobalPruningContext,
    LayerPruningContext,
    PruningContext,
    PruningStep,
)
from prunefw.criteria import (
    LnStructuredCriterion,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
    RankSelection,
    RowMagnitudeCriterion,
)
from prunefw.errors import PrunefwError
from prunefw.hookspecs import hookimpl
from prunefw.oneshot import prune_model
from prunefw.permanence import make_permanent
from prunefw.registry import available_criteria, criterion
from prunefw.schedule import GradualPruner
from prunefw.sequential import prune_sequential
from prunefw.shrink import shrink
from prunefw.sparsity import SparsityReport, TensorSparsity, sparsity_report

__all__ = [
    "GlobalPruningContext",
    "GradualPruner",
    "LayerPruningContext",
    "LnStructuredCriterion",
    "MagnitudeCriterion",
    "PercentileCriterion",
    "PrunefwError",
    "PruningContext",
    "PruningCriterion",
    "PruningStep",
    "RandomCriterion",
    "RankSelection",
    "RowMagnitudeCriterion",
    "SparsityReport",
    "TensorSparsity",
    "__version__",
    "available_criteria",
    "criterion",
    "hookimpl",
    "load_pruned_state_dict",
    "make_permanent",
    "prune_model",
    "prune_sequential",
    "shrink",
    "sparsity_report",
]
