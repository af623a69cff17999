"""The optional calibration step: criteria that see activations before masks."""

from __future__ import annotations

import pytest
import torch
from conftest import model_state
from torch import nn

from prunefw import GlobalPruningContext, LayerPruningContext, PruningCriterion
from prunefw.errors import InvalidArgumentError


class InputNormCriterion(PruningCriterion):
    """Scores |W_ij| * ||X_j|| (a per-layer Wanda without per-row comparison)."""

    name = "test-input-norm"
    requires_calibration = True

    def __init__(self, amount: float) -> None:
        self.amount = amount
        self.norms: dict[int, torch.Tensor] = {}
        self.calls = 0
        self.resets = 0
        self.grad_enabled: list[bool] = []

    def reset_calibration(self) -> None:
        self.norms.clear()
        self.resets += 1

    def observe(self, module, name, inputs, output):
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        self.norms[id(module)] = self.norms.get(id(module), 0) + (x**2).sum(0)

    def importance_scores(self, module, name):
        return getattr(module, name).detach().abs() * self.norms[id(module)].sqrt()

    def compute_mask(self, scores, default_mask):
        k = round(self.amount * scores.numel())
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[scores.argsort()[:k]] = False
        return keep


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x, y):
        return self.norm(self.a(x) + self.b(y))


def batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([100.0, 1.0, 1.0, 0.01])
    return [
        (torch.randn(8, 4, generator=gen) * scale, torch.randn(8, 4, generator=gen))
        for _ in range(n)
    ]


def test_layer_context_calibrates_then_prunes_with_activation_scores():
    torch.manual_seed(0)
    model = TwoInputs()
    with torch.no_grad():
        model.a.weight.fill_(1.0)
    crit = InputNormCriterion(amount=0.25)
    LayerPruningContext({"a": crit}, model=model).prune(calibration_data=batches())
    assert crit.resets == 1
    assert crit.calls == 3
    assert crit.grad_enabled == [False, False, False]
    # equal weights: the input feature with the smallest scale (column 3) goes first
    assert torch.equal(model.a.weight_mask[:, 3], torch.zeros(4))
    assert int(model.a.weight_mask.sum()) == 12


def test_hooks_removed_modes_restored_and_bn_stats_untouched():
    torch.manual_seed(0)
    model = TwoInputs()
    model.train()
    model.b.eval()
    stats = model.norm.running_mean.clone(), model.norm.num_batches_tracked.clone()
    GlobalPruningContext(model, [InputNormCriterion(0.5)]).prune(calibration_data=batches())
    assert not model.a._forward_hooks
    assert not model.b._forward_hooks
    assert model.training
    assert model.a.training
    assert not model.b.training
    assert torch.equal(model.norm.running_mean, stats[0])
    assert torch.equal(model.norm.num_batches_tracked, stats[1])


def test_global_context_calibrates_every_target():
    torch.manual_seed(0)
    model = TwoInputs()
    crit = InputNormCriterion(0.5)
    GlobalPruningContext(model, [crit]).prune(calibration_data=batches(2))
    assert set(crit.norms) == {id(model.a), id(model.b)}
    masks = torch.cat([model.a.weight_mask.flatten(), model.b.weight_mask.flatten()])
    assert int((masks == 0).sum()) == 16


def test_mapping_batches_and_custom_forward():
    torch.manual_seed(0)
    model = TwoInputs()
    crit = InputNormCriterion(0.25)
    data = [{"x": x, "y": y} for x, y in batches(2)]
    LayerPruningContext({"b": crit}, model=model).prune(calibration_data=data)
    assert crit.calls == 2
    seen = []

    def forward(m, batch):
        seen.append(batch)
        return m(batch["x"], batch["y"])

    crit2 = InputNormCriterion(0.25)
    LayerPruningContext({"a": crit2}, model=model).prune(calibration_data=data, forward=forward)
    assert len(seen) == 2
    assert crit2.calls == 2


def test_missing_data_model_or_empty_batches_are_refused_without_changes():
    torch.manual_seed(0)
    model = TwoInputs()
    before = model_state(model)
    with pytest.raises(InvalidArgumentError, match="needs calibration data"):
        LayerPruningContext({"a": InputNormCriterion(0.5)}, model=model).prune()
    with pytest.raises(InvalidArgumentError, match="pass model="):
        LayerPruningContext({model.a: InputNormCriterion(0.5)}).prune(calibration_data=batches())
    with pytest.raises(InvalidArgumentError, match="was empty"):
        GlobalPruningContext(model, InputNormCriterion(0.5)).prune(calibration_data=[])
    assert model_state(model) == before
    assert not model.a._forward_hooks


def test_calibration_failure_removes_hooks_and_leaves_model_untouched():
    torch.manual_seed(0)
    model = TwoInputs()
    before = model_state(model)
    bad = [(torch.randn(2, 4), torch.randn(2, 5))]
    with pytest.raises(RuntimeError):
        GlobalPruningContext(model, InputNormCriterion(0.5)).prune(calibration_data=bad)
    assert not model.a._forward_hooks
    assert not model.b._forward_hooks
    assert model_state(model) == before


def test_criteria_without_calibration_ignore_data():
    from prunefw import MagnitudeCriterion

    model = TwoInputs()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune(calibration_data=batches())
    assert int((model.a.weight_mask == 0).sum() + (model.b.weight_mask == 0).sum()) == 16


def test_requires_calibration_without_observe_is_a_clear_error():
    class Lazy(PruningCriterion):
        name = "lazy"
        requires_calibration = True

        def compute_mask(self, scores, default_mask):
            return torch.ones_like(scores, dtype=torch.bool)

    model = TwoInputs()
    with pytest.raises(NotImplementedError, match="does not implement observe"):
        GlobalPruningContext(model, Lazy()).prune(calibration_data=batches(1))
