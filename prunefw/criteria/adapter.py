"""The adapter from a :class:`~prunefw.PruningCriterion` to torch's ``BasePruningMethod``.

Every criterion class gets its own :class:`CriterionPruningMethod` subclass, created
when the criterion class is defined and reachable as ``CriterionClass.PruningMethod``.
It carries the criterion's ``PRUNING_TYPE``, so torch's
:class:`~torch.nn.utils.prune.PruningContainer` decides which entries the criterion
sees (for ``"unstructured"``: only the still-unpruned ones, flattened), exactly as it
does for torch's own methods. That is what lets the contexts hand criteria to
:func:`torch.nn.utils.prune.global_unstructured` and to torch's container logic
unchanged.

Example:
    The adapter also works with torch's classic ``apply`` API:

    >>> import torch
    >>> from torch import nn
    >>> from torch.nn.utils import prune
    >>> from prunefw import MagnitudeCriterion
    >>> layer = nn.Linear(4, 4)
    >>> crit = MagnitudeCriterion(amount=0.5)
    >>> _ = MagnitudeCriterion.PruningMethod.apply(layer, "weight", criterion=crit)
    >>> int((layer.weight_mask == 0).sum())
    8
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch.nn.utils import prune

from prunefw.errors import InvalidMaskError, InvalidTypeError

__all__ = [
    "PRUNING_TYPES",
    "CriterionPruningMethod",
    "MaskCriterion",
    "container_mask",
    "make_pruning_method",
    "mask_problem",
]

#: The pruning types torch's ``PruningContainer`` knows.
PRUNING_TYPES = ("unstructured", "structured", "global")


class MaskCriterion(Protocol):
    """What the adapter needs of a criterion; every :class:`~prunefw.PruningCriterion` has it.

    The adapter depends on this protocol, not on the criterion base class, so the
    base class can create its adapter without an import cycle.
    """

    PRUNING_TYPE: ClassVar[str]

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Return the keep-mask for ``scores``."""
        ...


class CriterionPruningMethod(prune.BasePruningMethod):
    """A ``BasePruningMethod`` that asks a prunefw criterion for its mask.

    Args:
        criterion: The criterion instance; must be an instance of this adapter's
            :attr:`criterion_class`.
        magnitude: If true, the tensor torch hands to :meth:`compute_mask` is the
            weight itself and the criterion's default scores ``|w|`` are computed
            from it; if false, it already holds the criterion's own importance
            scores (given to torch as ``importance_scores``).

    Raises:
        InvalidTypeError: ``criterion`` is not an instance of :attr:`criterion_class`.
    """

    PRUNING_TYPE: ClassVar[str] = "unstructured"
    criterion_class: ClassVar[type[MaskCriterion]]

    def __init__(self, criterion: MaskCriterion, magnitude: bool = True) -> None:
        if not isinstance(criterion, self.criterion_class):
            raise InvalidTypeError(
                f"{type(self).__qualname__} needs a {self.criterion_class.__name__} "
                f"instance, got {criterion!r}"
            )
        self.criterion = criterion
        self.magnitude = magnitude
        if self.PRUNING_TYPE == "structured":
            # torch's PruningContainer reads ``method.dim`` for structured methods.
            self.dim = criterion.dim  # type: ignore[attr-defined]

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Compute the criterion's mask for ``t`` on top of ``default_mask``.

        Args:
            t: The weights (if :attr:`magnitude`) or importance scores to select from.
            default_mask: The mask of earlier pruning, same shape as ``t``.

        Returns:
            ``default_mask * criterion_mask``, in ``default_mask``'s dtype: an entry
            pruned before stays pruned whatever the criterion returns.

        Raises:
            InvalidMaskError: The criterion returned something that is not a 0/1
                tensor of ``t``'s shape.
        """
        scores = t.detach().abs() if self.magnitude else t.detach()
        # The criterion gets its own copy: what it does to it cannot reach the result.
        mask = self.criterion.compute_mask(scores, default_mask.clone())
        _check_mask(mask, scores, self.criterion)
        result = mask.to(dtype=default_mask.dtype, copy=True)
        return result.mul_(default_mask)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({self.criterion!r})"


def make_pruning_method(criterion_class: type[MaskCriterion]) -> type[CriterionPruningMethod]:
    """Create the ``BasePruningMethod`` subclass for one criterion class.

    Called by :class:`~prunefw.PruningCriterion` for every subclass; the result is
    stored as ``criterion_class.PruningMethod`` (its ``__qualname__`` says so, which
    keeps hooks made with it picklable).

    Args:
        criterion_class: The criterion class to adapt.

    Returns:
        A new subclass of :class:`CriterionPruningMethod`.

    Raises:
        InvalidTypeError: The class's ``PRUNING_TYPE`` is not one torch knows.
    """
    pruning_type = criterion_class.PRUNING_TYPE
    if pruning_type not in PRUNING_TYPES:
        raise InvalidTypeError(
            f"{criterion_class.__qualname__}.PRUNING_TYPE is {pruning_type!r}; "
            f"expected one of {', '.join(map(repr, PRUNING_TYPES))}"
        )
    namespace: dict[str, Any] = {
        "PRUNING_TYPE": pruning_type,
        "criterion_class": criterion_class,
        "__module__": criterion_class.__module__,
        "__qualname__": f"{criterion_class.__qualname__}.PruningMethod",
        "__doc__": f"torch pruning method computing masks with {criterion_class.__name__}.",
    }
    return type("PruningMethod", (CriterionPruningMethod,), namespace)


def container_mask(
    method: prune.BasePruningMethod,
    tensor: torch.Tensor,
    default_mask: torch.Tensor,
    tensor_name: str = "weight",
) -> torch.Tensor:
    """Compute one method's combined mask with torch's ``PruningContainer`` semantics.

    This is the computation :func:`torch.nn.utils.prune.global_unstructured` runs on
    its concatenated vector, run here on one tensor: the method sees only the part
    its ``PRUNING_TYPE`` allows (unpruned entries or surviving channels).

    Args:
        method: The pruning method (typically a :class:`CriterionPruningMethod`).
        tensor: Weights or importance scores.
        default_mask: The current mask of the tensor (ones if never pruned); not
            modified (torch's container writes into the mask it is given, so it gets
            a copy, as in torch's own ``BasePruningMethod.apply``).
        tensor_name: The tensor's attribute name (only used by torch's bookkeeping).

    Returns:
        The new mask, combining ``default_mask`` with the method's decision.
    """
    method._tensor_name = tensor_name
    # torch declares PRUNING_TYPE on its concrete methods only, not on the base class.
    pruning_type = getattr(method, "PRUNING_TYPE", None)
    if pruning_type == "unstructured" and bool(default_mask.all()):
        # Nothing pruned yet: the container would hand the method every entry, flattened
        # in row-major order (``t[mask == 1]``); do that without its boolean indexing.
        # Like the container, hand over a private copy, unless the adapter makes one
        # itself (|w| for magnitude scores).
        scores = tensor.reshape(-1)
        if not (isinstance(method, CriterionPruningMethod) and method.magnitude):
            scores = scores.clone()
        # A fresh all-ones mask, never the caller's buffer: a criterion may write into it.
        ones = torch.ones(
            default_mask.numel(), dtype=default_mask.dtype, device=default_mask.device
        )
        flat = method.compute_mask(scores, ones)
        return flat.view(tensor.shape)
    container = prune.PruningContainer()
    container._tensor_name = tensor_name
    container.add_pruning_method(method)
    private = default_mask.detach().clone(memory_format=torch.contiguous_format)
    return container.compute_mask(tensor, private)


def mask_problem(mask: object, shape: torch.Size | tuple[int, ...]) -> str | None:
    """Say what is wrong with ``mask`` as a 0/1 mask of ``shape``, or ``None`` if nothing.

    A mask is a tensor of that shape holding only 0 and 1 (any real dtype) or bool,
    with data (not on the meta device). The answer completes "a mask ...".

    Example:
        >>> import torch
        >>> mask_problem(torch.tensor([1.0, 0.5]), (2,))
        'containing 0.5 (1 entries not 0 or 1)'
        >>> mask_problem(torch.ones(2, dtype=torch.bool), (2,)) is None
        True
    """
    if not isinstance(mask, torch.Tensor):
        return f"that is a {type(mask).__name__}, not a tensor"
    if mask.shape != tuple(shape):
        return f"of shape {tuple(mask.shape)} instead of {tuple(shape)}"
    if mask.is_meta:
        return "on the meta device (it has no values)"
    if mask.dtype == torch.bool:
        return None
    if mask.is_complex():
        return f"of dtype {mask.dtype}"
    bad = ~((mask == 0) | (mask == 1))
    if bool(bad.any()):
        value = mask[bad].flatten()[0].item()
        return f"containing {value!r} ({int(bad.sum())} entries not 0 or 1)"
    return None


def _check_mask(mask: object, scores: torch.Tensor, criterion: MaskCriterion) -> None:
    expected = f"a torch.Tensor of shape {tuple(scores.shape)} with 0/1 (or bool) values"
    if not isinstance(mask, torch.Tensor):
        raise InvalidMaskError(
            f"{criterion!r}.compute_mask returned {type(mask).__name__}; expected {expected}"
        )
    if mask.shape != scores.shape:
        raise InvalidMaskError(
            f"{criterion!r}.compute_mask returned a mask of shape {tuple(mask.shape)}; "
            f"expected {expected}"
        )
    if mask.is_complex():
        raise InvalidMaskError(
            f"{criterion!r}.compute_mask returned a {mask.dtype} mask; expected {expected}"
        )
    problem = mask_problem(mask, scores.shape)
    if problem is not None:
        raise InvalidMaskError(
            f"{criterion!r}.compute_mask returned a mask {problem}; expected {expected}"
        )
