"""Magnitude pruning: remove the weights with the smallest importance."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.selection import at_least, smallest_k
from prunefw.validation import as_float, check_amount, count_to_prune

__all__ = ["MagnitudeCriterion"]


class MagnitudeCriterion(PruningCriterion):
    """Prune weights of small importance (``|w|`` unless a subclass says otherwise).

    Give exactly one of:

    * ``min_threshold=t``: prune every still-unpruned entry with importance ``< t``
      (entries equal to ``t`` are kept);
    * ``amount=a``: like torch's :class:`~torch.nn.utils.prune.L1Unstructured`, a
      float in ``[0, 1]`` prunes exactly ``round(a * n)`` of the ``n`` still-unpruned
      entries, an int prunes exactly that many. The smallest go first; on ties the
      lower flat index goes first. On tie-free data the mask equals torch's.

    Args:
        min_threshold: Non-negative, finite importance threshold.
        amount: Fraction in ``[0, 1]`` or non-negative count of entries to prune.

    Raises:
        InvalidArgumentError: Both or neither argument given, a negative or
            non-finite threshold, or an amount out of range.
        InvalidTypeError: An argument of the wrong type.

    Example:
        >>> import torch
        >>> crit = MagnitudeCriterion(min_threshold=0.5)
        >>> crit.compute_mask(torch.tensor([0.1, 0.7, 0.5]), torch.ones(3))
        tensor([False,  True,  True])
        >>> MagnitudeCriterion(amount=1).compute_mask(torch.tensor([0.1, 0.7, 0.5]), torch.ones(3))
        tensor([False,  True,  True])
    """

    name = "magnitude"

    def __init__(
        self, min_threshold: float | None = None, *, amount: float | int | None = None
    ) -> None:
        if (min_threshold is None) == (amount is None):
            raise InvalidArgumentError(
                "MagnitudeCriterion needs exactly one of min_threshold= (prune importance "
                f"below a value) or amount= (prune a fraction or count); got "
                f"min_threshold={min_threshold!r}, amount={amount!r}"
            )
        self.min_threshold: float | None = None
        self.amount: float | int | None = None
        if min_threshold is not None:
            if isinstance(min_threshold, bool) or not isinstance(min_threshold, numbers.Real):
                raise InvalidTypeError(
                    f"MagnitudeCriterion(min_threshold={min_threshold!r}): expected a "
                    f"non-negative float, got {type(min_threshold).__name__}"
                )
            threshold = as_float(min_threshold, "min_threshold", "MagnitudeCriterion")
            if not math.isfinite(threshold) or threshold < 0:
                raise InvalidArgumentError(
                    f"MagnitudeCriterion(min_threshold={min_threshold!r}): must be a "
                    "finite number >= 0 (importance scores are magnitudes)"
                )
            self.min_threshold = threshold
        else:
            self.amount = check_amount(amount, "amount", "MagnitudeCriterion")

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Keep entries with importance ``>= min_threshold``, or all but the ``amount`` smallest.

        Args:
            scores: Importance of the still-unpruned entries.
            default_mask: Their current mask (unused: all ones here).

        Returns:
            A bool keep-mask of ``scores``' shape.
        """
        if self.min_threshold is not None:
            return at_least(scores, self.min_threshold)
        assert self.amount is not None
        k = count_to_prune(self.amount, scores.numel(), repr(self))
        return ~smallest_k(scores, k)

    def rank_selection(self, n: int) -> RankSelection:
        """Prune below ``min_threshold``, or the ``amount`` smallest of ``n``."""
        if self.min_threshold is not None:
            return RankSelection(min_threshold=self.min_threshold)
        assert self.amount is not None
        return RankSelection(smallest=count_to_prune(self.amount, n, repr(self)))

    def config(self) -> dict[str, Any]:
        """Return ``{"min_threshold": t}`` or ``{"amount": a}``."""
        if self.min_threshold is not None:
            return {"min_threshold": self.min_threshold}
        return {"amount": self.amount}
