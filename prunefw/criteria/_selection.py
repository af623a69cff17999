"""Exact k-selection on score vectors, without ``torch.quantile`` or a full sort.

Tie rule (used by every built-in criterion): among entries with equal scores, the
one at the lower flat index counts as *smaller*. So "the k smallest" is always
exactly k entries, and it is deterministic.
"""

from __future__ import annotations

import torch

__all__ = ["at_least", "largest_k", "smallest_k"]


def smallest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mark the ``k`` smallest entries of ``scores``.

    Args:
        scores: Any-shaped tensor of real scores without NaN.
        k: How many entries to mark, ``0 <= k <= scores.numel()``.

    Returns:
        A bool tensor of ``scores``' shape with exactly ``k`` ``True`` entries.
        Ties at the boundary go to the lower flat indices.

    Example:
        >>> smallest_k(torch.tensor([3.0, 1.0, 2.0, 1.0]), 2)
        tensor([False,  True, False,  True])
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be in [0, {n}]")
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    boundary = torch.kthvalue(flat, k).values
    selected = flat < boundary
    missing = k - int(selected.sum())
    if missing:
        tied = (flat == boundary).nonzero().squeeze(1)[:missing]
        selected[tied] = True
    return selected.view(scores.shape)


def largest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mark the ``k`` largest entries of ``scores``.

    Args:
        scores: Any-shaped tensor of real scores without NaN.
        k: How many entries to mark, ``0 <= k <= scores.numel()``.

    Returns:
        A bool tensor with exactly ``k`` ``True`` entries: the complement of the
        ``n - k`` smallest, so ties at the boundary go to the higher flat indices.

    Example:
        >>> largest_k(torch.tensor([3.0, 1.0, 2.0, 3.0]), 1)
        tensor([False, False, False,  True])
    """
    return ~smallest_k(scores, scores.numel() - k)


def at_least(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mark ``scores >= threshold`` exactly, whatever the scores' dtype.

    Comparing with a Python float rounds the threshold to the tensor's dtype first
    (in bfloat16, 0.501 becomes 0.5), which would keep entries below it. Here the
    threshold is rounded once and, if it was rounded down, entries equal to the
    rounded value are excluded: no representable value lies between the two.

    Args:
        scores: Real scores.
        threshold: The exact threshold.

    Returns:
        A bool tensor of ``scores``' shape.

    Example:
        >>> at_least(torch.tensor([0.5, 0.5078125], dtype=torch.bfloat16), 0.501)
        tensor([False,  True])
    """
    rounded = torch.tensor(threshold, dtype=scores.dtype, device=scores.device)
    keep = scores >= rounded
    if float(rounded) < threshold:
        keep &= scores != rounded
    return keep
