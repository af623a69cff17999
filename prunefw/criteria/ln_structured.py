"""Structured pruning of whole channels by their L_n norm: torch's ``ln_structured``."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.selection import smallest_k
from prunefw.validation import check_amount, count_to_prune

__all__ = ["LnStructuredCriterion"]


class LnStructuredCriterion(PruningCriterion):
    """Prune the channels along ``dim`` with the smallest L_n norm, like ``prune.ln_structured``.

    The semantics of torch's :class:`~torch.nn.utils.prune.LnStructured`: every
    channel (a slice ``t.select(dim, i)``) is scored by its ``n``-norm over all other
    dimensions (``torch.linalg.vector_norm``, or the Frobenius norm for ``"fro"``);
    an ``amount`` that is a float in ``[0, 1]`` prunes ``round(amount * c)`` of the
    ``c`` channels still unpruned (torch's ``PruningContainer`` hands a structured
    method only the channels that are not entirely pruned yet), an int prunes
    that many. Among equal norms the lower channel index is pruned first (torch's
    ``topk`` leaves ties to the implementation); on tie-free data the mask equals
    torch's. Entries pruned earlier stay pruned.

    ``dim=0`` (the default) prunes **output channels**: rows of a linear-like
    weight seen as ``(out_features, in_features)`` (the layer context hands
    Hugging Face's ``Conv1D`` weights over transposed, see :mod:`prunefw.layouts`),
    filters of a convolution. ``dim=1`` prunes input channels. Whole channels are
    what :func:`prunefw.shrink` removes physically.

    Its ``PRUNING_TYPE`` is ``"structured"``: it works in
    :class:`~prunefw.LayerPruningContext` (and recipes' ``[[layer]]`` rules);
    :class:`~prunefw.GlobalPruningContext` refuses it with
    :class:`~prunefw.errors.PruningTypeError`, as ``prune.global_unstructured``
    refuses structured methods.

    The scores are the current weights' magnitudes ``|w|`` (the norms of ``|w|``
    and ``w`` are the same for every ``n`` accepted here).

    Args:
        amount: Fraction in ``[0, 1]`` of the surviving channels, or a count.
        n: The norm's order: a real number (``2`` for L2, ``1`` for L1,
            ``float("inf")``, ``float("-inf")``, ``0`` counts non-zeros) or
            ``"fro"``. torch's ``"nuc"`` is refused (it is not a norm of ``|w|``).
        dim: The dimension whose slices are the channels (negative counts from
            the end, as in torch).

    Raises:
        InvalidTypeError: ``amount``, ``n`` or ``dim`` of the wrong type.
        InvalidArgumentError: A fraction outside ``[0, 1]``, a negative count, a NaN
            or unknown norm.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import LayerPruningContext
        >>> crit = LnStructuredCriterion(amount=0.5, n=2, dim=0)
        >>> scores = torch.tensor([[3.0, 4.0], [0.1, 0.1], [1.0, 0.0], [6.0, 8.0]])
        >>> crit.compute_mask(scores, torch.ones(4, 2))[:, 0]
        tensor([ True, False, False,  True])
        >>> layer = nn.Linear(6, 8)
        >>> LayerPruningContext({layer: crit}).prune()
        >>> (layer.weight_mask.sum(dim=1) == 0).sum().item()  # 4 whole rows pruned
        4
    """

    name = "ln-structured"
    PRUNING_TYPE = "structured"

    #: The dimension whose slices are the channels (torch's containers read it).
    dim: int

    def __init__(self, amount: float | int, n: float | int | str = 2, dim: int = 0) -> None:
        owner = "LnStructuredCriterion"
        self.amount = check_amount(amount, "amount", owner)
        self.n = _check_norm(n, owner)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise InvalidTypeError(
                f"{owner}(dim={dim!r}): expected an int, got {type(dim).__name__}"
            )
        self.dim = int(dim)

    def importance_scores(self, module: nn.Module, name: str) -> None:
        """Check that ``module.name`` has channels along :attr:`dim`; the scores are ``|w|``.

        torch's ``PruningContainer`` would hand a 1-D tensor over with an extra
        dimension, so the check is made here, on the tensor itself.

        Raises:
            InvalidArgumentError: The tensor has fewer than 2 dimensions, or ``dim`` is
                out of range.
        """
        tensor = getattr(module, name)
        if isinstance(tensor, torch.Tensor):
            self._dim(tensor)
        return None

    def channel_norms(self, scores: torch.Tensor) -> torch.Tensor:
        """Return the ``n``-norm of every channel of ``scores`` along :attr:`dim`.

        Args:
            scores: A tensor with at least 2 dimensions.

        Returns:
            A 1-D float tensor with one norm per channel.
        """
        dim = self._dim(scores)
        dims = [d for d in range(scores.dim()) if d != dim]
        values = scores.float() if not scores.is_floating_point() else scores
        if self.n == "fro":
            return torch.linalg.vector_norm(values, ord=2, dim=dims)
        return torch.linalg.vector_norm(values, ord=float(self.n), dim=dims)

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Keep every channel but the ``amount`` with the smallest norms.

        Args:
            scores: ``|w|`` of the channels still unpruned (torch's container drops the
                channels that are pruned entirely), at least 2-D.
            default_mask: Their current mask, same shape: entries pruned earlier stay
                pruned.

        Returns:
            A bool keep-mask of ``scores``' shape.

        Raises:
            InvalidArgumentError: ``scores`` has fewer than 2 dimensions (torch refuses
                structured pruning of 1-D tensors too), ``dim`` is out of range, or an
                int ``amount`` exceeds the number of channels.
        """
        dim = self._dim(scores)
        channels = scores.shape[dim]
        k = count_to_prune(self.amount, channels, repr(self))
        keep = torch.ones(channels, dtype=torch.bool, device=scores.device)
        if k:
            keep = ~smallest_k(self.channel_norms(scores), k)
        shape = [1] * scores.dim()
        shape[dim] = channels
        return keep.view(shape).expand(scores.shape) & (default_mask != 0)

    def _dim(self, scores: torch.Tensor) -> int:
        if scores.dim() < 2:
            raise InvalidArgumentError(
                f"{self!r} prunes channels of a tensor with at least 2 dimensions (a weight), "
                f"got one of shape {tuple(scores.shape)}; torch's ln_structured refuses it too"
            )
        dim = self.dim + scores.dim() if self.dim < 0 else self.dim
        if not 0 <= dim < scores.dim():
            raise InvalidArgumentError(
                f"{self!r}: dim={self.dim} is out of range for a tensor of shape "
                f"{tuple(scores.shape)}"
            )
        return dim

    def config(self) -> dict[str, Any]:
        """Return ``{"amount": amount, "n": n, "dim": dim}``."""
        return {"amount": self.amount, "n": self.n, "dim": self.dim}


def _check_norm(n: object, owner: str) -> float | int | str:
    if isinstance(n, str):
        if n == "fro":
            return n
        if n == "nuc":
            raise InvalidArgumentError(
                f"{owner}(n='nuc'): the nuclear norm is not supported (it is a matrix norm of "
                "the signed weights, not a norm of |w|); use n=2 (the Frobenius norm, 'fro') "
                "or n=1"
            )
        raise InvalidArgumentError(
            f"{owner}(n={n!r}): expected a number (1, 2, float('inf'), ...) or 'fro'"
        )
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise InvalidTypeError(
            f"{owner}(n={n!r}): expected a number or 'fro', got {type(n).__name__}"
        )
    if math.isnan(n):
        raise InvalidArgumentError(f"{owner}(n=nan): the norm's order must be a number")
    return int(n) if isinstance(n, numbers.Integral) else float(n)
