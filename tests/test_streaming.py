"""The streaming global strategy: same masks as the default strategy, without concatenation."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import model_state
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
)
from prunefw.errors import InvalidArgumentError
from prunefw.selection import select_kth


def make_model(seed: int = 0, quantum: float | None = None, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(17, 23), nn.ReLU(), nn.Conv1d(3, 5, 4), nn.Linear(23, 7))
    model = model.to(dtype)
    if quantum is not None:  # many ties
        with torch.no_grad():
            for p in model.parameters():
                p.copy_((p / quantum).round() * quantum)
    return model


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight_mask for m in model.modules() if hasattr(m, "weight_mask")]


def both(criteria_factory, model_factory):
    default, streaming = model_factory(), model_factory()
    GlobalPruningContext(default, criteria_factory()).prune()
    GlobalPruningContext(streaming, criteria_factory(), strategy="streaming").prune()
    return default, streaming


CASES = [
    lambda: [MagnitudeCriterion(amount=0.5)],
    lambda: [MagnitudeCriterion(amount=0.0)],
    lambda: [MagnitudeCriterion(amount=1.0)],
    lambda: [MagnitudeCriterion(amount=37)],
    lambda: [MagnitudeCriterion(min_threshold=0.05)],
    lambda: [PercentileCriterion(0.1, 0.9)],
    lambda: [PercentileCriterion(0.0, 0.4)],
    lambda: [PercentileCriterion(0.5, 0.5)],
    lambda: [MagnitudeCriterion(amount=0.3), PercentileCriterion(0.2, 0.7)],
]


@pytest.mark.parametrize("criteria", CASES)
@pytest.mark.parametrize("quantum", [None, 0.05, 1.0])
def test_same_masks_as_the_default_strategy_ties_included(criteria, quantum):
    default, streaming = both(criteria, lambda: make_model(quantum=quantum))
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_same_masks_in_other_dtypes(dtype):
    default, streaming = both(
        lambda: [MagnitudeCriterion(amount=0.45)], lambda: make_model(dtype=dtype)
    )
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
    amount=st.floats(0, 1),
    lower=st.floats(0, 1),
    width=st.floats(0, 1),
    quantum=st.sampled_from([None, 0.1, 0.02]),
    seed=st.integers(0, 3),
)
def test_property_same_masks_on_top_of_earlier_pruning(amount, lower, width, quantum, seed):
    upper = min(1.0, lower + width)

    def model_factory():
        model = make_model(seed, quantum)
        GlobalPruningContext(model, RandomCriterion(0.3, seed=seed)).prune()
        return model

    default, streaming = both(
        lambda: [MagnitudeCriterion(amount=amount), PercentileCriterion(lower, upper)],
        model_factory,
    )
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


class SignedScores(PruningCriterion):
    """Custom scores with negative values and both signs of zero."""

    name = "signed"

    def __init__(self, amount: float) -> None:
        self.inner = MagnitudeCriterion(amount=amount)

    def importance_scores(self, module, name):
        w = getattr(module, name).detach()
        return torch.where(w.abs() < 0.05, -0.0 * torch.sign(w), w)

    def compute_mask(self, scores, default_mask):
        return self.inner.compute_mask(scores, default_mask)

    def rank_selection(self, n):
        return self.inner.rank_selection(n)


def test_custom_signed_scores_match():
    default, streaming = both(lambda: [SignedScores(0.4)], lambda: make_model(quantum=0.01))
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


def test_random_exact_count_and_seeded():
    model_a, model_b, model_c = make_model(), make_model(), make_model()
    GlobalPruningContext(model_a, RandomCriterion(0.37, seed=5), strategy="streaming").prune()
    GlobalPruningContext(model_b, RandomCriterion(0.37, seed=5), strategy="streaming").prune()
    GlobalPruningContext(model_c, RandomCriterion(0.37, seed=6), strategy="streaming").prune()
    total = sum(m.numel() for m in masks(model_a))
    assert sum(int((m == 0).sum()) for m in masks(model_a)) == round(0.37 * total)
    assert all(torch.equal(a, b) for a, b in zip(masks(model_a), masks(model_b), strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(masks(model_a), masks(model_c), strict=True))


def test_random_is_uniform_over_positions():
    hits = torch.zeros(200)
    for seed in range(300):
        layer = nn.Linear(20, 10)
        GlobalPruningContext(
            nn.Sequential(layer), RandomCriterion(0.5, seed=seed), strategy="streaming"
        ).prune()
        hits += (layer.weight_mask == 0).flatten().float()
    freq = hits / 300
    assert abs(float(freq.mean()) - 0.5) < 1e-6
    assert float(freq.min()) > 0.35
    assert float(freq.max()) < 0.65


def test_torch_reparametrization_and_no_leaked_masks():
    model = make_model()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy="streaming").prune()
    assert prune.is_pruned(model)
    for module in (model[0], model[2], model[3]):
        assert isinstance(module.weight_orig, nn.Parameter)
        hook = next(iter(module._forward_pre_hooks.values()))
        assert hook.mask is module.weight_mask
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
    clone = copy.deepcopy(model)
    x = torch.randn(2, 17)
    assert torch.equal(clone[0](x), model[0](x))
    prune.remove(model[0], "weight")


def test_unsupported_criterion_and_bad_strategy_are_refused():
    class NoRank(PruningCriterion):
        name = "no-rank"

        def compute_mask(self, scores, default_mask):
            return torch.ones_like(scores, dtype=torch.bool)

    model = make_model()
    with pytest.raises(InvalidArgumentError, match="does not support strategy='streaming'"):
        GlobalPruningContext(model, NoRank(), strategy="streaming")
    with pytest.raises(InvalidArgumentError, match="strategy='fast'"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy="fast")


def test_failure_in_second_criterion_leaves_model_untouched():
    class Fails(SignedScores):
        name = "fails"

        def importance_scores(self, module, name):
            raise RuntimeError("plugin exploded")

    model = make_model()
    before = model_state(model)
    ctx = GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.5), Fails(0.2)], strategy="streaming"
    )
    with pytest.raises(RuntimeError, match="plugin exploded"):
        ctx.prune()
    assert model_state(model) == before


def test_select_kth_matches_sorting_on_signed_keys():
    gen = torch.Generator().manual_seed(0)
    chunks = [
        torch.randint(-(2**31), 2**31, (n,), generator=gen, dtype=torch.int32) for n in (5, 300, 77)
    ]
    flat = torch.cat(chunks).to(torch.int64).sort().values
    for k in (1, 2, 100, 381, 382):
        key, less = select_kth(lambda: iter([(c, None) for c in chunks]), k, 32)
        assert key == int(flat[k - 1])
        assert less == int((flat < key).sum())
