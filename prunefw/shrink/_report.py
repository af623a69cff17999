"""What :func:`~prunefw.shrink.shrink_model` reports: a :class:`ShrinkReport`, or a refusal.

Every refusal is a :class:`ShrinkError` raised before the model is changed (or after
it was restored exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from prunefw.errors import PrunefwError

__all__ = [
    "NotStructuredError",
    "NothingToShrinkError",
    "ShrinkError",
    "ShrinkReport",
    "UnsafeShrinkError",
]


class ShrinkError(PrunefwError, ValueError):
    """A model cannot be shrunk as asked; the model is unchanged."""


class NothingToShrinkError(ShrinkError):
    """The model has no pruning masks: there is nothing to remove."""


class NotStructuredError(ShrinkError):
    """A mask prunes entries that are not whole channels (the message names the tensor)."""


class UnsafeShrinkError(ShrinkError):
    """Removing the pruned channels would change the model's outputs (the message says where)."""


@dataclass(frozen=True)
class ShrinkReport:
    """What :func:`shrink_model` did.

    Attributes:
        model: The shrunk model (the same object that was passed in).
        parameters_before: Parameter count before (shared Parameters counted once).
        parameters_after: Parameter count after.
        removed: ``{"module.weight": (output channels removed, input channels
            removed)}`` for every Linear or convolution that lost channels.
        max_abs_diff: The largest absolute difference between the shrunk and the
            masked model's outputs on ``example_inputs``.
    """

    model: nn.Module
    parameters_before: int
    parameters_after: int
    removed: Mapping[str, tuple[int, int]]
    max_abs_diff: float

    def describe(self) -> str:
        """One line: parameters before and after, layers shrunk, output difference.

        Example:
            >>> from torch import nn
            >>> ShrinkReport(nn.Identity(), 1000, 600, {"0.weight": (4, 0)}, 0.0).describe()
            'parameters 1,000 -> 600 (0.60x), 1 layer shrunk, max |output difference| 0'
        """
        n = len(self.removed)
        ratio = self.parameters_after / self.parameters_before if self.parameters_before else 0.0
        return (
            f"parameters {self.parameters_before:,} -> {self.parameters_after:,} ({ratio:.2f}x), "
            f"{n} layer{'s' if n != 1 else ''} shrunk, max |output difference| "
            f"{self.max_abs_diff:.3g}"
        )
