"""torch's pruning reparametrization (``name_orig``, ``name_mask``, hook), in one place.

Every other module of prunefw asks this one how torch stores a pruned tensor: its
original (:func:`original_of`), its mask (:func:`mask_of`), whether it is pruned
(:func:`is_pruned_tensor`), the state_dict keys (:func:`split_reparametrized_key`),
and the qualified names of modules (:func:`qualified_names`).

torch keeps a pruned tensor as a Parameter ``name_orig``, a buffer ``name_mask`` and
a forward pre-hook (a :class:`~torch.nn.utils.prune.BasePruningMethod`) that
recomputes the plain attribute ``name = name_orig * name_mask`` before every
forward. This module reads that state and fixes two known problems with it:

* the ``CustomFromMask`` hook keeps the mask it was given; after
  :func:`~torch.nn.utils.prune.global_unstructured` that is a view into the whole
  concatenated mask of the model, kept alive by every hook (pytorch/pytorch#34257).
  :func:`release_mask_reference` points it at the module's own mask buffer instead.
* ``copy.deepcopy`` fails on a pruned module, because ``name`` is a non-leaf tensor.
  :func:`install_deepcopy_support` gives the module an instance-level
  ``__deepcopy__`` that copies everything else and recomputes ``name`` in the copy.
  Pickling keeps working; unpickling such a module needs prunefw importable.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = [
    "MASK_SUFFIX",
    "ORIG_SUFFIX",
    "convert_mask",
    "find_pruning_hook",
    "install_mask",
    "install_deepcopy_support",
    "is_pruned_tensor",
    "iter_pruned_tensors",
    "mask_name",
    "mask_of",
    "orig_name",
    "original_of",
    "pruned_tensor_names",
    "qualified_names",
    "refresh_pruned_tensors",
    "release_mask_reference",
    "share_mask",
    "split_reparametrized_key",
    "uninstall_deepcopy_support",
]

#: Suffix of the Parameter torch keeps the original (unpruned) values in.
ORIG_SUFFIX = "_orig"
#: Suffix of the buffer torch keeps the mask in.
MASK_SUFFIX = "_mask"


def orig_name(name: str) -> str:
    """The attribute holding ``name``'s original values once pruned: ``name + "_orig"``."""
    return name + ORIG_SUFFIX


def mask_name(name: str) -> str:
    """The buffer holding ``name``'s mask once pruned: ``name + "_mask"``."""
    return name + MASK_SUFFIX


def qualified_names(model: nn.Module | None) -> dict[int, str]:
    """Map ``id(module)`` to its qualified name in ``model`` (``{}`` without a model).

    A module registered under several names keeps the first one
    (:meth:`torch.nn.Module.named_modules` order).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 2))
        >>> qualified_names(model)[id(model[0])]
        '0'
    """
    if model is None:
        return {}
    return {id(module): name for name, module in model.named_modules()}


def original_of(module: nn.Module, name: str) -> nn.Parameter | None:
    """Return the Parameter ``name_orig`` of a pruned tensor, or ``None`` if it has none."""
    value = module._parameters.get(orig_name(name))
    return value if isinstance(value, nn.Parameter) else None


def mask_of(module: nn.Module, name: str) -> torch.Tensor | None:
    """Return the mask buffer ``name_mask`` of a pruned tensor, or ``None`` if it has none."""
    value = module._buffers.get(mask_name(name))
    return value if isinstance(value, torch.Tensor) else None


def is_pruned_tensor(module: nn.Module, name: str) -> bool:
    """Whether ``module.name`` is stored the way torch stores a pruned tensor.

    That is: a Parameter ``name_orig`` and a buffer ``name_mask`` (the hook may be
    missing, e.g. in a module restored from a state_dict before its pruning is
    rebuilt).

    Example:
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> layer = prune.random_unstructured(nn.Linear(3, 3), "weight", amount=0.5)
        >>> is_pruned_tensor(layer, "weight"), is_pruned_tensor(layer, "bias")
        (True, False)
    """
    return original_of(module, name) is not None and mask_of(module, name) is not None


def split_reparametrized_key(key: str, keys: Collection[str]) -> tuple[str, str] | None:
    """Split the state_dict key of a mask into ``(module name, tensor name)``.

    Args:
        key: A state_dict key, e.g. ``"features.0.weight_mask"``.
        keys: All keys of the state_dict: a mask counts only next to its original.

    Returns:
        ``("features.0", "weight")``, or ``None`` if ``key`` is not a mask with its
        ``_orig`` beside it.

    Example:
        >>> split_reparametrized_key("0.weight_mask", {"0.weight_orig", "0.weight_mask"})
        ('0', 'weight')
        >>> split_reparametrized_key("0.weight", {"0.weight"}) is None
        True
    """
    if not key.endswith(MASK_SUFFIX):
        return None
    qualified = key[: -len(MASK_SUFFIX)]
    if orig_name(qualified) not in keys:
        return None
    module_name, _, name = qualified.rpartition(".")
    return module_name, name


def pruned_tensor_names(module: nn.Module) -> list[str]:
    """Return the names of ``module``'s own tensors that carry a pruning hook.

    Example:
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> layer = prune.random_unstructured(nn.Linear(3, 3), "weight", amount=0.5)
        >>> pruned_tensor_names(layer)
        ['weight']
    """
    return [
        hook._tensor_name
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]


def iter_pruned_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield ``(module qualified name, module, tensor name)`` for every pruned tensor."""
    for qualname, module in model.named_modules():
        for name in pruned_tensor_names(module):
            yield qualname, module, name


def find_pruning_hook(module: nn.Module, name: str) -> prune.BasePruningMethod:
    """Return the pruning hook of ``module.name``.

    Raises:
        ValueError: ``module.name`` is not pruned.
    """
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name:
            return hook
    raise ValueError(f"{type(module).__name__}.{name} is not pruned")


def release_mask_reference(module: nn.Module, name: str) -> None:
    """Make ``module.name``'s ``CustomFromMask`` hooks refer to the module's mask buffer.

    Such a hook only reads its mask while being applied; afterwards the reference
    just keeps memory alive (for global pruning: the whole concatenated mask).

    Args:
        module: A module whose tensor ``name`` is pruned.
        name: The tensor's name.
    """
    hook = find_pruning_hook(module, name)
    buffer = getattr(module, mask_name(name))
    methods = list(hook) if isinstance(hook, prune.PruningContainer) else [hook]
    for method in methods:
        if isinstance(method, prune.CustomFromMask):
            method.mask = buffer


def install_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Prune ``module.name`` with a finished mask, as ``prune.custom_from_mask`` would.

    The result is torch's reparametrization, exactly as
    :func:`torch.nn.utils.prune.custom_from_mask` leaves it (the Parameter moved to
    ``name_orig``, a ``CustomFromMask`` forward pre-hook, or a ``PruningContainer``
    if the tensor was pruned before, ``name`` recomputed with autograd history), but
    ``mask`` itself becomes the ``name_mask`` buffer: torch's ``ones_like`` default
    mask, the cast of the given mask and the product with the old mask are skipped,
    so the only tensor allocated is the recomputed ``name`` (for a bool mask as
    ``orig * mask``, so that its autograd history keeps the 1-byte mask rather than
    a cast copy; torch's hook recomputes it its own way at the next forward). The
    hook refers to the buffer (see :func:`release_mask_reference`).

    Args:
        module: The module.
        name: The tensor's name.
        mask: The complete new mask, of the tensor's shape, on its device: 0/1 in
            any real dtype, or bool (1 byte per entry; torch's hook casts it to the
            weight's dtype when it recomputes ``name``). It must already include
            the current mask (entries pruned before must be 0 in it); nothing
            checks or combines it.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> install_mask(layer, "weight", torch.tensor([[True, False], [False, True]]))
        >>> prune.is_pruned(layer), layer.weight_mask.dtype
        (True, torch.bool)
        >>> torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
        True
    """
    method: prune.BasePruningMethod = prune.CustomFromMask(mask)
    method._tensor_name = name
    old: prune.BasePruningMethod | None = None
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name:
            old = hook
            del module._forward_pre_hooks[key]
    if isinstance(old, prune.PruningContainer):
        old.add_pruning_method(method)
        method = old
    elif old is not None:
        container = prune.PruningContainer(old)
        container.add_pruning_method(method)
        method = container
    else:
        module.register_parameter(orig_name(name), getattr(module, name))
        del module._parameters[name]
    module.register_buffer(mask_name(name), mask)
    if mask.dtype == torch.bool:
        # orig * mask (bool promoted inside the op): the same values as torch's
        # apply_mask, but autograd keeps the 1-byte mask, not a float copy of it.
        recomputed = getattr(module, orig_name(name)) * mask
    else:
        recomputed = method.apply_mask(module)
    setattr(module, name, recomputed)
    module.register_forward_pre_hook(method)


def convert_mask(module: nn.Module, name: str, dtype: torch.dtype) -> None:
    """Store the mask of the pruned ``module.name`` in ``dtype`` (e.g. ``torch.bool``).

    The buffer is replaced by a converted copy (if its dtype differs) and the
    tensor's ``CustomFromMask`` hooks are pointed at it; ``name`` is unchanged
    (``orig * mask`` is the same in any mask dtype).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = prune.random_unstructured(nn.Linear(3, 3), "weight", amount=0.5)
        >>> convert_mask(layer, "weight", torch.bool)
        >>> layer.weight_mask.dtype
        torch.bool
    """
    mask = mask_of(module, name)
    if mask is None:
        raise ValueError(f"{type(module).__name__}.{name} is not pruned")
    if mask.dtype != dtype:
        module._buffers[mask_name(name)] = mask.to(dtype)
        release_mask_reference(module, name)


def share_mask(module: nn.Module, name: str, aliases: Iterable[tuple[nn.Module, str]]) -> None:
    """Give every alias of the pruned ``module.name`` the same reparametrization.

    The aliases (other places of the same Parameter, e.g. tied embeddings) are
    pruned with :func:`torch.nn.utils.prune.custom_from_mask` using ``module``'s
    mask, and then hold the very same mask buffer object, so every alias computes
    ``orig * mask`` from one ``orig`` and one ``mask``. :func:`torch.nn.utils.prune.remove`
    on each of them later writes the same values into the one Parameter, so the tie
    survives.

    Args:
        module: The module whose tensor was pruned.
        name: The tensor's name.
        aliases: The other ``(module, name)`` places of the same Parameter.
    """
    mask = mask_of(module, name)
    if mask is None:
        raise ValueError(f"{type(module).__name__}.{name} is not pruned")
    for alias, alias_name in aliases:
        prune.custom_from_mask(alias, alias_name, mask)
        alias._buffers[mask_name(alias_name)] = mask
        release_mask_reference(alias, alias_name)
        refresh_pruned_tensor(alias, alias_name)


def refresh_pruned_tensor(module: nn.Module, name: str) -> None:
    """Recompute ``name = name_orig * name_mask`` if ``name`` is pruned (else do nothing).

    torch does this in the forward pre-hook, so between an optimizer step and the next
    forward pass the plain attribute still holds the old weights; call this to make it
    current at once (before scoring the weights, or after ``load_state_dict``).
    """
    if name in pruned_tensor_names(module):
        setattr(module, name, find_pruning_hook(module, name).apply_mask(module))


def refresh_pruned_tensors(module: nn.Module) -> None:
    """Recompute ``name = name_orig * name_mask`` for every pruned tensor of ``module``."""
    for name in pruned_tensor_names(module):
        refresh_pruned_tensor(module, name)


class _PrunedModuleDeepcopy:
    """Instance-level ``__deepcopy__`` for a module with pruning hooks."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, memo: dict[int, Any]) -> nn.Module:
        module = self.module
        for name in pruned_tensor_names(module):
            value = vars(module).get(name)
            if isinstance(value, torch.Tensor) and id(value) not in memo:
                # Stands in for the non-leaf tensor wherever the state refers to it;
                # replaced by a properly recomputed one below.
                memo[id(value)] = value.detach().clone()
        cls = type(module)
        new = cls.__new__(cls)
        memo[id(module)] = new
        state = module.__getstate__()
        state.pop("__deepcopy__", None)
        new.__setstate__(copy.deepcopy(state, memo))
        refresh_pruned_tensors(new)
        if pruned_tensor_names(new):
            install_deepcopy_support(new)
        return new


def install_deepcopy_support(module: nn.Module) -> None:
    """Let ``copy.deepcopy`` copy ``module`` although it has pruned tensors.

    Idempotent. The copy has its own ``name_orig``, ``name_mask`` and hook, and its
    ``name`` attribute is recomputed from them (with autograd history, like the
    original's).

    Example:
        >>> import copy
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> layer = prune.random_unstructured(nn.Linear(3, 3), "weight", amount=0.5)
        >>> install_deepcopy_support(layer)
        >>> clone = copy.deepcopy(layer)
        >>> bool((clone.weight_mask == layer.weight_mask).all())
        True
    """
    if not isinstance(vars(module).get("__deepcopy__"), _PrunedModuleDeepcopy):
        vars(module)["__deepcopy__"] = _PrunedModuleDeepcopy(module)


def uninstall_deepcopy_support(module: nn.Module) -> None:
    """Remove what :func:`install_deepcopy_support` added, if anything."""
    if isinstance(vars(module).get("__deepcopy__"), _PrunedModuleDeepcopy):
        del vars(module)["__deepcopy__"]
