"""Collectives that all ranks agree to run, and a tally of the bytes they move.

Every collective a distributed prune issues is preceded by a *vote*: a one-element
all-reduce in which each rank says whether it failed since the last vote. A rank
that raises anywhere in its local work (a criterion, a check, a bad mask) does not
reach the next collective; it casts a failing vote instead, which meets the other
ranks' vote before that collective. Then every rank knows, every rank raises (the
failing one its own exception, the others :class:`DistributedPruningError` naming
it), and every rank's transaction rolls its model back. No rank waits forever in a
collective that another rank will never join.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from prunefw.errors import PrunefwError

__all__ = [
    "CollectiveStats",
    "Collectives",
    "DistributedPruningError",
    "collective_stats",
    "reset_collective_stats",
    "tally",
]

T = TypeVar("T")


class DistributedPruningError(PrunefwError, RuntimeError):
    """A distributed prune stopped on every rank because of another rank, or a disagreement.

    Raised on the ranks that did not fail themselves when another rank failed (the
    message names it and its error), when the ranks called ``prune()`` with
    different plans, or when replicated (DDP) ranks computed different masks.
    Every rank's model is left exactly as it was.
    """


@dataclasses.dataclass
class CollectiveStats:
    """What this rank's collectives moved since the last :func:`reset_collective_stats`.

    Attributes:
        calls: Collectives issued (votes included).
        votes: Of which agreement votes (8 bytes each).
        payload_bytes: Bytes this rank handed to collectives (its input tensors).
        wire_bytes: Bytes this rank sends with the usual ring algorithms:
            ``2 (N - 1) / N * B`` for an all-reduce of ``B`` bytes, ``(N - 1) * B`` for
            an all-gather of ``B`` bytes per rank, ``B`` for a broadcast from this rank.
    """

    calls: int = 0
    votes: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0


_STATS = CollectiveStats()


def collective_stats() -> CollectiveStats:
    """A copy of this process's collective tally (see :class:`CollectiveStats`)."""
    return dataclasses.replace(_STATS)


def reset_collective_stats() -> None:
    """Zero this process's collective tally."""
    global _STATS
    _STATS = CollectiveStats()


def tally(kind: str, nbytes: int, world: int) -> None:
    """Add one collective of ``kind`` (``all_reduce``, ``all_gather``, ``broadcast``)."""
    _STATS.calls += 1
    _STATS.payload_bytes += nbytes
    if kind == "all_reduce":
        _STATS.wire_bytes += (2 * (world - 1) * nbytes) // max(world, 1)
    elif kind == "all_gather":
        _STATS.wire_bytes += (world - 1) * nbytes
    else:
        _STATS.wire_bytes += nbytes


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 500 else text[:497] + "..."


class Collectives:
    """The collectives of one distributed prune, over the default process group.

    Every method except :meth:`vote` first votes, so a rank that failed in between
    is noticed before any payload is exchanged (see the module docstring).
    """

    def __init__(self) -> None:
        self.world = dist.get_world_size()
        self.rank = dist.get_rank()
        self.aborted = False

    def vote(self, error: BaseException | None = None) -> None:
        """Agree that no rank failed; cast ``error`` as this rank's failure.

        Raises:
            DistributedPruningError: Another rank voted with an error (raised only on
                ranks that passed ``error=None``; a failing rank returns and re-raises
                its own exception).
        """
        flag = torch.tensor([0 if error is None else 1], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        _STATS.votes += 1
        tally("all_reduce", 8, self.world)
        if not int(flag[0]):
            return
        self.aborted = True
        messages: list[str | None] = [None] * self.world
        dist.all_gather_object(messages, None if error is None else _describe(error))
        if error is None:
            failed = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
            raise DistributedPruningError(
                f"pruning failed on another rank ({failed}); every rank left its model unchanged"
            )

    def run(self, body: Callable[[], T]) -> T:
        """Run ``body``, then a final vote; on a local error, tell the other ranks first."""
        try:
            result = body()
            self.vote()
        except BaseException as exc:
            if not self.aborted:
                self.aborted = True
                self.vote(exc)
            raise
        return result

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Vote, then all-reduce ``tensor`` in place (``op``: ``sum``, ``min`` or ``max``)."""
        self.vote()
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
        tally("all_reduce", tensor.numel() * tensor.element_size(), self.world)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Vote, then gather ``tensor`` (same shape on every rank) as ``[world, *shape]``."""
        self.vote()
        tensor = tensor.contiguous()
        out = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(out, tensor)
        tally("all_gather", tensor.numel() * tensor.element_size(), self.world)
        return torch.stack(out)

    def all_gather_object(self, value: object) -> list[object]:
        """Vote, then gather one picklable object per rank."""
        self.vote()
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, value)
        tally("all_gather", len(repr(value)), self.world)
        return out

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Vote, then broadcast ``tensor`` in place from rank ``src``."""
        self.vote()
        dist.broadcast(tensor, src=src)
        tally("broadcast", tensor.numel() * tensor.element_size(), self.world)
        return tensor
