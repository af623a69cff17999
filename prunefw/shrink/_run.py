"""Running the model on ``example_inputs``: the call, its output tensors, tracing with grad."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (tensors, sequences, mappings, ModelOutputs)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (tuple, list)):
        return [t for value in obj for t in _tensors(value)]
    return []


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _grad_for_tracing(model: nn.Module) -> Iterator[None]:
    """Autograd on, every floating Parameter requiring grad (the graph is traced from it)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with torch.enable_grad():
            for p, _ in flags:
                if p.is_floating_point():
                    p.requires_grad_(True)
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
