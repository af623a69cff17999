"""Sharded targets: each rank's block of a DTensor, and torch's reparametrization on it.

A target whose Parameter is a :class:`~torch.distributed.tensor.DTensor` keeps torch's
reparametrization (``name_orig`` Parameter, ``name_mask`` buffer, a
:class:`~torch.nn.utils.prune.BasePruningMethod` forward pre-hook), with three
differences that make it work under FSDP2 (``fully_shard``):

* The mask buffer is a DTensor with the Parameter's mesh and placements: each rank
  stores the mask of its own block only.
* The hook is :class:`ShardedMask`, a :class:`~torch.nn.utils.prune.CustomFromMask`.
  Outside FSDP's forward it computes ``name_orig * name_mask`` like torch (a DTensor,
  block by block). Inside FSDP's forward, FSDP has all-gathered ``name_orig`` into a
  plain full tensor; the stored shards hold zeros at pruned entries (prunefw writes
  them when it prunes), so the gathered values are already masked and the hook only
  masks the *gradient* (:class:`_MaskGradient`, one bit-packed all-gather of the mask
  in backward). FSDP's all-gather and reduce-scatter thus see masked values, and the
  pruned entries stay exactly zero through optimizer steps (zero value, zero gradient).
* FSDP2 keeps the name of every Parameter it manages and swaps ``module.<name>``
  between the sharded and the all-gathered tensor. Once ``weight`` is registered as
  ``weight_orig`` its record is renamed (:func:`rename_fsdp_param`); that record is
  FSDP2's private ``FSDPParam._module_info.param_name``.

Only ``Shard(0)`` and ``Replicate`` placements are supported (FSDP2's default): then
each rank's block is a contiguous range of the tensor's flat (row-major) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.nn.utils import prune

from prunefw.errors import InvalidArgumentError, InvalidMaskError, TargetError
from prunefw.reparametrization import (
    mask_name,
    mask_of,
    orig_name,
    original_of,
    pruned_tensor_names,
    release_mask_reference,
)
from prunefw.targets import PruningTarget

from ._collectives import tally
from ._fsdp import fsdp_param_of, rename_fsdp_param, sharded_orig

__all__ = [
    "LocalShard",
    "ShardedMask",
    "apply_local_mask",
    "enforce_masks",
    "is_dtensor",
    "local_shard",
    "zero_pruned_shard",
]


def is_dtensor(value: object) -> bool:
    """Whether ``value`` is a :class:`~torch.distributed.tensor.DTensor`."""
    return isinstance(value, DTensor)


def stored_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """The Parameter holding ``module.name``'s values: ``name_orig`` once pruned, else ``name``."""
    orig = original_of(module, name)
    if orig is not None:
        return orig
    param = module._parameters.get(name)
    if param is None:
        raise TargetError(f"{type(module).__name__} has no parameter {name!r}")
    return param


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@dataclass
class LocalShard:
    """This rank's block of one target.

    Attributes:
        target: The target.
        stored: The Parameter holding the values (``weight`` or ``weight_orig``).
        values: This rank's block of the stored values (a plain tensor, no copy).
        mask: This rank's block of the current mask, or ``None`` if never pruned.
        offset: Where the block starts in the full tensor's flat order.
        owned: Whether this rank counts the block in global counts (of replicas of
            one block, only the one at coordinate 0 of every replicated mesh
            dimension does; plain tensors count on rank 0).
    """

    target: PruningTarget
    stored: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None
    offset: int
    owned: bool

    @property
    def shape(self) -> torch.Size:
        """The full tensor's shape."""
        return self.stored.shape

    @property
    def sharded(self) -> bool:
        """Whether the target is a DTensor (else a plain tensor, replicated on every rank)."""
        return isinstance(self.stored, DTensor)

    def survivors(self) -> torch.Tensor | None:
        """The block's unpruned entries, flat bool, or ``None`` if never pruned."""
        return None if self.mask is None else self.mask.detach().reshape(-1) != 0

    def survivor_count(self) -> int:
        """How many of the block's entries are unpruned."""
        alive = self.survivors()
        return self.values.numel() if alive is None else int(alive.sum())

    def block(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's block of a full tensor of the target's shape."""
        flat = full.reshape(-1)[self.offset : self.offset + self.values.numel()]
        return flat.view(self.values.shape)

    def distribute(self, local: torch.Tensor) -> torch.Tensor:
        """A tensor with this block's values, laid out like the target (DTensor or not)."""
        if not isinstance(self.stored, DTensor):
            return local
        return DTensor.from_local(
            local,
            self.stored.device_mesh,
            self.stored.placements,
            run_check=False,
            shape=self.stored.shape,
            stride=self.stored.stride(),
        )


def _block_rows(tensor: DTensor) -> tuple[int, int, bool]:
    """``(first row, rows, owned)`` of this rank's block of a Shard(0)/Replicate DTensor."""
    mesh = tensor.device_mesh
    coordinate = mesh.get_coordinate()
    rows = tensor.shape[0] if tensor.dim() else 1
    if coordinate is None:  # this rank is not in the tensor's mesh: an empty block
        return 0, 0, False
    low, high, owned = 0, rows, True
    for dim, placement in enumerate(tensor.placements):
        if isinstance(placement, Replicate):
            owned &= coordinate[dim] == 0
            continue
        size = high - low
        chunk = math.ceil(size / mesh.size(dim)) if size else 0
        low = min(low + coordinate[dim] * chunk, high)
        high = min(low + chunk, high)
    return low, high - low, owned


def check_placements(target: PruningTarget, tensor: torch.Tensor) -> None:
    """Refuse a DTensor whose blocks are not contiguous row ranges.

    Raises:
        InvalidArgumentError: A placement other than ``Shard(0)`` or ``Replicate``
            (e.g. ``Shard(1)`` from tensor parallelism, or ``Partial``).
    """
    if not isinstance(tensor, DTensor):
        return
    for placement in tensor.placements:
        if isinstance(placement, Replicate):
            continue
        if type(placement) is Shard and placement.dim == 0 and tensor.dim() > 0:
            continue
        raise InvalidArgumentError(
            f"{target.label} is a DTensor with placements {tuple(tensor.placements)}; "
            "distributed pruning supports Shard(0) and Replicate (FSDP2's default "
            "sharding), where every rank holds a contiguous range of rows"
        )


def local_shard(target: PruningTarget) -> LocalShard:
    """This rank's :class:`LocalShard` of ``target``.

    Raises:
        InvalidArgumentError: Unsupported placements.
        InvalidMaskError: A stored mask laid out differently from the weights.
    """
    stored = stored_tensor(target.module, target.name)
    check_placements(target, stored)
    mask = mask_of(target.module, target.name)
    values = _local(stored).detach()
    if isinstance(stored, DTensor):
        first, rows, owned = _block_rows(stored)
        row_numel = math.prod(stored.shape[1:]) if stored.dim() else 1
        offset = first * row_numel
        if values.numel() != rows * row_numel:
            raise InvalidArgumentError(
                f"{target.label}: this rank holds {values.numel()} entries, expected rows "
                f"{first}..{first + rows} of {tuple(stored.shape)} (torch.chunk sharding)"
            )
    else:
        offset, owned = 0, dist.get_rank() == 0
    local_mask = None
    if mask is not None:
        if isinstance(mask, DTensor):
            if not isinstance(stored, DTensor) or mask.placements != stored.placements:
                raise InvalidMaskError(
                    f"{target.label} has a mask laid out as {getattr(mask, 'placements', None)} "
                    f"but weights laid out as {getattr(stored, 'placements', None)}"
                )
            local_mask = mask.to_local().detach()
        elif mask.shape == stored.shape and isinstance(stored, DTensor):
            # Pruned before sharding: the mask is still a full, replicated buffer.
            local_mask = mask.detach().reshape(-1)[offset : offset + values.numel()]
            local_mask = local_mask.view(values.shape)
        else:
            local_mask = mask.detach()
    return LocalShard(target, stored, values, local_mask, offset, owned)


# -- the mask in backward --------------------------------------------------------------

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _pack(bits: torch.Tensor) -> torch.Tensor:
    return (bits.view(-1, 8).to(torch.uint8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def _unpack(packed: torch.Tensor) -> torch.Tensor:
    return (packed.unsqueeze(1) & _BIT_WEIGHTS).ne(0).reshape(-1)


def gather_mask(mask: DTensor) -> torch.Tensor:
    """The full bool mask of a DTensor mask, on every rank of its mesh.

    For a 1-D mesh with ``Shard(0)`` (FSDP2) the blocks travel bit-packed (one bit
    per entry, one ``all_gather_into_tensor``); otherwise as bools through
    :meth:`~torch.distributed.tensor.DTensor.full_tensor`.
    """
    mesh = mask.device_mesh
    if mesh.ndim != 1 or mask.placements != (Shard(0),) or mask.dim() == 0:
        full = cast(DTensor, mask.ne(0)).full_tensor()
        tally("all_gather", full.numel() // max(mesh.size(), 1), mesh.size())
        return full
    world = mesh.size()
    rows = mask.shape[0]
    row_numel = math.prod(mask.shape[1:])
    block = math.ceil(rows / world) * row_numel
    padded = math.ceil(block / 8) * 8
    bits = torch.zeros(padded, dtype=torch.bool)
    local = mask.to_local().reshape(-1)
    bits[: local.numel()] = local != 0
    packed = _pack(bits)
    out = torch.empty(world * packed.numel(), dtype=torch.uint8)
    dist.all_gather_into_tensor(out, packed, group=mesh.get_group())
    tally("all_gather", packed.numel(), world)
    full = _unpack(out).view(world, padded)[:, :block].reshape(-1)[: rows * row_numel]
    return full.view(mask.shape)


class _MaskGradient(torch.autograd.Function):
    """Identity on FSDP's all-gathered weights (already masked); masks the gradient."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, mask: DTensor) -> torch.Tensor:
        ctx.mask = mask
        return weights.view_as(weights)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        keep = gather_mask(ctx.mask)
        return grad * keep.to(grad.dtype), None


class ShardedMask(prune.CustomFromMask):
    """torch's ``CustomFromMask`` hook for a tensor stored as DTensor shards.

    ``prune.is_pruned``, ``prune.remove`` and :func:`prunefw.make_permanent` see an
    ordinary pruning hook. See the module docstring for what differs.
    """

    def apply_mask(self, module: nn.Module) -> torch.Tensor:
        """``name_orig * name_mask``, or, inside FSDP's forward, the gradient-masked weights."""
        assert self._tensor_name is not None
        orig = getattr(module, orig_name(self._tensor_name))
        mask = getattr(module, mask_name(self._tensor_name))
        if isinstance(mask, DTensor) and not isinstance(orig, DTensor):
            # FSDP all-gathered the stored values, whose pruned entries are zero.
            return _MaskGradient.apply(orig, mask)
        return orig * mask.to(dtype=orig.dtype)

    def remove(self, module: nn.Module) -> None:
        """Make the pruning permanent in place, keeping FSDP's storage and records.

        torch's ``remove`` assigns ``orig.data``, which would detach the Parameter
        from FSDP's sharded storage; here the stored shard is multiplied by the mask
        in place, ``name_orig`` is registered as ``name`` again, and FSDP is told.
        """
        name = self._tensor_name
        assert name is not None
        orig = sharded_orig(module, name)
        mask = module._buffers[mask_name(name)]
        assert mask is not None
        with torch.no_grad():
            _local(orig).mul_(_local(mask).to(dtype=orig.dtype))
        current = module._parameters.pop(orig_name(name))
        del module._buffers[mask_name(name)]
        vars(module).pop(name, None)
        module._parameters[name] = current
        rename_fsdp_param(module, orig_name(name), name)
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, RefreshAfterForward) and hook.name == name:
                del module._forward_hooks[key]


class RefreshAfterForward:
    """Forward hook: point ``module.<name>`` back at the sharded ``orig * mask``.

    During FSDP's forward the attribute is a view of the all-gathered weights, whose
    storage FSDP frees when it reshards; between forwards it is a DTensor, like an
    unpruned FSDP Parameter.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        orig = sharded_orig(module, self.name)
        mask = module._buffers.get(mask_name(self.name))
        if isinstance(orig, DTensor) and mask is not None:
            with torch.no_grad():
                vars(module)[self.name] = orig * mask.to(dtype=orig.dtype)


def apply_local_mask(shard: LocalShard, keep: torch.Tensor) -> None:
    """Prune ``shard``'s target with this rank's block of a keep-mask.

    The new mask is the old one times ``keep``. The first time, the
    reparametrization is registered exactly as torch's ``BasePruningMethod.apply``
    does (``name_orig`` Parameter, ``name_mask`` buffer, a :class:`ShardedMask`
    forward pre-hook, ``name = name_orig * name_mask``), without its two temporary
    full-size tensors (``ones_like(orig)`` and its product with the mask); later,
    the mask buffer is replaced. Reversible by the rollback (only module containers
    and attributes change); :func:`commit` does the irreversible part after every
    rank agreed.
    """
    module, name = shard.target.module, shard.target.name
    dtype = shard.values.dtype
    new = keep.reshape(shard.values.shape).to(dtype)
    if shard.mask is not None:
        new.mul_(shard.mask)
    if not shard.sharded:
        prune.custom_from_mask(module, name, new)
        release_mask_reference(module, name)
        return
    mask = shard.distribute(new)
    if name not in pruned_tensor_names(module):
        orig = module._parameters[name]
        assert orig is not None
        method = ShardedMask(mask)
        method._tensor_name = name
        module.register_parameter(orig_name(name), orig)
        del module._parameters[name]
        module.register_buffer(mask_name(name), mask)
        vars(module)[name] = method.apply_mask(module)
        module.register_forward_pre_hook(method)
        return
    module._buffers[mask_name(name)] = mask
    for key, hook in list(module._forward_pre_hooks.items()):
        mine = isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name
        if mine and not isinstance(hook, ShardedMask):  # pruned before sharding: take over
            replacement = ShardedMask(mask)
            replacement._tensor_name = name
            module._forward_pre_hooks[key] = replacement
    release_mask_reference(module, name)
    vars(module)[name] = shard.stored * mask


def zero_pruned_shard(module: nn.Module, name: str) -> None:
    """Write zeros into the stored shard at pruned entries, in place (FSDP sees them)."""
    orig = sharded_orig(module, name)
    mask = module._buffers.get(mask_name(name))
    if isinstance(orig, DTensor) and mask is not None:
        with torch.no_grad():
            _local(orig).mul_(_local(mask).to(dtype=orig.dtype))


def commit(module: nn.Module, name: str) -> None:
    """The irreversible part of pruning a DTensor target, after every rank agreed.

    Tells FSDP2 about the ``name_orig`` registration, zeroes the pruned entries of
    the stored shard and installs :class:`RefreshAfterForward`.
    """
    if fsdp_param_of(module, name) is not None and original_of(module, name) is not None:
        rename_fsdp_param(module, name, orig_name(name))
    zero_pruned_shard(module, name)
    if not any(
        isinstance(hook, RefreshAfterForward) and hook.name == name
        for hook in module._forward_hooks.values()
    ):
        module.register_forward_hook(RefreshAfterForward(name))


def enforce_masks(model: nn.Module) -> int:
    """Re-zero the pruned entries of ``model``'s sharded pruned tensors (local, no collective).

    Only needed after writing into ``*_orig`` shards by hand (e.g. loading values
    saved by a single-process model, whose ``weight_orig`` keeps the pruned
    values): FSDP all-gathers the stored values, so they must be zero at pruned
    entries. :func:`~prunefw.distributed.load_pruned_checkpoint` calls it.

    Returns:
        How many tensors were re-zeroed.
    """
    count = 0
    for module in model.modules():
        for name in pruned_tensor_names(module):
            if isinstance(module._buffers.get(mask_name(name)), DTensor):
                zero_pruned_shard(module, name)
                orig = sharded_orig(module, name)
                mask = module._buffers[mask_name(name)]
                assert mask is not None
                with torch.no_grad():
                    vars(module)[name] = orig * mask.to(dtype=orig.dtype)
                count += 1
    return count
