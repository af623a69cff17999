"""Masks -> channels: which whole output and input channels the masks remove.

:func:`prune_channel_biases` prunes the biases of the output channels whose weights are
all pruned, so that removing those channels changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw._rollback import rollback_on_error
from prunefw.reparametrization import (
    install_deepcopy_support,
    iter_pruned_tensors,
    mask_of,
    original_of,
    qualified_names,
    release_mask_reference,
)
from prunefw.shrink._report import NothingToShrinkError, NotStructuredError, ShrinkError

__all__ = ["prune_channel_biases"]


def _alive_channels(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which output (dim 0) and input (dim 1) channels of a weight keep any entry."""
    rows = keep.reshape(keep.shape[0], -1).any(1)
    cols = keep.transpose(0, 1).reshape(keep.shape[1], -1).any(1)
    return rows, cols


def _whole_channels(keep: torch.Tensor, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dead output and input channels of a keep-mask that prunes whole channels only."""
    rows, cols = _alive_channels(keep)
    view = [1] * keep.dim()
    expected = rows.view(-1, *view[1:]) & cols.view(1, -1, *view[2:])
    partial = keep != expected.expand_as(keep)
    if bool(partial.any()):
        where = tuple(int(v) for v in partial.nonzero()[0])
        raise NotStructuredError(
            f"{label}: its mask prunes {int(partial.sum())} entries that are not whole output "
            f"or input channels (e.g. entry {where}, whose channels keep other entries); "
            "shrink removes whole channels only: prune them with a structured criterion "
            "such as LnStructuredCriterion (layer context)"
        )
    return ~rows, ~cols


@dataclass
class _Root:
    """A Linear or convolution whose masks remove channels, and which ones (current indices)."""

    label: str
    module: nn.Module
    dead_out: torch.Tensor  # bool per output channel
    dead_in: torch.Tensor  # bool per input channel


def _roots(model: nn.Module) -> list[_Root]:
    pruned = list(iter_pruned_tensors(model))
    if not pruned:
        raise NothingToShrinkError(
            f"{type(model).__name__} has no pruning masks: nothing to shrink. Prune whole "
            "channels first, e.g. LayerPruningContext({layer: LnStructuredCriterion(0.5)})"
        )
    roots: dict[int, _Root] = {}
    biases: list[tuple[str, nn.Module, torch.Tensor]] = []
    for qualname, module, name in pruned:
        label = f"{qualname}.{name}" if qualname else name
        keep = mask_of(module, name)
        assert keep is not None
        keep = keep != 0
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or isinstance(
            module, nn.modules.conv._ConvTransposeNd
        ):
            raise ShrinkError(
                f"{label}: shrink removes channels of nn.Linear and convolution layers; this "
                f"tensor belongs to a {type(module).__name__}"
            )
        if name == "bias":
            biases.append((label, module, keep))
            continue
        if name != "weight":
            raise NotStructuredError(f"{label}: shrink reads the masks of weights and biases only")
        dead_out, dead_in = _whole_channels(keep, label)
        grouped = isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1
        if grouped and bool(dead_in.any()):
            raise ShrinkError(
                f"{label}: input channels of a grouped convolution (groups="
                f"{module.groups}) cannot be removed on their own"
            )
        roots[id(module)] = _Root(label, module, dead_out, dead_in)
    for label, module, keep in biases:
        root = roots.get(id(module))
        dead = root.dead_out if root is not None else torch.zeros_like(keep)
        if bool((~keep & ~dead).any()):
            index = int((~keep & ~dead).nonzero()[0])
            raise NotStructuredError(
                f"{label}: its mask prunes entry {index}, but that output channel's weights are "
                "not all pruned, so the channel is not removed"
            )
    return [root for root in roots.values() if bool(root.dead_out.any() or root.dead_in.any())]


def _bias_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module.bias`` (pruned or not)."""
    bias = getattr(module, "bias")  # noqa: B009 - a Tensor attribute, typed as Tensor | Module
    assert isinstance(bias, torch.Tensor)
    return bias.dtype


def prune_channel_biases(model: nn.Module) -> list[str]:
    """Prune the bias entries of the output channels whose weights are entirely pruned.

    A channel whose weights are all pruned still outputs its bias (``act(bias)``
    after an activation), so the masked model depends on it and :func:`shrink`
    refuses to remove it. This prunes those bias entries with
    :func:`torch.nn.utils.prune.custom_from_mask` (torch's reparametrization, on top
    of any earlier bias mask): the model's outputs change as if the channels were
    gone, which is what shrinking then reproduces exactly.

    Args:
        model: A model pruned with whole output channels (e.g.
            :class:`~prunefw.LnStructuredCriterion` with ``dim=0``).

    Returns:
        The biases pruned (``"module.bias"``), in model order.

    Example:
        >>> from torch import nn
        >>> from prunefw import LayerPruningContext, LnStructuredCriterion
        >>> layer = nn.Linear(4, 6)
        >>> LayerPruningContext({layer: LnStructuredCriterion(amount=2)}).prune()
        >>> prune_channel_biases(layer)
        ['bias']
        >>> int((layer.bias_mask == 0).sum())
        2
    """
    todo: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = qualified_names(model)
    for module in model.modules():
        keep = mask_of(module, "weight")
        bias = module._parameters.get("bias")
        if keep is None or (bias is None and original_of(module, "bias") is None):
            continue
        rows = (keep != 0).reshape(keep.shape[0], -1).any(1)
        current = module.bias
        if isinstance(current, torch.Tensor) and bool((current.detach()[~rows] != 0).any()):
            label = f"{names[id(module)]}.bias" if names[id(module)] else "bias"
            todo.append((label, module, rows))
    with rollback_on_error(module for _, module, _ in todo):
        for _, module, rows in todo:
            prune.custom_from_mask(module, "bias", rows.to(_bias_dtype(module)))
            release_mask_reference(module, "bias")
            install_deepcopy_support(module)
    return [label for label, _, _ in todo]
