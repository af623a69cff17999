"""The streaming global strategy: exact global thresholds without concatenating the model.

``GlobalPruningContext(model, criteria, strategy="streaming")`` runs criteria that
describe themselves as a :class:`~prunefw.criteria.base.RankSelection` (thresholds
on the ranks or values of scores; all built-ins do) like this:

1. **Select.** The k-th smallest score over all still-unpruned entries of all
   targets is found by a radix select over the scores' bit patterns: a float's
   bits, read as a signed integer and with the lower bits flipped for negative
   values, order exactly like the floats. Each pass reads the targets one at a
   time and histograms one 16-bit digit of the candidates' keys (2 passes for
   scores up to 32 bits, 4 for float64 and random keys). Only one target's
   temporaries exist at a time.
2. **Apply.** Each target's mask is computed from the threshold(s) and applied
   with :func:`torch.nn.utils.prune.custom_from_mask`, so the reparametrization and
   :func:`torch.nn.utils.prune.remove` are torch's own.

Masks are identical to the default strategy's for magnitude and percentile,
including ties: among equal scores the lower flat index, in target order, counts
as smaller. For random criteria the scores are uniformly random 32-bit keys drawn
from one generator per target, seeded with ``RankSelection.random_seed + index``:
the count is exact and every subset of that size is equally likely (up to the
negligible chance of equal keys at the threshold, broken by position), but the
masks differ from the default strategy's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils import prune

from prunefw.contexts.base import importance_scores
from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError
from prunefw.reparametrization import mask_of, release_mask_reference
from prunefw.selection import at_least, float_keys, select_kth
from prunefw.targets import PruningTarget

__all__ = ["prune_streaming"]


@dataclass
class _KeySource:
    """Yields, per target, the keys of all entries and the survivors' mask."""

    criterion: PruningCriterion
    targets: Sequence[PruningTarget]
    random_seed: int | None
    bits: int = 32

    def __post_init__(self) -> None:
        if self.random_seed is None:
            dtypes = {getattr(t.module, t.name).dtype for t in self.targets}
            self.bits = 64 if torch.float64 in dtypes else 32

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for index, target in enumerate(self.targets):
            yield self.keys(index, target), _survivors(target)

    def keys(self, index: int, target: PruningTarget) -> torch.Tensor:
        weight = getattr(target.module, target.name)
        if self.random_seed is not None:
            generator = torch.Generator().manual_seed(self.random_seed + index)
            keys = torch.randint(
                -(2**31), 2**31, weight.shape, generator=generator, dtype=torch.int32
            )
            return keys.reshape(-1)
        dtype = torch.float64 if self.bits == 64 else torch.float32
        scores = importance_scores(self.criterion, target)
        if scores is None:
            magnitudes = weight.detach().to(dtype).abs().reshape(-1)
            return float_keys(magnitudes, self.bits, non_negative=True)
        return float_keys(scores.to(dtype, copy=True).reshape(-1), self.bits, non_negative=False)


def _survivors(target: PruningTarget) -> torch.Tensor | None:
    mask = mask_of(target.module, target.name)
    return None if mask is None else mask.detach().reshape(-1) != 0


@dataclass
class _Smallest:
    """Marks the k smallest survivors, target by target, with the position tie rule."""

    key: int
    ties: int  # how many entries equal to ``key`` are still to be marked

    def mark(self, keys: torch.Tensor, survivors: torch.Tensor | None) -> torch.Tensor:
        marked = keys < self.key
        equal = keys == self.key
        if survivors is not None:
            marked &= survivors
            equal &= survivors
        if self.ties > 0:
            tied = equal.nonzero().squeeze(1)[: self.ties]
            marked[tied] = True
            self.ties -= tied.numel()
        return marked


def _smallest(source: _KeySource, k: int, n: int) -> _Smallest | None:
    """The marker for the ``k`` smallest of ``n`` survivors (``None`` if k == 0)."""
    if k <= 0:
        return None
    if k >= n:
        return _Smallest(key=(1 << (source.bits - 1)) - 1, ties=n)  # everything
    key, count_less = select_kth(lambda: iter(source), k, source.bits)
    return _Smallest(key=key, ties=k - count_less)


def prune_streaming(criterion: PruningCriterion, targets: Sequence[PruningTarget]) -> None:
    """Apply one criterion to ``targets`` with the streaming strategy.

    Args:
        criterion: A criterion whose :meth:`~prunefw.PruningCriterion.rank_selection`
            is not ``None``.
        targets: The tensors, ranked together.

    Raises:
        InvalidArgumentError: The criterion has no rank selection.
    """
    n = 0
    for target in targets:
        survivors = _survivors(target)
        n += (
            getattr(target.module, target.name).numel()
            if survivors is None
            else int(survivors.sum())
        )
    selection = criterion.rank_selection(n)
    if not isinstance(selection, RankSelection):
        raise InvalidArgumentError(
            f"{criterion!r} does not support strategy='streaming' (its rank_selection() "
            "returned None); use the default strategy"
        )
    source = _KeySource(criterion, targets, selection.random_seed)
    if selection.min_threshold is not None:
        threshold = float(selection.min_threshold)
        for target in targets:
            scores = importance_scores(criterion, target)
            weight = getattr(target.module, target.name).detach()
            scores = weight.abs() if scores is None else scores
            prune.custom_from_mask(target.module, target.name, at_least(scores, threshold))
            release_mask_reference(target.module, target.name)
        return
    low = _smallest(source, selection.smallest, n)
    # The `largest` highest are everything but the `n - largest` smallest.
    kept_below_top = _smallest(source, n - selection.largest, n) if selection.largest else None
    for index, target in enumerate(targets):
        weight = getattr(target.module, target.name)
        keys = source.keys(index, target)
        survivors = _survivors(target)
        keep = torch.ones_like(keys, dtype=torch.bool)
        if low is not None:
            keep &= ~low.mark(keys, survivors)
        if selection.largest:
            if kept_below_top is None:
                keep.zero_()
            else:
                keep &= kept_below_top.mark(keys, survivors)
        prune.custom_from_mask(target.module, target.name, keep.view(weight.shape))
        release_mask_reference(target.module, target.name)
