"""Percentile pruning: keep the weights whose importance lies in a percentile band."""

from __future__ import annotations

from typing import Any

import torch

from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError
from prunefw.selection import largest_k, smallest_k
from prunefw.validation import check_fraction

__all__ = ["PercentileCriterion"]


class PercentileCriterion(PruningCriterion):
    """Keep weights whose importance lies between two percentiles; prune both tails.

    ``lower`` and ``upper`` are fractions in ``[0, 1]`` (``0.2`` is the 20th
    percentile). Of the ``n`` still-unpruned entries, exactly ``round(lower * n)``
    with the lowest importance and exactly ``round((1 - upper) * n)`` with the highest
    are pruned. Ties are broken by position: at the lower boundary the lower flat
    index goes first, at the upper boundary the higher one. Selection uses
    ``kthvalue`` rather than ``torch.quantile``, so it works on any number of
    entries (``torch.quantile`` refuses more than 2**24).

    Args:
        lower: Lower percentile as a fraction in ``[0, 1]``.
        upper: Upper percentile as a fraction in ``[lower, 1]``.

    Raises:
        InvalidArgumentError: A bound outside ``[0, 1]`` or ``lower > upper``.
        InvalidTypeError: A bound that is not a real number.

    Example:
        >>> import torch
        >>> crit = PercentileCriterion(0.2, 0.8)
        >>> crit.compute_mask(torch.arange(10.0), torch.ones(10))
        tensor([False, False,  True,  True,  True,  True,  True,  True, False, False])
    """

    name = "percentile"

    def __init__(self, lower: float, upper: float) -> None:
        self.lower = check_fraction(lower, "lower", "PercentileCriterion")
        self.upper = check_fraction(upper, "upper", "PercentileCriterion")
        if self.lower > self.upper:
            raise InvalidArgumentError(
                f"PercentileCriterion(lower={lower!r}, upper={upper!r}): lower must be "
                "<= upper (both are fractions in [0, 1], e.g. lower=0.1, upper=0.9)"
            )

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Prune the lowest ``lower`` and highest ``1 - upper`` fractions of ``scores``.

        Args:
            scores: Importance of the still-unpruned entries.
            default_mask: Their current mask (unused: all ones here).

        Returns:
            A bool keep-mask of ``scores``' shape.
        """
        selection = self.rank_selection(scores.numel())
        low, high = selection.smallest, selection.largest
        keep = ~smallest_k(scores, low)
        if high:
            keep &= ~largest_k(scores, high)
        return keep

    def rank_selection(self, n: int) -> RankSelection:
        """Prune the ``round(lower * n)`` smallest and ``round((1 - upper) * n)`` largest."""
        low = round(self.lower * n)
        return RankSelection(smallest=low, largest=min(round((1.0 - self.upper) * n), n - low))

    def config(self) -> dict[str, Any]:
        """Return ``{"lower": ..., "upper": ...}``."""
        return {"lower": self.lower, "upper": self.upper}
