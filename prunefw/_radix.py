"""The machinery of radix selection over integer keys, processed in fixed-size chunks.

Shared by :mod:`prunefw.selection` (:func:`~prunefw.selection.select_ranks` and the
large-vector path of :func:`~prunefw.selection.smallest_k`) and the streaming
strategy (:mod:`prunefw.contexts.streaming`): the chunk and sample sizes, the scratch
of one radix pass, keys written without allocating, worker threads for chunk jobs,
the sampled window around a rank and the tie budgets of its boundary.

Other modules read :data:`CHUNK` and :data:`SAMPLE` at call time (``_radix.CHUNK``),
so tests can make them small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = [
    "CHUNK",
    "SAMPLE",
    "ChunkWorkers",
    "collect_window",
    "sample_window",
    "tie_budgets",
    "write_keys",
]

_DIGIT_BITS = 16
_BUCKETS = 1 << _DIGIT_BITS
#: Entries per chunk: keys are processed in chunks of this many entries, and every
#: scratch buffer holds this many keys (4 MiB of int32): small enough to stay in cache
#: between the few in-place ops of a pass, large enough that per-op overhead does not
#: matter.
CHUNK = 1 << 20
#: Keys sampled to place a selection window (see ``prunefw.selection._smallest_k_radix``; in the
#: streaming strategy, below ``4 * SAMPLE`` survivors there is no sample: every
#: survivor is a candidate).
SAMPLE = 1 << 18


class _DigitScratch:
    """Buffers for one radix pass, allocated once: digits, candidate flags, ones."""

    def __init__(self, bits: int) -> None:
        dtype = torch.int64 if bits == 64 else torch.int32
        self.buffer = torch.empty(CHUNK, dtype=dtype)
        self.flags = torch.empty(CHUNK, dtype=torch.bool)
        self.ones = torch.ones(1, dtype=torch.int64).expand(CHUNK)

    def digits(
        self,
        keys: torch.Tensor,
        survivors: torch.Tensor | None,
        shift: int,
        prefix: int | None,
    ) -> torch.Tensor:
        """Bucket + 1 of each key's digit at ``shift``; 0 for keys out of question.

        Out of question: a non-survivor, or (after the first pass) a key whose
        higher digits differ from ``prefix``.
        """
        n = keys.numel()
        digits = self.buffer[:n]
        if prefix is None:
            torch.bitwise_right_shift(keys, shift, out=digits)
            digits.add_((_BUCKETS >> 1) + 1)  # signed top digit -> 1 .. 65536
            if survivors is not None:
                digits.mul_(survivors)
            return digits
        flags = self.flags[:n]
        torch.bitwise_right_shift(keys, shift + _DIGIT_BITS, out=digits)
        torch.eq(digits, prefix, out=flags)
        if survivors is not None:
            flags.logical_and_(survivors)
        torch.bitwise_right_shift(keys, shift, out=digits)
        digits.bitwise_and_(_BUCKETS - 1)
        digits.add_(1)
        digits.mul_(flags)
        return digits


_T = TypeVar("_T")
# Half-width of a sampled selection window in standard deviations of the sample
# quantile; the chance that the k-th key falls outside is far below 1e-9 for a
# random sample (and a miss only costs the radix select).
_WINDOW_SIGMAS = 6.0


def write_keys(
    values: torch.Tensor, signed: bool, out: torch.Tensor, signs: torch.Tensor
) -> torch.Tensor:
    """Write integer keys that order like ``values`` into ``out``; allocate nothing else.

    ``out`` (and the scratch ``signs``) is int32 for keys of float32 bits or int64
    for float64 bits; ``values`` of a narrower float dtype are widened exactly
    first. Without ``signed`` the keys are those of ``|values|`` (the bits without
    the sign bit); with it, ``|bits|`` for ``v >= 0`` and ``-|bits|`` for ``v < 0``,
    so ``-0.0`` and ``+0.0`` get one key. NaN must not occur.

    Example:
        >>> v = torch.tensor([-2.0, -0.0, 0.0, 1.5])
        >>> out, signs = torch.empty(4, dtype=torch.int32), torch.empty(4, dtype=torch.int32)
        >>> k = write_keys(v, True, out, signs)
        >>> k.argsort(stable=True).tolist(), int(k[1]) == int(k[2])
        ([0, 1, 2, 3], True)
    """
    bits = 64 if out.dtype == torch.int64 else 32
    float_dtype = torch.float64 if bits == 64 else torch.float32
    top = bits - 1
    magnitude_bits = (1 << top) - 1
    if values.dtype == float_dtype:
        raw = values.contiguous().view(out.dtype)
    else:  # exact widening (float16, bfloat16, float32 -> float64)
        out.view(float_dtype).copy_(values)
        raw = out
    if not signed:
        return torch.bitwise_and(raw, magnitude_bits, out=out)
    torch.bitwise_right_shift(raw, top, out=signs)  # -1 for negatives, else 0
    torch.bitwise_and(raw, magnitude_bits, out=out)
    out.bitwise_xor_(signs)
    return out.sub_(signs)


class ChunkWorkers:
    """Runs chunk jobs on ``torch.get_num_threads()`` threads, one intra-op thread each.

    Many small ops on one thread each do not wait for each other at the end of
    every op (as torch's intra-op threads do), which matters on a busy machine.
    The caller's thread settings are not touched. Use as a context manager.
    """

    def __init__(self) -> None:
        count = torch.get_num_threads()
        self.pool = (
            ThreadPoolExecutor(count, "prunefw-chunks", torch.set_num_threads, (1,))
            if count > 1
            else None
        )

    def map(self, job: Callable[[int, int], _T], spans: Sequence[tuple[int, int]]) -> list[_T]:
        """``[job(start, size) for start, size in spans]``, computed by the workers."""
        if self.pool is None:
            return [job(start, size) for start, size in spans]
        futures = [self.pool.submit(job, start, size) for start, size in spans]
        return [future.result() for future in futures]

    def __enter__(self) -> ChunkWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def sample_window(sample: torch.Tensor, rank: int, n: int) -> tuple[int | None, int | None]:
    """Keys ``[low, high)`` that contain the ``rank``-th smallest of ``n`` w.h.p.

    Args:
        sample: Sorted keys of a sample of the ``n`` (empty: no window).
        rank: 1-based rank.
        n: How many keys there are.

    Returns:
        ``(low, high)``; ``None`` for an open side.
    """
    m = sample.numel()
    if m == 0:
        return None, None
    p = (rank - 0.5) / n
    centre = p * m
    margin = _WINDOW_SIGMAS * math.sqrt(m * p * (1 - p)) + 4
    low_index, high_index = math.floor(centre - margin), math.ceil(centre + margin)
    low = int(sample[low_index]) if low_index > 0 else None
    high = int(sample[high_index]) + 1 if high_index < m else None
    if high is not None and high > torch.iinfo(sample.dtype).max:
        high = None
    return low, high


def collect_window(
    keys: torch.Tensor,
    alive: torch.Tensor | None,
    window: tuple[int | None, int | None],
    below: torch.Tensor,
    inside: torch.Tensor,
) -> tuple[int, torch.Tensor]:
    """Count the survivors below ``window`` and return the keys inside it.

    ``below`` and ``inside`` are bool scratch buffers of ``keys``' size.
    """
    low, high = window
    count = 0
    if low is None:
        below.fill_(False)
    else:
        torch.lt(keys, low, out=below)
        if alive is not None:
            below.logical_and_(alive)
        count = int(torch.count_nonzero(below))
    if high is None:
        torch.logical_not(below, out=inside)
    else:
        torch.lt(keys, high, out=inside)
        inside.logical_xor_(below)
    if alive is not None:
        inside.logical_and_(alive)
    return count, keys.index_select(0, inside.nonzero().squeeze(1))


def tie_budgets(equal_counts: Sequence[tuple[_T, int]], ties: int) -> dict[_T, int]:
    """Hand ``ties`` out to chunks in order, each up to its count of tied keys."""
    budgets: dict[_T, int] = {}
    for where, count in equal_counts:
        if ties <= 0:
            break
        if count:
            budgets[where] = min(count, ties)
            ties -= budgets[where]
    return budgets
