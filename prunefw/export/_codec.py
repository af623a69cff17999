"""One weight in the sparse formats: compressing, decompressing, its size, the 2:4 check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import ModuleType

import torch

from ._errors import CompressedCheckpointError


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """A weight as the 2-D ``(rows, entries per row)`` the formats store."""
    return t.reshape(t.shape[0], -1)


def _bitmask_bytes(t: torch.Tensor, kept: int) -> int:
    rows, cols = _as_rows(t).shape
    return kept * t.element_size() + rows * math.ceil(cols / 8) + rows * 8 + t.dim() * 8


def _is_24(keep: torch.Tensor) -> tuple[bool, str]:
    """Whether a keep-mask keeps at most 2 of every 4 consecutive entries of each row."""
    if keep.dim() != 2:
        return False, f"it has {keep.dim()} dimensions (the 2:4 format stores 2-D weights)"
    rows, cols = keep.shape
    if cols % 4:
        return False, f"its rows have {cols} entries, not a multiple of 4"
    counts = keep.reshape(rows, cols // 4, 4).sum(-1)
    bad = (counts > 2).nonzero()
    if len(bad):
        row, group = (int(v) for v in bad[0])
        return False, (
            f"{len(bad)} groups of 4 keep more than 2 entries, e.g. row {row}, columns "
            f"{4 * group}-{4 * group + 3} keep {int(counts[row, group])}"
        )
    return True, ""


def _compress_bitmask(
    value: torch.Tensor, keep: torch.Tensor, helpers: ModuleType
) -> dict[str, torch.Tensor]:
    rows = _as_rows(value)
    keep2 = _as_rows(keep)
    counts = keep2.sum(-1)
    return {
        "shape": torch.tensor(list(value.shape), dtype=torch.int64),
        "compressed": rows[keep2].contiguous(),
        "bitmask": helpers.pack_bitmasks(keep2.contiguous()),
        "row_offsets": torch.cumsum(counts, 0) - counts,
    }


def _pad_24(keep: torch.Tensor) -> torch.Tensor:
    """Keep exactly 2 of every 4: add the first dropped entries of groups that keep fewer."""
    groups = keep.reshape(-1, 4).clone()
    missing = 2 - groups.sum(-1, keepdim=True)
    # rank the dropped entries of each group by position: 1, 2, ... (kept ones get 0)
    order = torch.cumsum((~groups).to(torch.int64), dim=-1) * (~groups)
    groups |= (order > 0) & (order <= missing)
    return groups.reshape(keep.shape)


def _compress_24(
    value: torch.Tensor, keep: torch.Tensor, helpers: ModuleType
) -> dict[str, torch.Tensor]:
    keep2 = _pad_24(keep)
    rows, cols = value.shape
    return {
        "shape": torch.tensor(list(value.shape), dtype=torch.int64).reshape(-1, 1),
        "compressed": value[keep2].reshape(rows, cols // 2).contiguous(),
        "bitmask": helpers.pack_bitmasks(keep2.contiguous()),
    }


def _decompress(
    parts: Mapping[str, torch.Tensor], helpers: ModuleType, label: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the dense weight and its keep-mask from a compressed weight's tensors."""
    shape = [int(v) for v in parts["shape"].flatten().tolist()]
    if not shape or any(v < 0 for v in shape):
        raise CompressedCheckpointError(f"{label}.shape holds {shape}, not a tensor shape")
    rows, cols = shape[0], math.prod(shape[1:])
    packed = parts["bitmask"]
    values = parts["compressed"].flatten()
    if packed.dtype != torch.uint8 or tuple(packed.shape) != (rows, math.ceil(cols / 8)):
        raise CompressedCheckpointError(
            f"{label}.bitmask has shape {tuple(packed.shape)} and dtype {packed.dtype}; a "
            f"weight of shape {tuple(shape)} needs uint8 of shape ({rows}, {math.ceil(cols / 8)})"
        )
    keep = helpers.unpack_bitmasks(packed, [rows, cols])
    kept = int(keep.sum())
    if kept != values.numel():
        raise CompressedCheckpointError(
            f"{label}: the bitmask keeps {kept} entries but {label}.compressed holds "
            f"{values.numel()} values"
        )
    dense = torch.zeros(rows, cols, dtype=values.dtype)
    dense[keep] = values
    return dense.reshape(shape), keep.reshape(shape)
