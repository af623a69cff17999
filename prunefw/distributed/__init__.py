"""Pruning sharded (FSDP2) and data-parallel (DDP) models on :mod:`torch.distributed`.

There is nothing new to call: ``GlobalPruningContext(model, criteria).prune()`` and
``LayerPruningContext(...).prune()`` detect an initialised process group and
dispatch here (see ``docs/distributed.md``):

* **Sharded** -- some target is a :class:`~torch.distributed.tensor.DTensor`
  (FSDP2's ``fully_shard``): global thresholds are found by a radix select whose
  histograms are all-reduced (each rank counts its own blocks; no tensor is
  gathered), and each rank's mask is its block of the mask single-process pruning
  gives the same full weights. Masks are sharded DTensor buffers; FSDP keeps
  working (its all-gathers and reduce-scatters see masked values).
* **Replicated** -- the model contains a ``DistributedDataParallel``: every rank
  prunes its replica, random criteria take rank 0's generator state, and the ranks
  check that their masks are identical.

In both, ``prune()`` is a collective (every rank calls it, with the same plan), and
it is all-or-nothing across ranks: if any rank raises, every rank raises (the others
:class:`DistributedPruningError`) and every model is left unchanged.

Checkpoints: :func:`save_pruned_checkpoint` and :func:`load_pruned_checkpoint`
(``torch.distributed.checkpoint``, sharded; loads into sharded, DDP or single-process
models). :func:`collective_stats` tallies what the collectives moved.
"""

from __future__ import annotations

from ._collectives import (
    CollectiveStats,
    DistributedPruningError,
    collective_stats,
    reset_collective_stats,
)
from ._flow import distributed_prune_for, prune_replicated, prune_sharded, sync_generators
from ._shards import ShardedMask, enforce_masks, gather_mask
from .checkpoint import load_pruned_checkpoint, save_pruned_checkpoint

__all__ = [
    "CollectiveStats",
    "DistributedPruningError",
    "ShardedMask",
    "collective_stats",
    "distributed_prune_for",
    "enforce_masks",
    "gather_mask",
    "load_pruned_checkpoint",
    "prune_replicated",
    "prune_sharded",
    "reset_collective_stats",
    "save_pruned_checkpoint",
    "sync_generators",
]
