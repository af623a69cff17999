"""Per-output-row magnitude pruning: Wanda's comparison group with ``|w|`` scores."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.layouts import default_linear_layers, is_module_type, weight_layout
from prunefw.selection import smallest_k_per_row
from prunefw.validation import check_fraction

__all__ = ["RowMagnitudeCriterion"]


class RowMagnitudeCriterion(PruningCriterion):
    """Prune the ``round(sparsity * in_features)`` smallest ``|w|`` of every output row.

    The magnitude counterpart of Wanda (the ``prunefw-wanda`` plugin): the same
    comparison group, each output row of a linear-like weight on its own, with
    ``|w|`` as the score instead of ``|w| * ||x_j||``. Every row ends with exactly
    ``round(sparsity * in_features)`` pruned entries (Python's ``round``), unlike
    ``MagnitudeCriterion(amount=...)``, which ranks the whole tensor at once and
    can empty some rows while sparing others.

    **Linear-like weights only**, in their canonical ``(out_features,
    in_features)`` orientation: ``nn.Linear`` and Hugging Face's ``Conv1D``
    (whose ``(in, out)`` weight the layer context hands over transposed, see
    :mod:`prunefw.layouts`), or any type a plugin registers through
    ``prunefw_register_linear_layers``. Other modules raise
    :class:`~prunefw.errors.InvalidTypeError`, other tensors (a bias)
    :class:`~prunefw.errors.InvalidArgumentError`.

    **Already-pruned entries** count first: ``sparsity`` is a target per row, not a
    fraction of what remains. Entries pruned earlier use up the row's share, then
    the smallest survivors are pruned (among equal magnitudes the lower input index
    first) until the row has its share; a row that already has more keeps all its
    survivors. Nothing is un-pruned, and applying the criterion twice changes
    nothing.

    Its ``PRUNING_TYPE`` is ``"global"`` (it needs the tensor's shape), so it works
    in :class:`~prunefw.LayerPruningContext`; :class:`~prunefw.GlobalPruningContext`
    refuses it with :class:`~prunefw.errors.PruningTypeError`.

    Args:
        sparsity: The fraction of every row to prune, in ``[0, 1]``.

    Raises:
        InvalidTypeError: ``sparsity`` is not a real number (bools are refused).
        InvalidArgumentError: ``sparsity`` is NaN or outside ``[0, 1]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import LayerPruningContext
        >>> crit = RowMagnitudeCriterion(0.5)
        >>> crit.compute_mask(torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]]),
        ...                   torch.ones(2, 4))
        tensor([[False,  True,  True, False],
                [ True,  True, False, False]])
        >>> layer = nn.Linear(8, 3)
        >>> LayerPruningContext({layer: crit}).prune()
        >>> (layer.weight_mask == 0).sum(dim=1).tolist()
        [4, 4, 4]
    """

    name = "row-magnitude"
    PRUNING_TYPE = "global"

    def __init__(self, sparsity: float) -> None:
        self.sparsity = check_fraction(sparsity, "sparsity", "RowMagnitudeCriterion")

    def importance_scores(self, module: nn.Module, name: str) -> None:
        """Check that ``module.name`` is a linear-like weight; the scores are ``|w|``.

        Args:
            module: The module holding the tensor.
            name: The tensor's name.

        Returns:
            ``None``: the default magnitude scores.

        Raises:
            InvalidTypeError: ``module`` is not a linear-like layer.
            InvalidArgumentError: ``name`` is not its weight.
        """
        if weight_layout(module, name) is not None:
            return None
        layers = default_linear_layers()
        accepted = ", ".join(f"{t.label}.{t.weight}" for t in layers.types)
        weights = [t.weight for t in layers.types if is_module_type(module, [t.module_type])]
        if weights:
            raise InvalidArgumentError(
                f"{self!r} prunes the 2-D weight of linear-like layers: {module!r} is one, "
                f"but its {name!r} is not its weight ({weights[0]!r})"
            )
        raise InvalidTypeError(
            f"{self!r} compares the entries of each output row of a linear-like layer's "
            f"weight; got a {type(module).__name__}. Accepted: {accepted}. Exclude this "
            "module (or register its type with prunefw_register_linear_layers)"
        )

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Prune the smallest scores of every row until it has its share of pruned entries.

        Args:
            scores: ``|w|`` of the whole weight, ``(out_features, in_features)``.
            default_mask: The weight's current mask, same shape: entries where it is
                0 are already pruned, count first, and stay pruned.

        Returns:
            A bool keep-mask of ``scores``' shape; every row has
            ``max(round(sparsity * in_features), already pruned)`` pruned entries.

        Raises:
            InvalidArgumentError: ``scores`` is not 2-D, or ``default_mask`` has
                another shape.
        """
        if scores.dim() != 2:
            raise InvalidArgumentError(
                f"{self!r} compares weights per output row and needs the whole 2-D weight "
                f"(out_features, in_features); got scores of shape {tuple(scores.shape)}"
            )
        if default_mask.shape != scores.shape:
            raise InvalidArgumentError(
                f"{self!r}: default_mask has shape {tuple(default_mask.shape)}, scores have "
                f"shape {tuple(scores.shape)}"
            )
        k = round(self.sparsity * scores.shape[1])
        return ~smallest_k_per_row(scores, k, default_mask)

    def config(self) -> dict[str, Any]:
        """Return ``{"sparsity": sparsity}``."""
        return {"sparsity": self.sparsity}
