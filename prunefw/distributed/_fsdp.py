"""FSDP2's records of the Parameters it manages, found and renamed for pruning.

FSDP2 (``fully_shard``) keeps, per managed Parameter, an ``FSDPParam`` whose
``_module_info.param_name`` names the attribute it swaps between the sharded and
the all-gathered tensor. Once torch's reparametrization registers ``weight`` as
``weight_orig``, that name must follow. These are FSDP2 internals
(``torch.distributed._composable_state._module_state_mapping``,
``FSDPParam._module_info``), kept to this one module; tested with torch 2.13.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from prunefw.reparametrization import orig_name

__all__ = ["fsdp_param_of", "fsdp_unit_of", "rename_fsdp_param", "sharded_orig"]

_FSDP_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def _fsdp_states() -> Iterator[tuple[nn.Module, Any]]:
    try:
        from torch.distributed._composable_state import _module_state_mapping
    except ImportError:  # pragma: no cover - torch without composable FSDP
        return
    for unit, ref in list(_module_state_mapping.items()):
        state = ref()
        group = getattr(state, "_fsdp_param_group", None) if state is not None else None
        if group is not None:
            yield unit, group


def _find_fsdp(module: nn.Module, param_name: str) -> tuple[nn.Module, Any] | None:
    for unit, group in _fsdp_states():
        for fsdp_param in getattr(group, "fsdp_params", ()):
            info = getattr(fsdp_param, "_module_info", None)
            if info is not None and info.module is module and info.param_name == param_name:
                return unit, fsdp_param
    return None


def fsdp_param_of(module: nn.Module, param_name: str) -> Any | None:
    """FSDP2's record (``FSDPParam``) of ``module.<param_name>``, or ``None``."""
    cache = _FSDP_CACHE.setdefault(module, {})
    ref = cache.get(param_name)
    found = ref() if ref is not None else None
    if found is not None and found._module_info.param_name == param_name:
        return found
    hit = _find_fsdp(module, param_name)
    if hit is None:
        cache.pop(param_name, None)
        return None
    cache[param_name] = weakref.ref(hit[1])
    return hit[1]


def fsdp_unit_of(module: nn.Module, param_name: str) -> nn.Module | None:
    """The module ``fully_shard`` was applied to that manages ``module.<param_name>``."""
    hit = _find_fsdp(module, param_name)
    return None if hit is None else hit[0]


def rename_fsdp_param(module: nn.Module, old: str, new: str) -> bool:
    """Tell FSDP2 that ``module.<old>`` is now registered as ``module.<new>``.

    Returns:
        Whether FSDP2 manages the Parameter (and was told).
    """
    fsdp_param = fsdp_param_of(module, old)
    if fsdp_param is None:
        return False
    fsdp_param._module_info.param_name = new
    cache = _FSDP_CACHE.setdefault(module, {})
    cache.pop(old, None)
    cache[new] = weakref.ref(fsdp_param)
    return True


def sharded_orig(module: nn.Module, name: str) -> torch.Tensor:
    """``name_orig`` as stored between forwards (FSDP's sharded Parameter if FSDP manages it)."""
    fsdp_param = fsdp_param_of(module, orig_name(name))
    if fsdp_param is not None:
        return fsdp_param.sharded_param
    return module._parameters[orig_name(name)]  # type: ignore[return-value]
