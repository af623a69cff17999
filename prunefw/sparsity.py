"""Sparsity reports: per-tensor and total counts of zeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunefw._table import format_table
from prunefw.errors import InvalidTypeError
from prunefw.reparametrization import ORIG_SUFFIX, mask_name, pruned_tensor_names

__all__ = ["SparsityReport", "TensorSparsity", "sparsity_report"]


@dataclass(frozen=True)
class TensorSparsity:
    """Sparsity of one tensor.

    Attributes:
        module: Qualified name of the module (``""`` for the model itself).
        name: Tensor name (``"weight"``), also for pruned tensors.
        shape: The tensor's shape.
        numel: Number of entries.
        zeros: Number of entries that are zero in the effective tensor
            (``name_orig * name_mask`` for pruned tensors).
        pruned: Whether the tensor carries torch's pruning reparametrization.
    """

    module: str
    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    pruned: bool

    @property
    def label(self) -> str:
        """``"module.name"``."""
        return f"{self.module}.{self.name}" if self.module else self.name

    @property
    def sparsity(self) -> float:
        """Fraction of zero entries (0.0 for an empty tensor)."""
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-tensor and total sparsity of a model; ``str()`` gives a table.

    Attributes:
        tensors: One entry per reported tensor, in module order.
    """

    tensors: tuple[TensorSparsity, ...]

    @property
    def numel(self) -> int:
        """Total number of entries."""
        return sum(t.numel for t in self.tensors)

    @property
    def zeros(self) -> int:
        """Total number of zero entries."""
        return sum(t.zeros for t in self.tensors)

    @property
    def sparsity(self) -> float:
        """Fraction of zero entries over all reported tensors."""
        return self.zeros / self.numel if self.numel else 0.0

    def __getitem__(self, label: str) -> TensorSparsity:
        """Return the entry for ``"module.name"``, e.g. ``report["fc1.weight"]``."""
        for tensor in self.tensors:
            if tensor.label == label:
                return tensor
        raise KeyError(f"no tensor {label!r} in the report; have {[t.label for t in self.tensors]}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with ``tensors`` and ``total``."""
        return {
            "tensors": [
                {
                    "module": t.module,
                    "name": t.name,
                    "shape": list(t.shape),
                    "numel": t.numel,
                    "zeros": t.zeros,
                    "sparsity": t.sparsity,
                    "pruned": t.pruned,
                }
                for t in self.tensors
            ],
            "total": {"numel": self.numel, "zeros": self.zeros, "sparsity": self.sparsity},
        }

    def __str__(self) -> str:
        rows = [("tensor", "shape", "params", "zeros", "sparsity", "pruned")]
        for t in self.tensors:
            rows.append(
                (
                    t.label,
                    "x".join(map(str, t.shape)) or "scalar",
                    str(t.numel),
                    str(t.zeros),
                    f"{t.sparsity:.2%}",
                    "yes" if t.pruned else "no",
                )
            )
        rows.append(("total", "", str(self.numel), str(self.zeros), f"{self.sparsity:.2%}", ""))
        return format_table(rows, right={2, 3, 4}, rules_after={0, len(rows) - 2})


def zero_count(tensor: torch.Tensor) -> int:
    """How many entries of ``tensor`` are zero, over all ranks for a DTensor.

    ``int()`` of a reduced DTensor (a partial sum) is this rank's share only; a
    DTensor's count is summed over its ranks (a collective: every rank must call).

    Example:
        >>> zero_count(torch.tensor([0.0, 1.0, 0.0]))
        2
    """
    count = (tensor == 0).sum()
    full_tensor = getattr(count, "full_tensor", None)  # a DTensor
    return int(full_tensor() if callable(full_tensor) else count)


@torch.no_grad()
def sparsity_report(model: nn.Module, *, pruned_only: bool = False) -> SparsityReport:
    """Count the zeros of every parameter of ``model``.

    For a pruned tensor the effective value ``name_orig * name_mask`` is counted
    (computed now, so it is current even before the next forward) and reported
    under ``name``. For a sharded model (DTensor parameters) the counts are global,
    the same on every rank; it is then a collective that every rank calls.

    Args:
        model: Any module.
        pruned_only: Report only tensors that carry a pruning reparametrization.

    Returns:
        The report.

    Example:
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> layer = prune.l1_unstructured(nn.Linear(4, 4), "weight", amount=0.25)
        >>> report = sparsity_report(layer, pruned_only=True)
        >>> report["weight"].zeros, report.sparsity
        (4, 0.25)
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"sparsity_report() expects an nn.Module, got {model!r}")
    entries = []
    seen: set[int] = set()  # a Parameter shared by several modules (tied weights) counts once
    for module_name, module in model.named_modules():
        pruned = set(pruned_tensor_names(module))
        own = sorted(module.named_parameters(recurse=False), key=lambda item: item[0])
        for param_name, param in own:
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = param_name
            tensor = param
            base = param_name.removesuffix(ORIG_SUFFIX)
            if base != param_name and base in pruned:
                name = base
                tensor = param * getattr(module, mask_name(name))
            elif pruned_only:
                continue
            entries.append(
                TensorSparsity(
                    module=module_name,
                    name=name,
                    shape=tuple(tensor.shape),
                    numel=tensor.numel(),
                    zeros=zero_count(tensor),
                    pruned=name in pruned,
                )
            )
    return SparsityReport(tuple(entries))
