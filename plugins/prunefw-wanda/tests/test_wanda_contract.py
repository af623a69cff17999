"""prunefw's criterion contract kit (prunefw.testing), run against WandaCriterion."""

from __future__ import annotations

from prunefw.testing import CriterionContract
from prunefw_wanda import WandaCriterion


class TestWandaContract(CriterionContract):
    """The shared contract every prunefw criterion must meet.

    The kit's default model (``Linear(16, 32), ReLU(), Linear(32, 8)``) and, since
    ``requires_calibration`` is set, its default calibration batches fit Wanda as they
    are. Its ``global_context`` check expects the refusal (``PruningTypeError``).
    """

    criterion_class = WandaCriterion

    def make_criterion(self) -> WandaCriterion:
        """Half of every row."""
        return WandaCriterion(0.5)
