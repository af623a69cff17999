"""The kit's default model and calibration batches, for authors who do not bring their own."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from prunefw.criteria.base import PruningCriterion

__all__ = ["MODEL_SEED", "default_calibration", "default_calibration_data", "default_model"]

#: The seed of torch's global RNG while the kit calls ``make_model()``.
MODEL_SEED = 0


def default_model() -> nn.Sequential:
    """Build the kit's default model: ``Linear(16, 32), ReLU(), Linear(32, 8)``.

    The weights come from ``torch.manual_seed(MODEL_SEED)``; the caller's global RNG
    state is left as it was.

    Returns:
        A new, seeded model.

    Example:
        >>> import torch
        >>> torch.equal(default_model()[0].weight, default_model()[0].weight)
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MODEL_SEED)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def default_calibration_data(model: nn.Module) -> list[torch.Tensor]:
    """Make 4 seeded batches ``torch.randn(8, in_features)`` for ``model``'s first Linear.

    Args:
        model: A model whose first :class:`~torch.nn.Linear` (in ``model.modules()``
            order) takes the model's input.

    Returns:
        Four batches of shape ``(8, in_features)`` in that layer's dtype.

    Raises:
        ValueError: ``model`` has no Linear layer; give your own calibration data.

    Example:
        >>> [tuple(batch.shape) for batch in default_calibration_data(default_model())]
        [(8, 16), (8, 16), (8, 16), (8, 16)]
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise ValueError(
            f"the default calibration data needs a Linear layer to size its batches, and "
            f"{type(model).__name__} has none: override calibration_data(model) (or pass "
            "calibration_data= to check_criterion) with batches for your model"
        )
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(8, first.in_features, generator=generator, dtype=first.weight.dtype)
        for _ in range(4)
    ]


def default_calibration(
    criterion_class: type[PruningCriterion],
) -> Callable[[nn.Module], list[torch.Tensor] | None]:
    """Return the default ``calibration_data(model)`` for ``criterion_class``.

    Args:
        criterion_class: The criterion class under test.

    Returns:
        A function giving :func:`default_calibration_data` for criteria with
        ``requires_calibration``, else ``None``.

    Example:
        >>> from prunefw import MagnitudeCriterion
        >>> default_calibration(MagnitudeCriterion)(default_model()) is None
        True
    """

    def calibration(model: nn.Module) -> list[torch.Tensor] | None:
        if not getattr(criterion_class, "requires_calibration", False):
            return None
        return default_calibration_data(model)

    return calibration
