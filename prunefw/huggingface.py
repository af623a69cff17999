"""Hugging Face ``transformers`` models while they are masked: save and tie guards.

A masked model stores ``weight_orig``/``weight_mask`` instead of ``weight``. Two of
transformers' model methods do the wrong thing with that:

* ``save_pretrained`` writes ``weight_orig``/``weight_mask``, which
  ``from_pretrained`` does not know: it re-initialises those weights and only logs a
  load report. prunefw makes it stop with :class:`MaskedModelError`, pointing to
  :func:`prunefw.make_permanent` (after which it saves the pruned weights normally).
* ``tie_weights`` (called by ``from_pretrained`` and ``resize_token_embeddings``)
  re-assigns the output embedding's Parameter, which breaks the pruning hook at the
  next forward. prunefw prunes tied weights as one tensor (one ``orig``, one mask
  for every place), so while masked the ties it would make already hold: the guard
  checks that and returns; a tie that does not hold stops with
  :class:`MaskedModelError`.

The contexts install the guards on the model they are given (nothing is imported:
a model is recognised by its ``save_pretrained`` and ``tie_weights`` methods) and
:func:`prunefw.make_permanent` removes them. They are instance attributes, copied by
``copy.deepcopy`` and pickle like the rest of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from prunefw.errors import PrunefwError
from prunefw.reparametrization import iter_pruned_tensors, mask_of, original_of

__all__ = ["MaskedModelError", "install_guards", "is_pretrained_model", "remove_guards"]


class MaskedModelError(PrunefwError):
    """An operation that needs plain weights was called on a masked model."""


def is_pretrained_model(model: object) -> bool:
    """Whether ``model`` looks like a transformers ``PreTrainedModel`` (duck typing)."""
    return isinstance(model, nn.Module) and all(
        callable(getattr(type(model), name, None)) for name in ("save_pretrained", "tie_weights")
    )


def _masked(model: nn.Module) -> list[str]:
    return [
        f"{qualname}.{name}" if qualname else name
        for qualname, _, name in iter_pruned_tensors(model)
    ]


class _Guard:
    """Base of the instance-level method guards (picklable, deep-copyable)."""

    method = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def original(self) -> Any:
        """The class's own method, bound to the model."""
        return getattr(type(self.model), self.method).__get__(self.model)


class _SavePretrainedGuard(_Guard):
    method = "save_pretrained"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        masked = _masked(self.model)
        if masked:
            raise MaskedModelError(
                f"save_pretrained() on a masked model: {len(masked)} tensors "
                f"({', '.join(masked[:3])}{', ...' if len(masked) > 3 else ''}) are stored as "
                "weight_orig/weight_mask, which from_pretrained() would silently re-initialise. "
                "Call prunefw.make_permanent(model) first, then save_pretrained(); to keep the "
                "masks, save model.state_dict() and load it with prunefw.load_pruned_state_dict"
            )
        return self.original()(*args, **kwargs)


class _TieWeightsGuard(_Guard):
    method = "tie_weights"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _masked(self.model):
            return self.original()(*args, **kwargs)
        ties = getattr(self.model, "all_tied_weights_keys", None)
        if not isinstance(ties, Mapping):
            ties = getattr(self.model, "_tied_weights_keys", None)
        for target, source in ties.items() if isinstance(ties, Mapping) else []:
            if _place(self.model, target) != _place(self.model, source):
                raise MaskedModelError(
                    f"tie_weights() on a masked model would tie {target} to {source}, which are "
                    "separate tensors now; call prunefw.make_permanent(model) first"
                )
        return None  # every tie already holds: one Parameter, one mask


def _place(model: nn.Module, qualified: str) -> tuple[int, int]:
    """Identify the tensor called ``qualified``: its Parameter and its mask (if masked)."""
    module_name, _, name = qualified.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return (id(None), id(None))
    original = original_of(module, name)
    if original is None:
        return (id(module._parameters.get(name)), id(None))
    return (id(original), id(mask_of(module, name)))


_GUARDS = (_SavePretrainedGuard, _TieWeightsGuard)


def install_guards(model: nn.Module) -> None:
    """Guard ``save_pretrained`` and ``tie_weights`` of a transformers model while it is masked.

    Does nothing for other models. Idempotent.
    """
    if not is_pretrained_model(model):
        return
    for guard in _GUARDS:
        if not isinstance(vars(model).get(guard.method), guard):
            vars(model)[guard.method] = guard(model)


def remove_guards(model: nn.Module) -> None:
    """Remove what :func:`install_guards` added, if anything."""
    for guard in _GUARDS:
        if isinstance(vars(model).get(guard.method), guard):
            del vars(model)[guard.method]
