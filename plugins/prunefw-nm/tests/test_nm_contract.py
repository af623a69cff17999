"""prunefw's criterion contract kit (prunefw.testing), run against NMCriterion."""

from __future__ import annotations

from torch import nn

from prunefw.testing import CriterionContract
from prunefw_nm import NMCriterion


class TestNMContract(CriterionContract):
    """The shared contract every prunefw criterion must meet."""

    criterion_class = NMCriterion

    def make_criterion(self) -> NMCriterion:
        """2:4, the pattern of torch's semi-structured sparsity."""
        return NMCriterion(2, 4)

    def make_model(self) -> nn.Module:
        """Every Linear's in_features is a multiple of 4, as N:M groups require."""
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
