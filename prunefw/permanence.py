"""Making pruning permanent: torch's ``prune.remove`` on every pruned tensor."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.utils import prune

from prunefw._rollback import rollback_on_error
from prunefw.errors import InvalidTypeError
from prunefw.huggingface import remove_guards
from prunefw.reparametrization import (
    iter_pruned_tensors,
    pruned_tensor_names,
    uninstall_deepcopy_support,
)

__all__ = ["make_permanent", "remove_pruning"]


def remove_pruning(pairs: Iterable[tuple[nn.Module, str]]) -> list[tuple[nn.Module, str]]:
    """Call ``prune.remove`` on each pruned ``(module, name)``; skip unpruned ones.

    All-or-nothing: if one removal fails, every module is restored.

    Args:
        pairs: ``(module, tensor name)`` pairs.

    Returns:
        The pairs that were pruned and are now permanent.
    """
    todo = [(m, n) for m, n in pairs if n in pruned_tensor_names(m)]
    with rollback_on_error(module for module, _ in todo):
        for module, name in todo:
            prune.remove(module, name)
            if not pruned_tensor_names(module):
                uninstall_deepcopy_support(module)
    return todo


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning reparametrization of every pruned tensor in ``model``.

    Each ``name_orig`` Parameter becomes ``name`` again, holding
    ``name_orig * name_mask``: it is the **same** ``nn.Parameter`` object as
    before (optimizers that hold it keep working), the pruned entries are zeros,
    and no ``_orig``/``_mask`` keys remain in the ``state_dict``. Gradients can
    then make pruned entries non-zero again: freeze them yourself if you go on
    training (or keep the reparametrization until training is done).

    Args:
        model: Any module; tensors pruned by torch directly are handled too.

    Returns:
        ``model`` itself, for chaining.

    Raises:
        InvalidTypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, MagnitudeCriterion, make_permanent
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> GlobalPruningContext(model, [MagnitudeCriterion(amount=0.5)]).prune()
        >>> model = make_permanent(model)
        >>> sorted(model.state_dict())
        ['0.bias', '0.weight', '2.bias', '2.weight']
        >>> int((model[0].weight == 0).sum() + (model[2].weight == 0).sum())
        40
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"make_permanent() expects an nn.Module, got {model!r}")
    remove_pruning((module, name) for _, module, name in list(iter_pruned_tensors(model)))
    remove_guards(model)
    return model
