"""Exact global rank selection over blocks spread across processes.

The streaming strategy's radix select (:func:`prunefw.selection.select_kth`) counts
keys in histograms; with its ``reduce`` hook set to an all-reduce SUM, every rank
counts its own blocks and all ranks find the same global k-th key: one all-reduce
of a 65536-bucket int64 histogram (512 KiB) per pass, 2 passes for 32-bit keys, 4
for float64. No tensor is gathered.

The tie rule is the streaming strategy's: among equal scores the lower flat index,
in target order, counts as smaller. With ``Shard(0)`` every rank's block is one
contiguous range of the flat order, so each rank learns, from one all-gather of its
per-target tie counts, how many tied entries lie before its block and marks exactly
the right ones.

Random criteria use the streaming strategy's keys: for target ``i`` the flat
sequence of ``torch.randint(-2**31, 2**31, generator=seeded(random_seed + i))``;
each rank draws the sequence up to the end of its block and keeps its range, so the
keys, hence the masks, are those of single-process streaming: seeded per target,
not per rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from prunefw import _radix
from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.selection import Reduce, at_least, float_keys, select_kth
from prunefw.targets import check_finite

from ._collectives import Collectives
from ._shards import LocalShard

__all__ = ["global_keep", "local_scores"]


def random_block(seed: int, start: int, count: int) -> torch.Tensor:
    """Entries ``start .. start + count`` of a target's random key sequence.

    The sequence is ``torch.randint(-2**31, 2**31, (n,), generator=g, dtype=int32)``
    with ``g`` seeded with ``seed``; a CPU generator yields the same values in one
    call or in several, so the entries before ``start`` are drawn (in chunks) and
    dropped.
    """
    generator = torch.Generator().manual_seed(seed)
    _skip(generator, start)
    return torch.randint(-(2**31), 2**31, (count,), generator=generator, dtype=torch.int32)


def local_scores(criterion: PruningCriterion, shard: LocalShard) -> torch.Tensor | None:
    """This rank's block of ``criterion``'s importance scores, or ``None`` for magnitudes.

    The criterion sees the module as it is (its tensor a DTensor); it may return a
    DTensor laid out like the weights, or a plain tensor of the full shape.

    Raises:
        InvalidTypeError: Not a tensor (or None).
        InvalidArgumentError: The wrong shape, or a DTensor laid out otherwise.
        NonFiniteWeightsError: NaN or infinite scores in this rank's block.
    """
    target = shard.target
    scores = criterion.importance_scores(target.module, target.name)
    if scores is None:
        return None
    if not isinstance(scores, torch.Tensor):
        raise InvalidTypeError(
            f"{criterion!r}.importance_scores returned {type(scores).__name__} for "
            f"{target.label}; expected a tensor or None"
        )
    if tuple(scores.shape) != tuple(shard.shape):
        raise InvalidArgumentError(
            f"{criterion!r}.importance_scores returned shape {tuple(scores.shape)} for "
            f"{target.label}; expected {tuple(shard.shape)}"
        )
    placements = getattr(scores, "placements", None)
    if placements is not None:
        if placements != getattr(shard.stored, "placements", None):
            raise InvalidArgumentError(
                f"{criterion!r}.importance_scores returned a DTensor laid out as "
                f"{tuple(placements)} for {target.label}, whose weights are laid out as "
                f"{tuple(getattr(shard.stored, 'placements', ()))}; return scores laid out "
                "like the weights (e.g. computed elementwise from them)"
            )
        local = scores.to_local().detach()  # type: ignore[attr-defined]
    else:
        local = shard.block(scores.detach())
    check_finite(target, local, f"importance scores from {criterion!r}")
    return local


@dataclass
class _Keys:
    """Each target's keys on this rank, chunk by chunk (see the module docstring).

    Keys order exactly like the scores (magnitudes, a criterion's signed scores, or
    the random keys); equal scores get equal keys. Only one chunk of keys exists at
    a time, as in the streaming strategy.
    """

    criterion: PruningCriterion
    shards: Sequence[LocalShard]
    random_seed: int | None
    bits: int
    scratch: torch.Tensor | None = None  # magnitudes of one chunk, allocated once
    # Per target: the random generator's state at the start of this rank's block
    # (skipping to it is paid once, not once per pass).
    starts: dict[int, torch.Tensor] = field(default_factory=dict)

    def chunks(self, index: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
        """Yield ``(start, keys, survivors)`` per chunk of this rank's block of target ``index``."""
        shard = self.shards[index]
        count = shard.values.numel()
        mask = None if shard.mask is None else shard.mask.detach().reshape(-1)
        generator = None
        values = shard.values.reshape(-1)
        signed = False
        if self.random_seed is not None:
            generator = torch.Generator()
            if index in self.starts:
                generator.set_state(self.starts[index])
            else:
                generator.manual_seed(self.random_seed + index)
                _skip(generator, shard.offset)
                self.starts[index] = generator.get_state()
        else:
            scores = local_scores(self.criterion, shard)
            if scores is not None:
                values, signed = scores.reshape(-1), True
        dtype = torch.float64 if self.bits == 64 else torch.float32
        for start in range(0, count, _radix.CHUNK):
            size = min(_radix.CHUNK, count - start)
            if generator is not None:
                keys = torch.randint(
                    -(2**31), 2**31, (size,), generator=generator, dtype=torch.int32
                )
            else:
                part = values[start : start + size]
                if signed:
                    keys = float_keys(part.to(dtype, copy=True), self.bits, False)
                else:
                    if (
                        self.scratch is None
                        or self.scratch.dtype != dtype
                        or len(self.scratch) < size
                    ):
                        self.scratch = torch.empty(_radix.CHUNK, dtype=dtype)
                    magnitudes = self.scratch[:size]
                    magnitudes.copy_(part)
                    keys = float_keys(magnitudes.abs_(), self.bits, True)
            alive = None if mask is None else mask[start : start + size] != 0
            yield start, keys, alive

    def source(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """What the radix select reads: the keys of the blocks this rank counts."""
        yield torch.empty(0, dtype=torch.int64 if self.bits == 64 else torch.int32), None
        for index, shard in enumerate(self.shards):
            if shard.owned:  # else another rank counts this block
                for _, keys, alive in self.chunks(index):
                    yield keys, alive


def _skip(generator: torch.Generator, count: int) -> None:
    """Advance ``generator`` past ``count`` random int32 keys."""
    scratch = torch.empty(min(_radix.CHUNK, max(count, 1)), dtype=torch.int32)
    while count > 0:
        size = min(scratch.numel(), count)
        torch.randint(
            -(2**31), 2**31, (size,), generator=generator, dtype=torch.int32, out=scratch[:size]
        )
        count -= size


@dataclass
class _Below:
    """The entries ranked below a boundary: keys ``< key`` and the first ``ties`` equal.

    ``budgets`` (per target) says how many of the tied entries of this rank's block
    rank below; they are used up chunk by chunk, lowest positions first.
    """

    key: int
    ties: int
    budgets: list[int] = field(default_factory=list)

    def mark(self, index: int, keys: torch.Tensor, alive: torch.Tensor | None) -> torch.Tensor:
        below = keys < self.key
        if self.budgets[index] <= 0:
            return below if alive is None else below & alive
        equal = keys == self.key
        if alive is not None:
            below &= alive
            equal &= alive
        tied = equal.nonzero().squeeze(1)[: self.budgets[index]]
        below[tied] = True
        self.budgets[index] -= tied.numel()
        return below


def _below(keys: _Keys, k: int, n: int, reduce: Reduce) -> _Below | None:
    """The marker of the ``k`` smallest of ``n`` survivors (``None`` for none)."""
    if k <= 0:
        return None
    key, less = select_kth(keys.source, k, keys.bits, reduce=reduce)
    return _Below(key=key, ties=k - less)


def _assign_ties(coll: Collectives, keys: _Keys, markers: Sequence[_Below]) -> None:
    """Give each marker its per-target tie budgets on this rank (one all-gather).

    Tied entries rank by position: targets in order, and within a target by flat
    index, i.e. by block offset across ranks (blocks are contiguous ranges).
    """
    shards = keys.shards
    counts = torch.zeros((len(shards), 1 + len(markers)), dtype=torch.int64)
    local = torch.zeros((len(shards), len(markers)), dtype=torch.int64)
    for index, shard in enumerate(shards):
        counts[index, 0] = shard.offset
        for _, chunk, alive in keys.chunks(index):
            for m, marker in enumerate(markers):
                equal = chunk == marker.key
                if alive is not None:
                    equal &= alive
                local[index, m] += torch.count_nonzero(equal)
        if shard.owned:
            counts[index, 1:] = local[index]
    table = coll.all_gather(counts)  # [world, targets, 1 + markers]
    offsets = table[:, :, 0]
    for m, marker in enumerate(markers):
        equal = table[:, :, 1 + m]
        per_target = equal.sum(0)
        before_target = torch.cumsum(per_target, 0) - per_target
        budgets = []
        for index, shard in enumerate(shards):
            earlier_blocks = int(equal[offsets[:, index] < shard.offset, index].sum())
            prefix = int(before_target[index]) + earlier_blocks
            budgets.append(max(0, min(marker.ties - prefix, int(local[index, m]))))
        marker.budgets = budgets


def global_keep(
    coll: Collectives, criterion: PruningCriterion, shards: Sequence[LocalShard]
) -> Iterator[torch.Tensor]:
    """This rank's keep-mask blocks for one criterion ranked over ``shards`` globally.

    Yields one flat bool block per shard, in order: the blocks of what the streaming
    strategy gives the full tensors (entries already pruned are never kept). Every
    collective runs before the first block is yielded.

    Raises:
        InvalidArgumentError: The criterion has no rank selection.
    """
    local_n = sum(s.survivor_count() for s in shards if s.owned)
    n = int(coll.all_reduce(torch.tensor([local_n], dtype=torch.int64))[0])
    selection = criterion.rank_selection(n)
    if not isinstance(selection, RankSelection):
        raise InvalidArgumentError(
            f"{criterion!r} has no rank_selection(); pruning sharded (DTensor) targets "
            "globally needs one, to find the global threshold with collectives"
        )
    if selection.min_threshold is not None:
        for shard in shards:
            scores = local_scores(criterion, shard)
            scores = shard.values.abs() if scores is None else scores
            keep = at_least(scores, float(selection.min_threshold)).reshape(-1)
            alive = shard.survivors()
            yield keep if alive is None else keep & alive
        return
    wide = selection.random_seed is None and any(s.values.dtype == torch.float64 for s in shards)
    keys = _Keys(criterion, shards, selection.random_seed, 64 if wide else 32)

    def reduce(histogram: torch.Tensor) -> torch.Tensor:
        return coll.all_reduce(histogram)

    smallest = min(max(selection.smallest, 0), n)
    kept = n - selection.largest if selection.largest else n  # keep the `kept` smallest
    if kept <= 0 or smallest >= n:
        for shard in shards:
            yield torch.zeros(shard.values.numel(), dtype=torch.bool)
        return
    low = _below(keys, smallest, n, reduce)
    top = _below(keys, kept, n, reduce) if kept < n else None
    markers = [m for m in (low, top) if m is not None]
    if markers:
        _assign_ties(coll, keys, markers)
    for index, shard in enumerate(shards):
        keep = torch.ones(shard.values.numel(), dtype=torch.bool)
        if markers:
            for start, chunk, alive in keys.chunks(index):
                out = keep[start : start + chunk.numel()]
                if top is not None:
                    out &= top.mark(index, chunk, alive)
                if low is not None:
                    out &= ~low.mark(index, chunk, alive)
        alive_all = shard.survivors()
        yield keep if alive_all is None else keep & alive_all
