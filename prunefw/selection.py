"""Exact k-selection on score vectors, without ``torch.quantile`` or a full sort.

Tie rule (used by every built-in criterion): among entries with equal scores, the
one at the lower flat index counts as *smaller*. So "the k smallest" is always
exactly k entries, and it is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

__all__ = [
    "at_least",
    "float_keys",
    "largest_k",
    "select_kth",
    "smallest_k",
    "smallest_k_per_row",
]

_DIGIT_BITS = 16
_BUCKETS = 1 << _DIGIT_BITS
# Vectors up to this size use torch.kthvalue; larger ones a radix select in chunks,
# which needs no copy of the whole vector (kthvalue copies it) and runs faster.
_KTHVALUE_MAX = 1 << 20
_CHUNK = 1 << 22


def float_keys(scores: torch.Tensor, bits: int, non_negative: bool) -> torch.Tensor:
    """Map floats to integers of width ``bits`` with the same order.

    ``scores`` must be a private tensor: it may be modified in place. With
    ``non_negative`` (magnitudes) the bits of a float already order like it.
    Otherwise ``-0.0`` becomes ``+0.0`` (so both get one key) and the lower bits of
    negative values are flipped, which makes their order ascending.
    """
    int_dtype = torch.int64 if bits == 64 else torch.int32
    keys = scores.view(int_dtype)
    if not non_negative:
        scores.add_(0.0)  # -0.0 + 0.0 == +0.0
        keys = torch.where(keys < 0, keys ^ ((1 << (bits - 1)) - 1), keys)
    return keys


def select_kth(
    source: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor | None]]],
    k: int,
    bits: int,
) -> tuple[int, int]:
    """Find the k-th smallest key (1-based) over all survivors, by radix select.

    Args:
        source: Returns a fresh iterator of ``(keys, survivors)`` per target; called
            once per pass.
        k: Rank to find, ``1 <= k <= number of survivors``.
        bits: Width of the keys (32 or 64).

    Returns:
        ``(key, count_less)``: the k-th smallest key and how many keys are smaller.
    """
    high: int | None = None  # the signed value of the digits fixed so far
    count_less = 0
    for level in range(bits // _DIGIT_BITS):
        shift = bits - _DIGIT_BITS * (level + 1)
        histogram: torch.Tensor | int = 0
        for keys, survivors in source():
            candidates = keys if survivors is None else keys[survivors]
            if high is not None:
                candidates = candidates[(candidates >> (shift + _DIGIT_BITS)) == high]
            digits = candidates >> shift
            if level == 0:
                digits += _BUCKETS >> 1  # signed top digit -> 0 .. 65535
            else:
                digits &= _BUCKETS - 1
            histogram += torch.bincount(digits, minlength=_BUCKETS)
        assert isinstance(histogram, torch.Tensor), "select_kth needs at least one key"
        cumulative = histogram.cumsum(0)
        rank = torch.tensor([k - count_less], device=cumulative.device)
        digit = int(torch.searchsorted(cumulative, rank)[0])
        count_less += int(cumulative[digit - 1]) if digit else 0
        high = digit - (_BUCKETS >> 1) if high is None else (high << _DIGIT_BITS) | digit
    assert high is not None
    return high, count_less


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
    if n > _KTHVALUE_MAX and flat.is_floating_point():
        return _smallest_k_radix(flat, k).view(scores.shape)
    boundary = torch.kthvalue(flat, k).values
    selected = flat < boundary
    missing = k - int(selected.sum())
    if missing:
        tied = (flat == boundary).nonzero().squeeze(1)[:missing]
        selected[tied] = True
    return selected.view(scores.shape)


def smallest_k_per_row(
    scores: torch.Tensor, k: int, alive: torch.Tensor | None = None
) -> torch.Tensor:
    """Mark ``k`` entries to prune in every row of a 2-D tensor, already-pruned ones first.

    The selection of the per-row criteria (``row-magnitude``, Wanda) and, with rows
    of ``m`` entries (``scores.reshape(-1, m)``), of N:M criteria. Every row is
    ranked ascending by (alive, score, column index): entries already pruned
    (``alive`` 0/False) come first, then the surviving entries by score, and among
    equal scores the lower column index first. The first ``k`` of that ranking are
    marked, and every already-pruned entry is marked too, so a row ends with
    ``max(k, already pruned)`` marked entries and no already-pruned entry is ever
    left unmarked.

    Args:
        scores: A 2-D tensor of real scores without NaN, one row per comparison
            group.
        k: How many entries each row should have marked, ``0 <= k <= scores.shape[1]``.
        alive: The current mask, same shape (nonzero/True = not pruned yet);
            ``None``: nothing is pruned yet.

    Returns:
        A bool tensor of ``scores``' shape, ``True`` where an entry is to be pruned;
        ``~result`` is the keep-mask.

    Raises:
        ValueError: ``scores`` is not 2-D, ``alive`` has another shape, or ``k`` is
            out of range.

    Example:
        >>> scores = torch.tensor([[0.3, 0.1, 0.2, 0.1], [4.0, 3.0, 2.0, 1.0]])
        >>> smallest_k_per_row(scores, 2)
        tensor([[False,  True, False,  True],
                [False, False,  True,  True]])

        An already-pruned entry counts towards its row's ``k``, whatever its score:

        >>> alive = torch.tensor([[1.0, 1, 1, 1], [0, 1, 1, 1]])
        >>> smallest_k_per_row(scores, 2, alive)
        tensor([[False,  True, False,  True],
                [ True, False, False,  True]])
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D (one row per group), got shape {tuple(scores.shape)}")
    length = scores.shape[1]
    if not 0 <= k <= length:
        raise ValueError(f"k={k} must be in [0, {length}] (the row length)")
    if alive is not None and alive.shape != scores.shape:
        raise ValueError(
            f"alive has shape {tuple(alive.shape)}, scores have shape {tuple(scores.shape)}"
        )
    survives = None if alive is None else alive != 0
    marked = (
        torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        if survives is None
        else ~survives
    )
    if k == 0 or scores.numel() == 0:
        return marked
    # Ascending by score; stable, so among equal scores the lower index comes first.
    order = torch.sort(scores, dim=1, stable=True).indices
    if survives is not None and not bool(survives.all()):
        # Then stably by survival: already-pruned entries move in front of every
        # survivor (they use up the row's k first), survivors keep their score order.
        by_survival = torch.sort(survives.gather(1, order).to(torch.uint8), dim=1, stable=True)
        order = order.gather(1, by_survival.indices)
    return marked.scatter_(1, order[:, :k], True)


def _smallest_k_radix(flat: torch.Tensor, k: int) -> torch.Tensor:
    """``smallest_k`` for a large 1-D float vector: radix select over chunks."""
    bits = 64 if flat.dtype == torch.float64 else 32
    dtype = torch.float64 if bits == 64 else torch.float32
    chunks = flat.split(_CHUNK)
    # No sign bit set anywhere (magnitudes): the bits order like the floats as they are,
    # so float32/float64 chunks are read in place instead of copied and transformed.
    plain = not bool(torch.signbit(flat).any())

    def keys(chunk: torch.Tensor) -> torch.Tensor:
        if plain:
            return float_keys(chunk.to(dtype).contiguous(), bits, non_negative=True)
        return float_keys(chunk.to(dtype, copy=True), bits, non_negative=False)

    key, count_less = select_kth(lambda: ((keys(c), None) for c in chunks), k, bits)
    selected = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
    ties = k - count_less
    for chunk, out in zip(chunks, selected.split(_CHUNK), strict=True):
        chunk_keys = keys(chunk)
        torch.lt(chunk_keys, key, out=out)
        if ties:
            tied = (chunk_keys == key).nonzero().squeeze(1)[:ties]
            out[tied] = True
            ties -= tied.numel()
    return selected


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
