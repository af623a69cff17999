"""N:M semi-structured sparsity: keep ``n`` of every ``m`` consecutive weights.

**Groups.** A tensor of shape ``(d0, d1, ..., dk)`` is read as the matrix
``(d0, d1 * ... * dk)``: one row per output unit, the columns being the *input
dimension*. Each row is cut into consecutive groups of ``m`` columns, in row-major
(memory) order, so the groups are exactly the rows of ``tensor.reshape(-1, m)`` and
no group crosses from one row into the next.

* ``Linear`` weight ``(out, in)``: groups of ``m`` along ``in``, the last dimension.
  This is the layout :func:`torch.sparse.to_sparse_semi_structured` compresses.
* Hugging Face ``Conv1D`` weight (GPT-2), stored ``(in, out)``: groups of ``m`` along
  ``in`` too, i.e. along dim 0 of the stored tensor (the groups are the rows of
  ``weight.T.reshape(-1, m)``). The layer context hands every linear-like weight (see
  :mod:`prunefw.layouts`) to shape-aware criteria as ``(out, in)`` and transposes
  the mask back, so ``compute_mask`` sees the same matrix as for the equivalent
  ``Linear``.
* ``Conv`` weight ``(out, in/groups, kh, kw)`` (and 1-D/3-D convolutions alike):
  groups along the flattened ``in*kh*kw`` axis, in memory order (input channel, then
  kernel row, then kernel column). These are the columns of the im2col matrix
  ``weight.reshape(out, -1)`` that multiplies ``torch.nn.functional.unfold(x)``, so
  that GEMM's weight operand is N:M sparse. A group may span kernel positions and
  channels; when ``kw`` is a multiple of ``m`` the groups are exactly the groups
  along the last dimension.
* ``ConvTranspose`` weight ``(in, out/groups, kh, kw)``: the same rule on the
  tensor's shape, so groups run along ``out*kh*kw``.
* 1-D tensors (biases): one row. 0-d tensors are refused.

**Shape rule.** The row length ``d1 * ... * dk`` (``d0`` for 1-D tensors) must be a
multiple of ``m``; otherwise :class:`~prunefw.errors.InvalidArgumentError` names the
shape and ``m``. There is no padding rule.

**Already-pruned entries.** The criterion sees the whole tensor and its current mask
(``PRUNING_TYPE = "global"``). In each group, entries pruned earlier rank below every
surviving entry, so the group keeps the ``n`` best *survivors*: exactly ``n`` when at
least ``n`` survive, all of them otherwise. Nothing is ever un-pruned. Consequently a
group never holds more than ``n`` nonzeros afterwards, and applying the criterion
again changes nothing. (The selection is :func:`prunefw.selection.smallest_k_per_row`
on the groups, shared with prunefw's per-row criteria.)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from prunefw import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.selection import smallest_k_per_row

__all__ = ["NMCriterion"]


class NMCriterion(PruningCriterion):
    """Keep the ``n`` most important of every ``m`` consecutive weights (N:M sparsity).

    Groups of ``m`` run along the input dimension, row-major (see the module
    docstring for Linear, Conv and other shapes). In every group the ``m - n``
    entries of lowest importance are pruned; importance is ``|w|`` unless a subclass
    overrides :meth:`~prunefw.PruningCriterion.importance_scores`. On ties the entry
    at the lower index within the group is pruned first. Entries pruned earlier count
    as least important and are never un-pruned.

    ``NMCriterion(2, 4)`` yields the 2:4 pattern accepted by
    :func:`torch.sparse.to_sparse_semi_structured` (fp16, bf16, int8). Its
    ``PRUNING_TYPE`` is ``"global"`` (it needs the tensor's shape), so it works in
    :class:`~prunefw.LayerPruningContext`; :class:`~prunefw.GlobalPruningContext`
    refuses it with :class:`~prunefw.errors.PruningTypeError`.

    Args:
        n: How many entries to keep per group, ``0 <= n <= m``.
        m: The group size, ``m >= 1``.

    Raises:
        InvalidTypeError: ``n`` or ``m`` is not an int (bools are refused).
        InvalidArgumentError: ``m < 1``, ``n < 0`` or ``n > m``.

    Example:
        >>> import torch
        >>> crit = NMCriterion(2, 4)
        >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
        >>> crit.compute_mask(scores, torch.ones(2, 4))
        tensor([[False,  True,  True, False],
                [ True,  True, False, False]])

        Ties: the lower index within the group is pruned first.

        >>> NMCriterion(1, 2).compute_mask(torch.tensor([[7.0, 7.0, 1.0, 1.0]]), torch.ones(1, 4))
        tensor([[False,  True, False,  True]])

        In a layer context, every group of 4 inputs keeps 2 weights:

        >>> from torch import nn
        >>> from prunefw import LayerPruningContext
        >>> layer = nn.Linear(8, 3)
        >>> LayerPruningContext({layer: NMCriterion(2, 4)}).prune()
        >>> (layer.weight_mask.reshape(-1, 4).sum(dim=1) == 2).all().item()
        True
    """

    name = "nm"
    PRUNING_TYPE = "global"

    def __init__(self, n: int = 2, m: int = 4) -> None:
        for argument, value in (("n", n), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise InvalidTypeError(
                    f"NMCriterion(n={n!r}, m={m!r}): {argument} must be an int, got "
                    f"{type(value).__name__} {value!r}"
                )
        if m < 1:
            raise InvalidArgumentError(
                f"NMCriterion(n={n!r}, m={m!r}): the group size m={m!r} must be >= 1"
            )
        if not 0 <= n <= m:
            raise InvalidArgumentError(
                f"NMCriterion(n={n!r}, m={m!r}): n={n!r} weights kept per group must be "
                f"between 0 and m={m!r}"
            )
        self.n = int(n)
        self.m = int(m)

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Keep the ``n`` best surviving entries of every group of ``m``.

        Args:
            scores: Importance of every entry of the tensor, in the tensor's shape
                (``|w|`` by default; pruned entries of ``w`` are zeros then).
            default_mask: The tensor's current mask, same shape: entries where it
                is 0 are already pruned and stay pruned.

        Returns:
            A bool keep-mask of ``scores``' shape with, in every group,
            ``min(n, survivors)`` ``True`` entries, all of them survivors.

        Raises:
            InvalidArgumentError: ``scores`` is 0-d, its row length is not a
                multiple of ``m``, or ``default_mask`` has another shape.
        """
        if default_mask.shape != scores.shape:
            raise InvalidArgumentError(
                f"{self!r}: default_mask has shape {tuple(default_mask.shape)}, scores have "
                f"shape {tuple(scores.shape)}"
            )
        groups = self._groups(scores)
        pruned = smallest_k_per_row(groups, self.m - self.n, self._groups(default_mask))
        return ~pruned.reshape(scores.shape)

    def _groups(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return ``tensor`` as ``(number of groups, m)``, or raise for a bad shape."""
        shape = tuple(tensor.shape)
        if not shape:
            raise InvalidArgumentError(
                f"{self!r} cannot prune a 0-d tensor: N:M groups run along the input "
                "dimension, and a scalar has none"
            )
        row = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        if row % self.m:
            if len(shape) == 1:
                what = "length"
            elif len(shape) == 2:
                what = "last dimension"
            else:
                what = f"input dimension (dims 1.. flattened, as in .reshape({shape[0]}, -1))"
            raise InvalidArgumentError(
                f"{self!r} cannot prune a tensor of shape {shape}: its {what} is {row}, not a "
                f"multiple of m={self.m}. N:M groups of {self.m} consecutive entries run along "
                f"the input dimension; choose an m that divides {row} or exclude this tensor"
            )
        return tensor.reshape(-1, self.m)

    def config(self) -> dict[str, Any]:
        """Return ``{"n": n, "m": m}``."""
        return {"n": self.n, "m": self.m}
