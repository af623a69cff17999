"""Exact k-selection on score vectors, without ``torch.quantile`` or a full sort.

Tie rule (used by every built-in criterion): among entries with equal scores, the
one at the lower flat index counts as *smaller*. So "the k smallest" is always
exactly k entries, and it is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import torch

from prunefw import _radix
from prunefw._radix import (
    _BUCKETS,
    _DIGIT_BITS,
    ChunkWorkers,
    _DigitScratch,
    collect_window,
    sample_window,
    tie_budgets,
    write_keys,
)

__all__ = [
    "KeySource",
    "Reduce",
    "at_least",
    "float_keys",
    "largest_k",
    "select_kth",
    "select_ranks",
    "smallest_k",
    "write_keys",
    "smallest_k_per_row",
]

# Vectors up to this size use torch.kthvalue; larger ones a radix select in chunks,
# which needs no copy of the whole vector (kthvalue copies it) and runs faster.
_KTHVALUE_MAX = 1 << 20


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


#: Combines this process's histogram of one radix pass with the other processes'
#: (e.g. an all-reduce SUM); see :func:`select_kth`.
Reduce = Callable[[torch.Tensor], torch.Tensor]

#: What :func:`select_kth` reads: called once per pass, returns a fresh iterator of
#: ``(keys, survivors)`` pairs (see :func:`select_kth`).
KeySource = Callable[[], Iterator[tuple[torch.Tensor, "torch.Tensor | None"]]]


def select_kth(
    source: KeySource,
    k: int,
    bits: int,
    *,
    reduce: Reduce | None = None,
) -> tuple[int, int]:
    """Find the k-th smallest key (1-based) over all survivors, by radix select.

    Each pass reads every key once and builds a histogram of one 16-bit digit of the
    keys still in question (``bits // 16`` passes), in fixed-size chunks through
    scratch buffers allocated once, so a pass allocates nothing per key.

    Args:
        source: Returns a fresh iterator of ``(keys, survivors)`` pairs; called once
            per pass. ``keys`` is a 1-D int32 (``bits=32``) or int64 (``bits=64``)
            tensor, ``survivors`` a bool tensor of the same shape (``False``: the
            entry is already pruned and does not count) or ``None`` (all count).
            The iterator may reuse the tensors it yielded once the next pair is
            asked for.
        k: Rank to find, ``1 <= k <= number of survivors``.
        bits: Width of the keys (32 or 64).
        reduce: Applied to every histogram before it is used, once per pass (an
            int64 tensor of shape ``(1, 65536)``; it must return the same shape):
            for a key set split over processes, an all-reduce SUM makes every
            process find the same global k-th key (``k`` is then a global rank).
            ``None``: the identity.

    Returns:
        ``(key, count_less)``: the k-th smallest key and how many keys are smaller.

    Raises:
        ValueError: ``bits`` is not 32 or 64, or fewer than ``k`` survivors.

    Example:
        >>> keys = torch.tensor([7, -3, 5, 5, 0], dtype=torch.int32)
        >>> select_kth(lambda: iter([(keys, None)]), 3, 32)
        (5, 2)
    """
    ((key, count_less),) = select_ranks(source, [k], bits, reduce=reduce)
    return key, count_less


def select_ranks(
    source: KeySource,
    ranks: Sequence[int],
    bits: int,
    *,
    reduce: Reduce | None = None,
) -> list[tuple[int, int]]:
    """:func:`select_kth` for several ranks at once, in the same passes over the keys.

    Ranks whose candidates share a digit prefix share a histogram; each pass builds
    one histogram per distinct prefix, and ``reduce`` is called once per pass on all
    of them stacked (shape ``(number of distinct prefixes, 65536)``).

    Args:
        source: As for :func:`select_kth`.
        ranks: 1-based ranks, each ``1 <= k <= number of survivors``.
        bits: Width of the keys (32 or 64).
        reduce: As for :func:`select_kth`.

    Returns:
        ``(key, count_less)`` for each rank, in order.

    Example:
        >>> keys = torch.tensor([7, -3, 5, 5, 0], dtype=torch.int32)
        >>> select_ranks(lambda: iter([(keys, None)]), [1, 5], 32)
        [(-3, 0), (7, 4)]
    """
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, got {bits}")
    if not ranks:
        return []
    # Per rank: the signed value of the digits fixed so far (None before the first
    # pass) and how many survivors lie below the candidates.
    prefixes: list[int | None] = [None] * len(ranks)
    below = [0] * len(ranks)
    scratch = _DigitScratch(bits)
    for level in range(bits // _DIGIT_BITS):
        shift = bits - _DIGIT_BITS * (level + 1)
        distinct: list[int | None] = [None]
        if level:
            distinct = list(sorted({p for p in prefixes if p is not None}))
        histograms = torch.zeros((len(distinct), _BUCKETS + 1), dtype=torch.int64)
        seen = False
        for keys, survivors in source():
            seen = True
            for start in range(0, keys.numel(), _radix.CHUNK):
                chunk = keys[start : start + _radix.CHUNK]
                alive = None if survivors is None else survivors[start : start + _radix.CHUNK]
                for row, prefix in enumerate(distinct):
                    digits = scratch.digits(chunk, alive, shift, prefix)
                    histograms[row].index_add_(0, digits, scratch.ones[: digits.numel()])
        if not seen:
            raise ValueError("select_kth needs at least one key")
        counts = histograms[:, 1:]  # bucket 0 holds the entries out of question
        if reduce is not None:
            counts = reduce(counts)
        cumulative = counts.cumsum(1)
        for i, k in enumerate(ranks):
            prefix = prefixes[i]
            row = distinct.index(prefix)
            wanted = k - below[i]
            if wanted < 1 or wanted > int(cumulative[row, -1]):
                raise ValueError(f"rank {k} is out of range: not that many survivors")
            rank = torch.tensor([wanted], dtype=torch.int64)
            digit = int(torch.searchsorted(cumulative[row], rank)[0])
            below[i] += int(cumulative[row, digit - 1]) if digit else 0
            prefixes[i] = (
                digit - (_BUCKETS >> 1) if prefix is None else (prefix << _DIGIT_BITS) | digit
            )
    return [(int(p), b) for p, b in zip(prefixes, below, strict=True) if p is not None]


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
    """``smallest_k`` for a large 1-D float vector.

    A sample of the keys places a window around the k-th; one parallel pass counts
    the keys below it and collects those inside, among which the k-th is selected
    (the radix select if the sample misled); one more pass marks the result.
    """
    bits = 64 if flat.dtype == torch.float64 else 32
    key_dtype = torch.int64 if bits == 64 else torch.int32
    signed = bool(torch.signbit(flat).any())  # magnitudes: the plain bits order them
    n = flat.numel()
    spans = [(start, min(_radix.CHUNK, n - start)) for start in range(0, n, _radix.CHUNK)]
    local = threading.local()

    def keys_of(start: int, size: int) -> torch.Tensor:
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = (
                torch.empty(_radix.CHUNK, dtype=key_dtype, device=flat.device),
                torch.empty(_radix.CHUNK, dtype=key_dtype, device=flat.device),
                torch.empty((2, _radix.CHUNK), dtype=torch.bool, device=flat.device),
            )
        return write_keys(flat[start : start + size], signed, buffers[0][:size], buffers[1][:size])

    stride = max(1, n // _radix.SAMPLE)
    picked = flat[stride // 2 :: stride].contiguous()
    sample = (
        write_keys(
            picked,
            signed,
            torch.empty_like(picked, dtype=key_dtype),
            torch.empty_like(picked, dtype=key_dtype),
        )
        .sort()
        .values
    )
    window = sample_window(sample, k, n)
    selected = torch.empty(flat.shape, dtype=torch.bool, device=flat.device)
    with ChunkWorkers() as workers:

        def collect(start: int, size: int) -> tuple[int, torch.Tensor]:
            keys = keys_of(start, size)
            flags = local.buffers[2]
            return collect_window(keys, None, window, flags[0, :size], flags[1, :size])

        found = workers.map(collect, spans)
        below = sum(count for count, _ in found)
        inside = torch.cat([keys for _, keys in found])
        if below < k <= below + inside.numel():
            key = int(torch.kthvalue(inside, k - below).values)
            less = below + int(torch.count_nonzero(inside < key))
            equal = [
                (start, int(torch.count_nonzero(c == key)))
                for (start, _), (_, c) in zip(spans, found, strict=True)
            ]
        else:
            key, less = select_kth(lambda: ((keys_of(s, z), None) for s, z in spans), k, bits)
            equal = list(
                zip(
                    [s for s, _ in spans],
                    workers.map(lambda s, z: int(torch.count_nonzero(keys_of(s, z) == key)), spans),
                    strict=True,
                )
            )
        del found, inside
        budgets = tie_budgets(equal, k - less)

        def mark(start: int, size: int) -> None:
            keys = keys_of(start, size)
            out = selected[start : start + size]
            torch.lt(keys, key, out=out)
            budget = budgets.get(start, 0)
            if budget:
                out[(keys == key).nonzero().squeeze(1)[:budget]] = True

        workers.map(mark, spans)
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
