"""The streaming global strategy: exact global thresholds without concatenating the model.

``GlobalPruningContext(model, criteria, strategy="streaming")`` (and the default
``strategy="auto"`` on large models, see :mod:`prunefw.contexts.global_context`)
runs criteria that describe themselves as a
:class:`~prunefw.criteria.base.RankSelection` (thresholds on the ranks or values of
scores; all built-ins do) like this:

1. **Keys.** :class:`TargetKeys` turns each target's scores into integer keys that
   order exactly like the scores: a float's bits with the sign bit cleared for
   magnitudes, ``-|bits|`` for negative signed scores (so ``-0.0`` and ``+0.0`` get
   one key), uniformly random int32 for random criteria. Keys are computed one
   target at a time, in fixed-size chunks (:data:`~prunefw._radix.CHUNK` entries),
   into scratch buffers allocated once per worker thread.
2. **Select.** The k-th smallest key over all still-unpruned entries is found
   exactly in one pass: a systematic sample of the keys
   (:data:`~prunefw._radix.SAMPLE` of them) gives a window of keys that contains the
   k-th with overwhelming probability; the pass counts the survivors below the
   window and collects those inside it (about 1% of the entries), and the k-th is
   selected among them. If the sample misled (the count says the k-th lies outside
   the window), or if a ``reduce`` hook is given (distributed use), the radix select
   :func:`~prunefw.selection.select_ranks` finds it instead (2 more passes for
   32-bit keys, 4 for float64). A percentile band's two ranks share the passes.
3. **Apply.** One more pass writes each target's final mask straight into the
   buffer it will live in (allocated once, in the mask dtype) and installs torch's
   own reparametrization with it (:func:`~prunefw.reparametrization.install_mask`:
   ``weight_orig``, ``weight_mask``, the ``CustomFromMask`` hook or
   ``PruningContainer``), so :func:`torch.nn.utils.prune.remove` and
   :func:`torch.nn.utils.prune.is_pruned` work as after
   :func:`~torch.nn.utils.prune.custom_from_mask`.

The chunks of a target are processed by ``torch.get_num_threads()`` worker threads,
each running torch with one intra-op thread (small ops on one thread each do not
wait for each other, which matters on a busy machine). Nothing per target is
allocated except what the pruned model keeps (the mask and the recomputed weight)
and the few candidates of the window: no temporaries of a layer's size are
allocated and freed, which matters because glibc maps every large allocation fresh
from the kernel and each fresh page costs a page fault (see ``docs/scale.md``).

Masks are identical to the default strategy's for magnitude and percentile,
including ties: among equal scores the lower flat index, in target order, counts
as smaller. For random criteria the scores are uniformly random 32-bit keys drawn
from one generator per target, seeded with ``RankSelection.random_seed + index``:
the count is exact and every subset of that size is equally likely (up to the
negligible chance of equal keys at the threshold, broken by position), but the
masks differ from the default strategy's (so ``strategy="auto"`` never picks
streaming for them).

**Distributed use.** The two halves are separable: :class:`TargetKeys` computes
the keys of local tensors (calling it gives a
:data:`~prunefw.selection.KeySource`), and :func:`~prunefw.selection.select_ranks`
selects over any key source, applying ``reduce`` to every histogram.
:func:`prune_streaming` passes its ``reduce`` to the survivor count and to every
histogram of the radix select (one call per pass), so with an all-reduce SUM every
process finds the same global thresholds over its shards. (Ties at a threshold are
then split in target order within each process; a distributed caller that needs
the global flat-index tie order must offset them by the tied entries of earlier
shards.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prunefw import _radix
from prunefw._radix import ChunkWorkers, collect_window, sample_window, tie_budgets
from prunefw.contexts._keys import TargetKeys, _Values
from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError
from prunefw.reparametrization import install_mask, mask_of, release_mask_reference
from prunefw.selection import Reduce, select_ranks
from prunefw.targets import PruningTarget

__all__ = ["TargetKeys", "count_survivors", "prune_streaming"]


def count_survivors(targets: Sequence[PruningTarget], reduce: Reduce | None = None) -> int:
    """How many entries of ``targets`` are not pruned yet (``reduce`` sums over processes)."""
    total = torch.zeros(1, dtype=torch.int64)
    for target in targets:
        mask = mask_of(target.module, target.name)
        if mask is None:
            total += getattr(target.module, target.name).numel()
        else:
            total += torch.count_nonzero(mask).cpu()
    if reduce is not None:
        total = reduce(total)
    return int(total)


# -- selection -------------------------------------------------------------------------


@dataclass
class _Boundary:
    """Marks the ``rank`` smallest survivors: keys ``< key``, and some equal to it.

    ``key`` is the ``rank``-th smallest key. Ties go to the lower flat index in
    target order: ``budgets`` says how many of the survivors equal to ``key`` in each
    chunk ``(target index, start)`` are among the ``rank`` smallest.
    """

    key: int
    budgets: dict[tuple[int, int], int] = field(default_factory=dict)

    def mark(
        self,
        where: tuple[int, int],
        keys: torch.Tensor,
        alive: torch.Tensor | None,
        out: torch.Tensor,
        equal: torch.Tensor,
    ) -> None:
        """Write into ``out`` which entries of the chunk at ``where`` are marked."""
        torch.lt(keys, self.key, out=out)
        budget = self.budgets.get(where, 0)
        if budget:
            torch.eq(keys, self.key, out=equal)
            if alive is not None:
                equal.logical_and_(alive)
            out[equal.nonzero().squeeze(1)[:budget]] = True


def _select(
    keys: TargetKeys,
    ranks: Sequence[int],
    n: int,
    reduce: Reduce | None,
    workers: ChunkWorkers,
) -> list[_Boundary]:
    """The boundaries of ``ranks`` (1-based, among the ``n`` survivors), with tie budgets."""
    found: list[tuple[int, int] | None] = [None] * len(ranks)
    equal: list[list[tuple[tuple[int, int], int]]] = [[] for _ in ranks]
    if reduce is None:
        sample = (
            keys.sample(_radix.SAMPLE)
            if n > 4 * _radix.SAMPLE
            else torch.empty(0, dtype=keys.key_dtype)
        )
        windows = [sample_window(sample, rank, n) for rank in ranks]
        below = [0] * len(ranks)
        candidates: list[list[tuple[tuple[int, int], torch.Tensor]]] = [[] for _ in ranks]
        for index in range(len(keys.targets)):
            values = keys.values(index)

            def job(
                start: int, size: int, values: _Values = values
            ) -> list[tuple[int, torch.Tensor]]:
                chunk_keys = keys.keys_into(values, start, size)
                alive = keys.survivors_into(values, start, size)
                below, inside, _ = keys.flags(chunk_keys.device, size)
                return [collect_window(chunk_keys, alive, w, below, inside) for w in windows]

            spans = keys.spans(index)
            for (start, _), results in zip(spans, workers.map(job, spans), strict=True):
                for i, (count, inside) in enumerate(results):
                    below[i] += count
                    candidates[i].append(((index, start), inside))
        for i, rank in enumerate(ranks):
            inside = torch.cat([c for _, c in candidates[i]])
            if below[i] < rank <= below[i] + inside.numel():
                key = int(torch.kthvalue(inside, rank - below[i]).values)
                found[i] = (key, below[i] + int(torch.count_nonzero(inside < key)))
                equal[i] = [
                    (where, int(torch.count_nonzero(c == key))) for where, c in candidates[i]
                ]
        del candidates
    missing = [i for i, f in enumerate(found) if f is None]
    if missing:
        # The sample misled (or a reduce hook asks for the reducible radix select).
        radix = select_ranks(keys, [ranks[i] for i in missing], keys.bits, reduce=reduce)
        for i, result in zip(missing, radix, strict=True):
            found[i] = result
        for i in missing:
            equal[i] = _count_equal(keys, found[i][0], workers)  # type: ignore[index]
    boundaries = []
    for i, rank in enumerate(ranks):
        key, less = found[i]  # type: ignore[misc]
        boundaries.append(_Boundary(key, tie_budgets(equal[i], rank - less)))
    return boundaries


def _count_equal(
    keys: TargetKeys, key: int, workers: ChunkWorkers
) -> list[tuple[tuple[int, int], int]]:
    """Per chunk, how many survivors have exactly ``key`` (a pass over the keys)."""
    counts: list[tuple[tuple[int, int], int]] = []
    for index in range(len(keys.targets)):
        values = keys.values(index)

        def job(start: int, size: int, values: _Values = values) -> int:
            equal = keys.keys_into(values, start, size) == key
            alive = keys.survivors_into(values, start, size)
            if alive is not None:
                equal &= alive
            return int(torch.count_nonzero(equal))

        spans = keys.spans(index)
        counts.extend(
            ((index, s), c) for (s, _), c in zip(spans, workers.map(job, spans), strict=True)
        )
    return counts


# -- the keep rule ---------------------------------------------------------------------


@dataclass
class _Keep:
    """Which survivors a rank selection keeps, chunk by chunk."""

    low: _Boundary | None = None  # the survivors below it are pruned
    top: _Boundary | None = None  # only the survivors below it are kept
    keep_none: bool = False
    threshold: tuple[int, bool] | None = None  # keep keys >= key (> key if strictly)

    def write(
        self,
        where: tuple[int, int],
        keys: torch.Tensor,
        alive: torch.Tensor | None,
        out: torch.Tensor,
        scratch: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """Write the chunk's keep flags into ``out`` (bool), using two scratch flags."""
        if self.keep_none:
            out.fill_(False)
            return
        if self.threshold is not None:
            key, strictly = self.threshold
            (torch.gt if strictly else torch.ge)(keys, key, out=out)
        elif self.low is None and self.top is None:
            out.fill_(True)
        else:
            equal, pruned = scratch
            if self.top is not None:
                self.top.mark(where, keys, alive, out, equal)
                if self.low is not None:
                    self.low.mark(where, keys, alive, pruned, equal)
                    out.logical_and_(pruned.logical_not_())
            else:
                assert self.low is not None
                self.low.mark(where, keys, alive, out, equal)
                out.logical_not_()
        if alive is not None:
            out.logical_and_(alive)


def _plan(
    selection: RankSelection,
    keys: TargetKeys,
    n: int,
    reduce: Reduce | None,
    workers: ChunkWorkers,
) -> _Keep:
    """Turn a rank selection into a keep rule (runs the selection)."""
    if selection.min_threshold is not None:
        key, rounded_down = keys.key_of(float(selection.min_threshold))
        return _Keep(threshold=(key, rounded_down))
    smallest = min(max(selection.smallest, 0), n)
    kept = n - selection.largest if selection.largest else n  # keep the `kept` smallest
    if kept <= 0 or smallest >= n:
        return _Keep(keep_none=True)
    ranks = ([smallest] if smallest else []) + ([kept] if kept < n else [])
    boundaries = _select(keys, ranks, n, reduce, workers) if ranks else []
    plan = _Keep()
    if smallest:
        plan.low = boundaries[0]
    if kept < n:
        plan.top = boundaries[-1]
    return plan


# -- the strategy ----------------------------------------------------------------------


def prune_streaming(
    criterion: PruningCriterion,
    targets: Sequence[PruningTarget],
    *,
    mask_dtype: torch.dtype | None = None,
    reduce: Reduce | None = None,
) -> None:
    """Apply one criterion to ``targets`` with the streaming strategy.

    Args:
        criterion: A criterion whose :meth:`~prunefw.PruningCriterion.rank_selection`
            is not ``None``.
        targets: The tensors, ranked together.
        mask_dtype: The dtype of the new ``weight_mask`` buffers: ``torch.bool`` (1
            byte per entry) or a float dtype. ``None``: the weight's dtype, what
            :func:`torch.nn.utils.prune.custom_from_mask` gives (also on top of a
            bool mask: torch's ``PruningContainer`` casts to the weight's dtype).
        reduce: Applied to the survivor count and to every histogram of the radix
            selection (int64 tensors) before they are used; for targets sharded over
            processes, an all-reduce SUM makes the thresholds global (see
            :func:`~prunefw.selection.select_kth`). With it, the selection always
            takes the radix path (the sampled window is local). ``None``: the
            identity.

    Raises:
        InvalidArgumentError: The criterion has no rank selection.
    """
    n = count_survivors(targets, reduce)
    selection = criterion.rank_selection(n)
    if not isinstance(selection, RankSelection):
        raise InvalidArgumentError(
            f"{criterion!r} does not support strategy='streaming' (its rank_selection() "
            "returned None); use the default strategy"
        )
    keys = TargetKeys(criterion, targets, selection.random_seed)
    with ChunkWorkers() as workers:
        plan = _plan(selection, keys, n, reduce, workers)
        for index, target in enumerate(targets):
            module, name = target.module, target.name
            weight = getattr(module, name)
            dtype = mask_dtype or weight.dtype
            mask = torch.empty(weight.shape, dtype=dtype, device=weight.device)
            flat = mask.view(-1)
            values = keys.values(index)

            def job(
                start: int,
                size: int,
                values: _Values = values,
                index: int = index,
                flat: torch.Tensor = flat,
            ) -> None:
                chunk_keys = keys.keys_into(values, start, size)
                alive = keys.survivors_into(values, start, size)
                out = flat[start : start + size]
                keep, equal, pruned = keys.flags(out.device, size)
                if out.dtype == torch.bool:
                    keep = out
                plan.write((index, start), chunk_keys, alive, keep, (equal, pruned))
                if keep is not out:
                    out.copy_(keep)

            workers.map(job, keys.spans(index))
            del values
            install_mask(module, name, mask)
            release_mask_reference(module, name)
