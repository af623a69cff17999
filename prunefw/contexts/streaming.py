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

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from prunefw import _radix
from prunefw._radix import ChunkWorkers, collect_window, sample_window, tie_budgets, write_keys
from prunefw.contexts.base import importance_scores
from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError
from prunefw.reparametrization import install_mask, mask_of, release_mask_reference
from prunefw.selection import Reduce, select_ranks
from prunefw.targets import PruningTarget

__all__ = ["TargetKeys", "count_survivors", "prune_streaming"]

_Kind = Literal["magnitude", "signed", "keys"]


@dataclass
class _Values:
    """One target's values, ready to be turned into keys chunk by chunk."""

    flat: torch.Tensor  # weights, scores or (random criteria) the keys themselves
    kind: _Kind
    alive: torch.Tensor | None  # the flat current mask, None if not pruned yet

    @property
    def numel(self) -> int:
        return self.flat.numel()


class TargetKeys:
    """The keys of a criterion's scores, target by target, chunk by chunk.

    Keys are integers (int32, or int64 if a target is float64) that order exactly
    like the scores they stand for (see the module docstring). Calling the object
    yields ``(keys, survivors)`` for every chunk of every target: a
    :data:`~prunefw.selection.KeySource` for :func:`~prunefw.selection.select_kth`.
    :meth:`values` and :meth:`keys_into` are the same computation split so that
    chunks can be processed by several threads.

    Args:
        criterion: Gives the scores (:meth:`~prunefw.PruningCriterion.importance_scores`;
            ``None`` means magnitudes).
        targets: The tensors, in ranking order.
        random_seed: If set, keys are uniformly random int32 drawn from a generator
            seeded with ``random_seed + index`` per target, instead of scores.
        chunk: Entries per chunk (default :data:`~prunefw._radix.CHUNK`).
    """

    def __init__(
        self,
        criterion: PruningCriterion,
        targets: Sequence[PruningTarget],
        random_seed: int | None = None,
        chunk: int | None = None,
    ) -> None:
        self.criterion = criterion
        self.targets = targets
        self.random_seed = random_seed
        self.chunk = _radix.CHUNK if chunk is None else chunk
        wide = random_seed is None and any(
            getattr(t.module, t.name).dtype == torch.float64 for t in targets
        )
        #: Width of the keys: 32, or 64 if any target is float64.
        self.bits = 64 if wide else 32
        self.key_dtype = torch.int64 if wide else torch.int32
        self.float_dtype = torch.float64 if wide else torch.float32
        self._local = threading.local()
        self._random: torch.Tensor | None = None

    # -- values and keys ---------------------------------------------------------------

    def values(self, index: int) -> _Values:
        """Target ``index``'s values: weights, the criterion's scores, or random keys."""
        target = self.targets[index]
        weight = getattr(target.module, target.name).detach()
        mask = mask_of(target.module, target.name)
        alive = None if mask is None else mask.detach().reshape(-1)
        if self.random_seed is not None:
            n = weight.numel()
            if self._random is None or self._random.numel() < n:
                largest = max(getattr(t.module, t.name).numel() for t in self.targets)
                self._random = torch.empty(largest, dtype=torch.int32)
            keys = self._random[:n]
            generator = torch.Generator().manual_seed(self.random_seed + index)
            torch.randint(-(2**31), 2**31, (n,), generator=generator, dtype=torch.int32, out=keys)
            return _Values(keys.to(weight.device), "keys", alive)
        scores = importance_scores(self.criterion, target)
        if scores is None:
            return _Values(weight.reshape(-1), "magnitude", alive)
        return _Values(scores.reshape(-1), "signed", alive)

    def keys_into(self, values: _Values, start: int, size: int) -> torch.Tensor:
        """The keys of ``values[start:start + size]``, in this thread's scratch buffer."""
        part = values.flat[start : start + size]
        if values.kind == "keys":
            return part
        key_buffer, sign_buffer, _ = self._scratch(part.device)
        out = key_buffer[:size]
        self._float_keys(part, values.kind == "signed", out, sign_buffer[:size])
        return out

    def survivors_into(self, values: _Values, start: int, size: int) -> torch.Tensor | None:
        """``mask != 0`` for the chunk (``None`` if not pruned yet), in scratch."""
        if values.alive is None:
            return None
        flags = self._scratch(values.alive.device)[2][:size]
        torch.ne(values.alive[start : start + size], 0, out=flags)
        return flags

    def _scratch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This thread's keys, signs and survivors buffers on ``device``."""
        buffers: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
        buffers = self._local.__dict__.setdefault("buffers", {})
        found = buffers.get(device)
        if found is None:
            found = (
                torch.empty(self.chunk, dtype=self.key_dtype, device=device),
                torch.empty(self.chunk, dtype=self.key_dtype, device=device),
                torch.empty(self.chunk, dtype=torch.bool, device=device),
            )
            buffers[device] = found
        return found

    def flags(
        self, device: torch.device, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Three bool scratch buffers of ``size`` for this thread (allocated once)."""
        buffers: dict[torch.device, torch.Tensor] = self._local.__dict__.setdefault("flags", {})
        found = buffers.get(device)
        if found is None:
            found = torch.empty((3, self.chunk), dtype=torch.bool, device=device)
            buffers[device] = found
        return found[0, :size], found[1, :size], found[2, :size]

    def _float_keys(
        self, values: torch.Tensor, signed: bool, out: torch.Tensor, signs: torch.Tensor
    ) -> None:
        """Write the keys of float ``values`` into ``out`` (no other allocation)."""
        write_keys(values, signed, out, signs)

    def key_of(self, value: float) -> tuple[int, bool]:
        """The key of ``value`` rounded to the keys' float dtype, and whether it rounded down."""
        rounded = torch.tensor([value], dtype=self.float_dtype)
        key = torch.empty(1, dtype=self.key_dtype)
        self._float_keys(rounded, True, key, torch.empty_like(key))
        return int(key), float(rounded) < value

    def spans(self, index: int) -> list[tuple[int, int]]:
        """``(start, size)`` of every chunk of target ``index``."""
        n = getattr(self.targets[index].module, self.targets[index].name).numel()
        return [(start, min(self.chunk, n - start)) for start in range(0, n, self.chunk)]

    # -- the key source ----------------------------------------------------------------

    def __call__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(keys, survivors)`` for every chunk of every target, in order."""
        for index in range(len(self.targets)):
            yield from self.chunks(index)

    def chunks(self, index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(keys, survivors)`` for each chunk of target ``index``, in order."""
        values = self.values(index)
        for start, size in self.spans(index):
            yield self.keys_into(values, start, size), self.survivors_into(values, start, size)

    def sample(self, size: int) -> torch.Tensor:
        """Sorted keys of about ``size`` survivors: every s-th entry of every target.

        For random keys, evenly spaced quantiles of their uniform distribution.
        """
        total = sum(getattr(t.module, t.name).numel() for t in self.targets)
        if self.random_seed is not None:
            return torch.linspace(-(2**31), 2**31 - 1, size, dtype=torch.float64).to(torch.int32)
        stride = max(1, total // size)
        parts = []
        for index in range(len(self.targets)):
            values = self.values(index)
            picked = values.flat[stride // 2 :: stride].contiguous()
            if picked.numel() == 0:
                continue
            keys = torch.empty(picked.numel(), dtype=self.key_dtype, device=picked.device)
            self._float_keys(picked, values.kind == "signed", keys, torch.empty_like(keys))
            if values.alive is not None:
                keys = keys[values.alive[stride // 2 :: stride] != 0]
            parts.append(keys.cpu())
        if not parts:
            return torch.empty(0, dtype=self.key_dtype)
        return torch.cat(parts).sort().values


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
