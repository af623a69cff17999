"""Torch-Pruning's dependency groups: which may be removed, and who consumes their channels.

:func:`_check_group` refuses groups that reach the model's outputs or layers that mix
channels; :func:`_check_consumers` checks on ``example_inputs`` that every removed channel
is zero (or has pruned weights) where it is consumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunefw.shrink._channels import _Root
from prunefw.shrink._report import UnsafeShrinkError
from prunefw.shrink._run import _call

#: Modules that may take part in a removed channel group (per-channel or channel-wise).
_CHANNEL_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.PReLU,
)
#: Element-wise operations (autograd names) that actually mix channels: removing a
#: channel changes their result.
_MIXING = ("Mean", "Sum", "Softmax", "Norm", "Var", "Std", "Sort", "Topk", "Prod", "Amax", "Amin")


@dataclass
class _Consumer:
    label: str
    module: nn.Module
    idxs: list[int]
    root: str


def _check_group(group: Any, graph: Any, root: _Root, names: Mapping[int, str]) -> list[_Consumer]:
    """Refuse groups that reach the outputs or channel-mixing layers; return the consumers."""
    tp_ops = graph.ops
    consumers: list[_Consumer] = []
    for item in group:
        target = item.dep.target
        module = target.module
        if isinstance(module, tp_ops._OutputOp):
            raise UnsafeShrinkError(
                f"{root.label}: its pruned channels are among the model's outputs; removing "
                "them would change the output shape (leave this layer dense, or unpruned)"
            )
        if isinstance(module, tp_ops._ElementWiseOp):
            op = str(module._grad_fn)
            if any(word in op for word in _MIXING) and "Pool" not in op:
                raise UnsafeShrinkError(
                    f"{root.label}: its channels flow into {op}, which combines channels; "
                    "removing them would change its result"
                )
            continue
        if isinstance(
            module,
            (
                tp_ops._ReshapeOp,
                tp_ops._ConcatOp,
                tp_ops._SplitOp,
                tp_ops._SliceOp,
                tp_ops._ExpandOp,
                tp_ops._UnbindOp,
            ),
        ):
            continue
        if not isinstance(module, _CHANNEL_MODULES):
            name = names.get(id(module), "") or getattr(graph, "_param_to_name", {}).get(module, "")
            raise UnsafeShrinkError(
                f"{root.label}: its channels are coupled to {name or 'a tensor'} "
                f"({type(module).__name__}), whose channels shrink cannot remove without "
                "changing the outputs (a normalisation over channels, an embedding, a residual "
                "stream): prune channels that do not reach it"
            )
        is_in = graph.is_in_channel_pruning_fn(item.dep.handler)
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        if is_in and not is_out and isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            consumers.append(
                _Consumer(names.get(id(module), ""), module, list(item.idxs), root.label)
            )
    return consumers


def _pruning_fn(graph: Any, module: nn.Module, out: bool) -> Any:
    pruner = graph.get_pruner_of_module(module)
    return pruner.prune_out_channels if out else pruner.prune_in_channels


def _check_consumers(model: nn.Module, inputs: Any, consumers: Sequence[_Consumer]) -> None:
    """Every removed channel must be zero where it is consumed (or its weights pruned there)."""
    live: dict[int, list[_Consumer]] = {}
    for consumer in consumers:
        weight = consumer.module.get_parameter("weight").detach()
        columns = weight.transpose(0, 1)[consumer.idxs] if weight.dim() > 1 else weight
        if bool((columns != 0).any()):
            live.setdefault(id(consumer.module), []).append(consumer)
    if not live:
        return
    nonzero: dict[tuple[int, int], float] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        for index, consumer in enumerate(live[id(module)]):
            channels = (
                x[..., consumer.idxs] if isinstance(module, nn.Linear) else x[:, consumer.idxs]
            )
            peak = float(channels.detach().abs().max()) if channels.numel() else 0.0
            key = (id(module), index)
            nonzero[key] = max(nonzero.get(key, 0.0), peak)

    modules = {id(c.module): c.module for group in live.values() for c in group}
    handles = [m.register_forward_pre_hook(hook) for m in modules.values()]
    try:
        with torch.no_grad():
            _call(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    for module_id, group in live.items():
        for index, consumer in enumerate(group):
            peak = nonzero.get((module_id, index), 0.0)
            if peak != 0.0:
                raise UnsafeShrinkError(
                    f"{consumer.root}: its pruned channels still reach {consumer.label} with "
                    f"values up to {peak:.3g} on example_inputs (e.g. a bias that is not pruned "
                    "with the weights: act(bias) is not zero), so removing them would change the "
                    "outputs; prune those biases too with prunefw.shrink.prune_channel_biases("
                    "model), or a normalisation's shift, first"
                )
