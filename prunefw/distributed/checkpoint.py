"""Pruned models through ``torch.distributed.checkpoint`` (DCP): sharded save, any-layout load.

:func:`save_pruned_checkpoint` writes the model's ``state_dict`` -- ``weight_orig``
and ``weight_mask`` of every pruned tensor, sharded as the model is (each rank
writes its own blocks) -- plus any extra state (a :class:`~prunefw.GradualPruner`'s,
an optimizer's). :func:`load_pruned_checkpoint` reads it back into:

* a sharded (FSDP2) model: the reparametrization is rebuilt with sharded masks
  first, then DCP loads each rank's blocks;
* an unsharded model, in one process or in every DDP rank: DCP assembles the full
  tensors, then :func:`~prunefw.load_pruned_state_dict` rebuilds the pruning and
  loads them; the model is then ready for :func:`~prunefw.make_permanent` and export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from prunefw.checkpoint import load_pruned_state_dict
from prunefw.errors import CheckpointError, InvalidTypeError
from prunefw.reparametrization import (
    install_deepcopy_support,
    pruned_tensor_names,
    split_reparametrized_key,
)
from prunefw.targets import PruningTarget

from ._shards import apply_local_mask, commit, enforce_masks, is_dtensor, local_shard

__all__ = ["load_pruned_checkpoint", "save_pruned_checkpoint"]

_MODEL = "model"


def _inner(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    extra = dict(extra or {})
    if _MODEL in extra:
        raise CheckpointError(f"extra state cannot use the key {_MODEL!r}: it holds the model")
    return extra


def save_pruned_checkpoint(
    model: nn.Module, checkpoint_id: str, *, extra: Mapping[str, Any] | None = None
) -> None:
    """Save a pruned model (and ``extra`` state) with ``torch.distributed.checkpoint``.

    A collective when a process group is initialised: every rank calls it, each
    writes its own blocks (sharded tensors) or DCP writes replicated ones once.

    Args:
        model: The model: FSDP2-sharded, DDP-wrapped or plain, pruned or not.
        checkpoint_id: The checkpoint directory.
        extra: More state under its own keys, e.g. ``{"pruner": pruner.state_dict(),
            "step": step}`` (tensors, or picklable Python values).

    Raises:
        InvalidTypeError: ``model`` is not a module.
        CheckpointError: ``extra`` uses the key ``"model"``.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"save_pruned_checkpoint() expects an nn.Module, got {model!r}")
    state = {_MODEL: get_model_state_dict(model), **_check_extra(extra)}
    dcp.save(state, checkpoint_id=checkpoint_id)


def _prepare_sharded(model: nn.Module, keys: Mapping[str, Any]) -> None:
    """Give a sharded model the reparametrization (all-ones sharded masks) the checkpoint has."""
    modules = dict(model.named_modules())
    for key in keys:
        split = split_reparametrized_key(key, keys.keys())
        if split is None:
            continue
        module_name, name = split
        module = modules.get(module_name)
        if module is None or not isinstance(module._parameters.get(name), nn.Parameter):
            if module is not None and name in pruned_tensor_names(module):
                continue
            raise CheckpointError(
                f"checkpoint entry {key!r} is a pruning mask for {module_name}.{name}, which "
                "the model does not have"
            )
        target = PruningTarget(module, name, module_name)
        shard = local_shard(target)
        apply_local_mask(shard, torch.ones(shard.values.numel(), dtype=torch.bool))
        install_deepcopy_support(module)
        if is_dtensor(shard.stored):
            commit(module, name)


def load_pruned_checkpoint(
    model: nn.Module, checkpoint_id: str, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load what :func:`save_pruned_checkpoint` wrote into ``model``.

    ``model`` may be laid out differently from the model that saved: sharded over
    any number of ranks (every rank calls this), DDP-wrapped, or a plain model in a
    single process (no process group needed). Pruned tensors get their
    reparametrization first, so the masks load into ``weight_mask`` buffers.

    Args:
        model: A model with the saved one's architecture.
        checkpoint_id: The checkpoint directory.
        extra: Templates of the extra state to read, with the keys and structure it
            was saved with (e.g. ``{"pruner": pruner.state_dict()}``).

    Returns:
        The extra state read, under the keys of ``extra``.

    Raises:
        CheckpointError: A mask for a tensor the model does not have, or entries that
            do not fit it.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"load_pruned_checkpoint() expects an nn.Module, got {model!r}")
    extra = _check_extra(extra)
    metadata = FileSystemReader(checkpoint_id).read_metadata().state_dict_metadata
    prefix = _MODEL + "."
    saved = {k[len(prefix) :]: v for k, v in metadata.items() if k.startswith(prefix)}
    if not saved:
        raise CheckpointError(f"{checkpoint_id} holds no model state (no {prefix!r} entries)")
    if any(is_dtensor(p) for p in model.parameters()):
        _prepare_sharded(model, saved)
        state: dict[str, Any] = {_MODEL: get_model_state_dict(model), **extra}
        dcp.load(state, checkpoint_id=checkpoint_id)
        enforce_masks(model)
        return {key: state[key] for key in extra}
    tensors = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in saved.items()
        if isinstance(meta, TensorStorageMetadata)
    }
    state = {_MODEL: tensors, **extra}
    dcp.load(state, checkpoint_id=checkpoint_id)
    load_pruned_state_dict(_inner(model), state[_MODEL])
    return {key: state[key] for key in extra}
