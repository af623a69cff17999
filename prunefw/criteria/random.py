"""Random pruning: remove a fraction of the remaining weights uniformly at random."""

from __future__ import annotations

from typing import Any

import torch

from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.selection import smallest_k
from prunefw.validation import check_fraction, check_seed

__all__ = ["RandomCriterion"]


class RandomCriterion(PruningCriterion):
    """Prune exactly ``round(prune_ratio * n)`` of the ``n`` remaining entries at random.

    Every subset of that size is equally likely. The criterion owns a
    :class:`torch.Generator`: the global RNG is never read or advanced. With a
    ``seed``, the sequence of masks a criterion object produces is reproducible
    (the generator advances with every tensor it prunes, so two tensors of the same
    shape do not get the same pattern); without one, it is seeded from the
    operating system.

    Args:
        prune_ratio: Fraction in ``[0, 1]`` of the remaining entries to prune.
        seed: Optional integer seed.

    Raises:
        InvalidArgumentError: ``prune_ratio`` outside ``[0, 1]``.
        InvalidTypeError: ``prune_ratio`` not a number, or ``seed`` not an int.

    Example:
        >>> import torch
        >>> crit = RandomCriterion(prune_ratio=0.25, seed=0)
        >>> int((~crit.compute_mask(torch.ones(8), torch.ones(8))).sum())
        2
    """

    name = "random"

    def __init__(self, prune_ratio: float, seed: int | None = None) -> None:
        self.prune_ratio = check_fraction(prune_ratio, "prune_ratio", "RandomCriterion")
        self.seed = check_seed(seed, "seed", "RandomCriterion")
        self.generator = torch.Generator()
        if self.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.seed)

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Keep all but a uniformly random subset of ``round(prune_ratio * n)`` entries.

        Args:
            scores: Ignored except for its shape.
            default_mask: Their current mask (unused: all ones here).

        Returns:
            A bool keep-mask of ``scores``' shape.
        """
        k = round(self.prune_ratio * scores.numel())
        draws = torch.rand(scores.shape, generator=self.generator).to(scores.device)
        return ~smallest_k(draws, k)

    def rank_selection(self, n: int) -> RankSelection:
        """Prune ``round(prune_ratio * n)`` entries with the smallest random keys.

        The keys' seed is drawn from this criterion's generator, so a seeded
        criterion is reproducible with the streaming strategy too.
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return RankSelection(smallest=round(self.prune_ratio * n), random_seed=seed)

    def config(self) -> dict[str, Any]:
        """Return ``{"prune_ratio": ..., "seed": ...}``."""
        return {"prune_ratio": self.prune_ratio, "seed": self.seed}
