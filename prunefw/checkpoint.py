"""Pruned checkpoints: loading a pruned ``state_dict`` into a fresh model, and their metadata.

:func:`load_pruned_state_dict` loads a pruned model's ``state_dict`` into a fresh,
unpruned model. :data:`ALIASES_KEY` is the safetensors metadata key under which
every safetensors file prunefw writes (``prunefw prune --out DIR/``,
:func:`prunefw.export.save_compressed`) names the keys of tensors it stored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw._rollback import rollback_on_error
from prunefw.criteria.adapter import mask_problem
from prunefw.errors import CheckpointError, InvalidTypeError
from prunefw.huggingface import install_guards
from prunefw.reparametrization import (
    install_deepcopy_support,
    mask_name,
    pruned_tensor_names,
    refresh_pruned_tensors,
    release_mask_reference,
    split_reparametrized_key,
)

if TYPE_CHECKING:
    from torch.nn.modules.module import _IncompatibleKeys

__all__ = ["ALIASES_KEY", "load_pruned_state_dict"]

#: Safetensors metadata key of the tensors stored once for several state_dict keys (tied
#: weights): a JSON object ``{"alias key": "stored key"}``, e.g.
#: ``{"lm_head.weight": "transformer.wte.weight"}``.
ALIASES_KEY = "prunefw.aliases"


def load_pruned_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], strict: bool = True
) -> _IncompatibleKeys:
    """Load a pruned model's ``state_dict`` into ``model``, rebuilding the pruning first.

    A pruned model saves ``name_orig`` and ``name_mask`` instead of ``name``, which
    a fresh model refuses (missing ``weight``, unexpected ``weight_orig``). For every
    ``name_mask`` / ``name_orig`` pair in ``state_dict``, this applies
    :func:`torch.nn.utils.prune.custom_from_mask` with the saved mask to the
    matching tensor of ``model`` (unless it is already pruned), then loads
    everything with :meth:`~torch.nn.Module.load_state_dict`. The result computes
    the same forward as the saved model. Unpruned ``state_dict`` entries load as
    usual, so this also works for partially pruned and unpruned checkpoints.

    Everything is checked before any tensor is written; on error ``model`` is left
    untouched.

    Args:
        model: A model with the same architecture as the saved one.
        state_dict: The saved ``state_dict`` (e.g. from ``torch.load(...,
            weights_only=True)``).
        strict: As in :meth:`~torch.nn.Module.load_state_dict`: require the keys
            to match exactly.

    Returns:
        torch's ``(missing_keys, unexpected_keys)`` named tuple.

    Raises:
        CheckpointError: A mask for a module or tensor the model does not have, a
            shape mismatch, or (with ``strict``) missing or unexpected keys.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, MagnitudeCriterion, load_pruned_state_dict
        >>> make = lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> pruned = make()
        >>> GlobalPruningContext(pruned, [MagnitudeCriterion(amount=0.5)]).prune()
        >>> fresh = make()
        >>> load_pruned_state_dict(fresh, pruned.state_dict())
        <All keys matched successfully>
        >>> x = torch.randn(3, 4)
        >>> torch.equal(fresh(x), pruned(x))
        True
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"load_pruned_state_dict() expects an nn.Module, got {model!r}")
    if not isinstance(state_dict, Mapping):
        raise InvalidTypeError(
            "load_pruned_state_dict() expects a state_dict mapping, got "
            f"{type(state_dict).__name__}"
        )
    modules = dict(model.named_modules())
    to_prune: list[tuple[nn.Module, str, torch.Tensor, str]] = []
    for key, mask in state_dict.items():
        split = split_reparametrized_key(key, state_dict.keys())
        if split is None:
            continue
        module_name, name = split
        module = modules.get(module_name)
        if module is None:
            raise CheckpointError(
                f"state_dict key {key!r} is a pruning mask for module {module_name!r}, "
                "which the model does not have"
            )
        if name in pruned_tensor_names(module):
            continue
        param = module._parameters.get(name)
        if not isinstance(param, nn.Parameter):
            raise CheckpointError(
                f"state_dict key {key!r} is a pruning mask for {module_name or 'the model'}."
                f"{name}, but that module has no parameter {name!r}"
            )
        if not isinstance(mask, torch.Tensor) or mask.shape != param.shape:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise CheckpointError(
                f"state_dict key {key!r} has shape {shape}, but the model's "
                f"{module_name + '.' if module_name else ''}{name} has shape {tuple(param.shape)}"
            )
        problem = mask_problem(mask, param.shape)
        if problem is not None:
            raise CheckpointError(
                f"state_dict key {key!r} is not a usable pruning mask: a mask {problem}; "
                "masks hold only 0 and 1"
            )
        to_prune.append((module, name, mask.detach(), key))

    first_place: dict[int, tuple[nn.Module, str, str]] = {}
    with rollback_on_error(module for module, _, _, _ in to_prune):
        for module, name, mask, key in to_prune:
            tensor = getattr(module, name)
            prune.custom_from_mask(module, name, mask.to(device=tensor.device))
            release_mask_reference(module, name)
            install_deepcopy_support(module)
            # Tied weights: the places of one Parameter share one mask buffer.
            first = first_place.setdefault(id(tensor), (module, name, key))
            if first[0] is not module:
                _share_saved_mask(first, (module, name, key))
        _check_compatible(model, state_dict, strict)
        result = model.load_state_dict(state_dict, strict=strict)
    for module in modules.values():
        refresh_pruned_tensors(module)
    if to_prune:
        install_guards(model)
    return result


def _share_saved_mask(first: tuple[nn.Module, str, str], alias: tuple[nn.Module, str, str]) -> None:
    """Make ``alias`` (another place of ``first``'s Parameter) use ``first``'s mask buffer."""
    module, name, key = first
    alias_module, alias_name, alias_key = alias
    mask = module._buffers[mask_name(name)]
    alias_mask = alias_module._buffers[mask_name(alias_name)]
    if mask is None or alias_mask is None or not torch.equal(alias_mask, mask):
        raise CheckpointError(
            f"state_dict keys {key!r} and {alias_key!r} are masks of one shared Parameter "
            "(tied weights) but differ; a shared tensor has one mask"
        )
    alias_module._buffers[mask_name(alias_name)] = mask
    release_mask_reference(alias_module, alias_name)


def _check_compatible(model: nn.Module, state_dict: Mapping[str, Any], strict: bool) -> None:
    expected = model.state_dict(keep_vars=True)
    problems = []
    if strict:
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
    for key, value in state_dict.items():
        target = expected.get(key)
        if target is not None and not isinstance(value, torch.Tensor):
            problems.append(f"{key}: expected a tensor, got {type(value).__name__}")
        if (
            isinstance(target, torch.Tensor)
            and isinstance(value, torch.Tensor)
            and target.shape != value.shape
        ):
            problems.append(
                f"{key}: checkpoint shape {tuple(value.shape)}, model shape {tuple(target.shape)}"
            )
    if problems:
        raise CheckpointError(
            "the state_dict does not fit the model (after rebuilding its pruning): "
            + "; ".join(problems)
        )
