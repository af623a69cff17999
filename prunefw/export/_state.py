"""Reading the model: its state as a permanent model's state_dict, with the masks beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunefw.reparametrization import mask_name, orig_name, split_reparametrized_key


@dataclass
class _Plain:
    """The model's state as a permanent model's state_dict, with the masks beside it."""

    tensors: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]  # plain key -> bool keep-mask (pruned tensors only)
    aliases: dict[str, str]  # plain key -> the plain key stored instead


def _identity(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _plain_state(model: nn.Module) -> _Plain:
    """The model's state_dict with ``name_orig``/``name_mask`` pairs as ``name = orig * mask``."""
    state = model.state_dict()
    keys = set(state)
    pairs: dict[str, str] = {}  # orig or mask key -> plain key
    for key in state:
        split = split_reparametrized_key(key, keys)
        if split is not None:
            module_name, name = split
            plain = _join(module_name, name)
            pairs[key] = plain
            pairs[_join(module_name, orig_name(name))] = plain
    tensors: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, value in state.items():
        plain = pairs.get(key, key)
        if plain in tensors or plain in aliases:
            continue
        if key in pairs:  # the first of the orig/mask pair: build the pruned tensor
            module_name, _, name = plain.rpartition(".")
            orig = state[_join(module_name, orig_name(name))]
            mask = state[_join(module_name, mask_name(name))]
            ident = _identity(orig)
            if ident in seen:
                aliases[plain] = seen[ident]
                continue
            seen[ident] = plain
            keep = mask != 0
            masks[plain] = keep
            tensors[plain] = orig * mask
            continue
        ident = _identity(value)
        if ident in seen:
            aliases[plain] = seen[ident]
            continue
        seen[ident] = plain
        tensors[plain] = value
    return _Plain(tensors, masks, aliases)


def _join(module_name: str, name: str) -> str:
    return f"{module_name}.{name}" if module_name else name


def _prefix(key: str) -> str | None:
    """The module name of a ``weight`` key (``"a.b"`` for ``"a.b.weight"``), else ``None``."""
    if key == "weight":
        return ""
    if key.endswith(".weight"):
        return key[: -len(".weight")]
    return None
