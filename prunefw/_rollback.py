"""All-or-nothing pruning: snapshot modules, restore them if anything fails.

torch's ``BasePruningMethod.apply`` rolls back only the tensor it was working on.
prunefw prunes many tensors with several criteria, so it snapshots every module it
is about to touch and, if anything raises (a criterion, a plugin, a bad mask, a
``KeyboardInterrupt``), puts each one back exactly: the same Parameter and buffer
objects, the same hooks in the same order, the same attributes. Tensors are never
modified in place by pruning (torch writes new ``_mask`` buffers and recomputes
``weight``), so restoring the containers restores the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from torch import nn
from torch.nn.utils import prune

__all__ = ["RestorePoint", "rollback_on_error"]

# The containers of nn.Module that pruning mutates in place. They are restored in
# place too, so RemovableHandle objects that refer to the hook dicts stay valid.
_CONTAINERS = (
    "_parameters",
    "_buffers",
    "_non_persistent_buffers_set",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_pre_hooks_always_called",
)


class RestorePoint:
    """The state of one module that pruning can change, to put back on failure.

    (Not to be confused with :class:`prunefw.testing.ModelSnapshot`, which copies
    whole models' tensors so tests can compare them bit for bit.)

    Args:
        module: The module to save (its children are not included).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.attributes = dict(vars(module))
        self.containers: dict[str, Any] = {
            name: type(vars(module)[name])(vars(module)[name])
            for name in _CONTAINERS
            if name in vars(module)
        }
        methods = []
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                methods.append(hook)
            if isinstance(hook, prune.PruningContainer):
                methods.extend(hook)
        self.hook_states = {id(method): (method, dict(vars(method))) for method in methods}

    def restore(self) -> None:
        """Put the module back as it was when the snapshot was taken."""
        attributes = vars(self.module)
        for name in set(attributes) - set(self.attributes):
            del attributes[name]
        attributes.update(self.attributes)
        for name, saved in self.containers.items():
            current = attributes[name]
            current.clear()
            current.update(saved)
        for hook, state in self.hook_states.values():
            hook_attributes = vars(hook)
            hook_attributes.clear()
            hook_attributes.update(state)


@contextlib.contextmanager
def rollback_on_error(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Run a block; if it raises anything, restore ``modules`` and re-raise.

    Args:
        modules: Every module the block may change (duplicates are fine).

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> try:
        ...     with rollback_on_error([layer]):
        ...         layer.extra = nn.Parameter(layer.weight.detach().clone())
        ...         raise RuntimeError("boom")
        ... except RuntimeError:
        ...     pass
        >>> hasattr(layer, "extra")
        False
    """
    unique = {id(module): module for module in modules}
    restore_points = [RestorePoint(module) for module in unique.values()]
    try:
        yield
    except BaseException:
        for point in restore_points:
            point.restore()
        raise
