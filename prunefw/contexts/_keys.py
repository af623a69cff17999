"""The keys of the streaming strategy: a criterion's scores as integer keys, chunk by chunk.

:class:`TargetKeys` computes them one target at a time, in chunks of
:data:`~prunefw._radix.CHUNK` entries, into scratch buffers allocated once per worker
thread; called, it is the :data:`~prunefw.selection.KeySource` that
:mod:`prunefw.contexts.streaming` selects over (the module docstring there says how
keys order like the scores).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from prunefw import _radix
from prunefw._radix import write_keys
from prunefw.contexts.base import importance_scores
from prunefw.criteria.base import PruningCriterion
from prunefw.reparametrization import mask_of
from prunefw.targets import PruningTarget

__all__ = ["TargetKeys"]

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
    like the scores they stand for (see :mod:`prunefw.contexts.streaming`). Calling
    the object yields ``(keys, survivors)`` for every chunk of every target: a
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
