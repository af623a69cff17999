"""Physically smaller models: remove the channels structured pruning zeroed.

Structured pruning (e.g. :class:`~prunefw.LnStructuredCriterion` in the layer
context) zeroes whole channels through masks, so the model computes as if they were
gone but keeps their full size. :func:`shrink` removes them, and everything coupled
to them, with `Torch-Pruning <https://github.com/VainF/Torch-Pruning>`_'s dependency
graph (``torch_pruning.DependencyGraph``, traced from ``example_inputs``): pruning
output channels of ``features.0`` also removes the input channels of the next
convolution; pruning rows of a Llama MLP's ``gate_proj`` also removes the same rows
of ``up_proj`` (multiplied element-wise with it) and columns of ``down_proj``.

The shrunk model computes what the masked model computed. Before changing
anything, :func:`shrink` checks that every removed channel contributes nothing
where it is consumed, on ``example_inputs``: the consumer's weights for that
channel are pruned, or the channel's values are exactly zero there (a channel
with pruned weights but a live bias carries ``act(bias)``, which is not zero:
:func:`prune_channel_biases` prunes those biases too). After shrinking it runs
``example_inputs`` again and compares the outputs with the masked model's, with
:func:`torch.testing.assert_close`'s default tolerance for their dtype (float32:
``rtol=1.3e-6, atol=1e-5``; the matrix products of fewer channels add the same
non-zero terms in a different order). Any failure restores the model exactly.

``torch-pruning`` is an optional extra (``pip install 'prunefw[shrink]'``), imported
only when :func:`shrink` runs.

Note: the top-level ``prunefw.shrink`` is the function; import the other names of
this package with ``from prunefw.shrink import ...``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunefw import LayerPruningContext, LnStructuredCriterion, shrink
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> LayerPruningContext({model[0]: LnStructuredCriterion(amount=0.5)}).prune()
    >>> _ = prune_channel_biases(model)  # the pruned rows' biases too
    >>> x = torch.randn(8, 16)
    >>> expected = model(x)
    >>> _ = shrink(model, x)
    >>> model[0].out_features, model[2].in_features
    (16, 16)
    >>> torch.testing.assert_close(model(x), expected)
"""

from prunefw.shrink._channels import prune_channel_biases
from prunefw.shrink._report import (
    NothingToShrinkError,
    NotStructuredError,
    ShrinkError,
    ShrinkReport,
    UnsafeShrinkError,
)
from prunefw.shrink._shrink import PIP_SHRINK, shrink, shrink_model

__all__ = [
    "PIP_SHRINK",
    "NotStructuredError",
    "NothingToShrinkError",
    "ShrinkError",
    "ShrinkReport",
    "UnsafeShrinkError",
    "prune_channel_biases",
    "shrink",
    "shrink_model",
]
