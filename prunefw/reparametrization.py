"""Helpers around torch's pruning reparametrization (``name_orig``, ``name_mask``, hook).

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
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = [
    "find_pruning_hook",
    "install_deepcopy_support",
    "iter_pruned_tensors",
    "pruned_tensor_names",
    "refresh_pruned_tensors",
    "release_mask_reference",
    "uninstall_deepcopy_support",
]


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
    buffer = getattr(module, name + "_mask")
    methods = list(hook) if isinstance(hook, prune.PruningContainer) else [hook]
    for method in methods:
        if isinstance(method, prune.CustomFromMask):
            method.mask = buffer


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
