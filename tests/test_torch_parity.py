"""Regression tests against torch.nn.utils.prune: same masks, same reparametrization."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    RandomCriterion,
)

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def make_tie_free(model: nn.Module, seed: int) -> nn.Module:
    """Give every prunable weight of ``model`` a magnitude no other weight has.

    Magnitudes are ``(r + 1) / N`` for a random permutation ``r`` of the ``N`` weights
    (exact in float32), with random signs, so no two entries tie, within a layer or
    across layers.
    """
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    total = sum(w.numel() for w in weights)
    gen = torch.Generator().manual_seed(seed)
    magnitudes = (torch.randperm(total, generator=gen).to(torch.float32) + 1) / total
    signs = torch.randint(0, 2, (total,), generator=gen).to(torch.float32) * 2 - 1
    values = magnitudes * signs
    start = 0
    with torch.no_grad():
        for w in weights:
            w.copy_(values[start : start + w.numel()].view_as(w))
            start += w.numel()
    return model


def linear_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 3)
    )
    return make_tie_free(model, seed)


def conv_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 5),
    )
    return make_tie_free(model, seed)


def conv1d_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6, 8))
    return make_tie_free(model, seed)


MODELS = {"linear": linear_model, "conv2d": conv_model, "conv1d": conv1d_model}
INPUTS = {
    "linear": (4, 20),
    "conv2d": (2, 3, 8, 8),
    "conv1d": (2, 4, 8),
}


def prunable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, PRUNABLE)]


def pairs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in prunable(model)]


def n_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in prunable(model))


def n_zeros(model: nn.Module) -> int:
    return sum(int((m.weight_mask == 0).sum()) for m in prunable(model))


def assert_same_pruning(ours: nn.Module, theirs: nn.Module) -> None:
    """Same masks (values and dtype), same original weights, same effective weights."""
    for mine, torchs in zip(prunable(ours), prunable(theirs), strict=True):
        assert mine.weight_mask.dtype == torchs.weight_mask.dtype
        assert torch.equal(mine.weight_mask, torchs.weight_mask)
        assert torch.equal(mine.weight_orig, torchs.weight_orig)
        assert torch.equal(mine.weight, torchs.weight)
    assert list(ours.state_dict()) == list(theirs.state_dict())


# ------------------------------------------------------------------ global pruning

AMOUNTS = [0.0, 0.1, 0.33, 0.5, 0.77, 0.999, 1.0, 0, 1, 37, 400]


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("amount", AMOUNTS, ids=repr)
def test_global_magnitude_equals_global_unstructured(kind: str, amount: float):
    ours = MODELS[kind]()
    theirs = copy.deepcopy(ours)
    GlobalPruningContext(ours, [MagnitudeCriterion(amount=amount)]).prune()
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=amount)
    assert_same_pruning(ours, theirs)
    expected = amount if isinstance(amount, int) else round(amount * n_weights(ours))
    assert n_zeros(ours) == expected


@pytest.mark.parametrize("kind", list(MODELS))
def test_global_whole_model_count(kind: str):
    ours = MODELS[kind]()
    theirs = copy.deepcopy(ours)
    total = n_weights(ours)
    GlobalPruningContext(ours, MagnitudeCriterion(amount=total)).prune()
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=total)
    assert_same_pruning(ours, theirs)
    assert n_zeros(ours) == total


def test_global_with_explicit_parameters_equals_torch():
    ours = linear_model(3)
    theirs = copy.deepcopy(ours)
    chosen = [(ours[0], "weight"), (ours[4], "weight")]
    GlobalPruningContext(ours, MagnitudeCriterion(amount=0.6), parameters=chosen).prune()
    prune.global_unstructured(
        [(theirs[0], "weight"), (theirs[4], "weight")], prune.L1Unstructured, amount=0.6
    )
    for index in (0, 4):
        assert torch.equal(ours[index].weight_mask, theirs[index].weight_mask)
    assert not prune.is_pruned(ours[2])


# ------------------------------------------------------------------ layer pruning


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("amount", [0.0, 0.2, 0.5, 0.61, 1.0, 0, 3, 25], ids=repr)
def test_layer_magnitude_equals_l1_unstructured(kind: str, amount: float):
    ours = MODELS[kind](1)
    theirs = copy.deepcopy(ours)
    LayerPruningContext({m: MagnitudeCriterion(amount=amount) for m in prunable(ours)}).prune()
    for m in prunable(theirs):
        prune.l1_unstructured(m, "weight", amount=amount)
    assert_same_pruning(ours, theirs)


def test_layer_by_qualified_name_equals_l1_unstructured():
    ours = conv_model(2)
    theirs = copy.deepcopy(ours)
    LayerPruningContext(
        {"0": MagnitudeCriterion(amount=0.4), "5": MagnitudeCriterion(amount=17)}, model=ours
    ).prune()
    prune.l1_unstructured(theirs[0], "weight", amount=0.4)
    prune.l1_unstructured(theirs[5], "weight", amount=17)
    for index in (0, 5):
        assert torch.equal(ours[index].weight_mask, theirs[index].weight_mask)
    assert not prune.is_pruned(ours[2])


def test_layer_bias_equals_l1_unstructured():
    ours = linear_model(4)
    with torch.no_grad():
        signs = torch.tensor([1.0, -1.0]).repeat(15)
        ours[0].bias.copy_((torch.randperm(30).float() + 1) * signs)
    theirs = copy.deepcopy(ours)
    LayerPruningContext({(ours[0], "bias"): MagnitudeCriterion(amount=0.3)}).prune()
    prune.l1_unstructured(theirs[0], "bias", amount=0.3)
    assert torch.equal(ours[0].bias_mask, theirs[0].bias_mask)
    assert torch.equal(ours[0].bias, theirs[0].bias)


# ------------------------------------------------------------------ iterative pruning


@pytest.mark.parametrize("kind", list(MODELS))
def test_iterative_layer_equals_l1_unstructured_twice(kind: str):
    ours = MODELS[kind](5)
    separately = copy.deepcopy(ours)
    theirs = copy.deepcopy(ours)
    LayerPruningContext(
        {
            m: [MagnitudeCriterion(amount=0.3), MagnitudeCriterion(amount=0.3)]
            for m in prunable(ours)
        }
    ).prune()
    for _ in range(2):
        LayerPruningContext(
            {m: MagnitudeCriterion(amount=0.3) for m in prunable(separately)}
        ).prune()
    for m in prunable(theirs):
        prune.l1_unstructured(m, "weight", amount=0.3)
        prune.l1_unstructured(m, "weight", amount=0.3)
    assert_same_pruning(ours, theirs)
    assert_same_pruning(separately, theirs)
    for m in prunable(ours):
        n = m.weight.numel()
        first = round(0.3 * n)
        assert int((m.weight_mask == 0).sum()) == first + round(0.3 * (n - first))


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize(("a1", "a2"), [(0.3, 0.3), (0.5, 0.2), (100, 50), (0.25, 7)])
def test_iterative_global_equals_global_unstructured_twice(kind: str, a1: float, a2: float):
    ours = MODELS[kind](6)
    theirs = copy.deepcopy(ours)
    GlobalPruningContext(
        ours, [MagnitudeCriterion(amount=a1), MagnitudeCriterion(amount=a2)]
    ).prune()
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=a1)
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=a2)
    assert_same_pruning(ours, theirs)


def test_prunefw_on_top_of_torch_pruning_equals_torch_twice():
    ours = linear_model(7)
    theirs = copy.deepcopy(ours)
    prune.global_unstructured(pairs(ours), prune.L1Unstructured, amount=0.3)
    GlobalPruningContext(ours, MagnitudeCriterion(amount=0.3)).prune()
    LayerPruningContext({ours[2]: MagnitudeCriterion(amount=0.5)}).prune()
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=0.3)
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=0.3)
    prune.l1_unstructured(theirs[2], "weight", amount=0.5)
    assert_same_pruning(ours, theirs)


def test_torch_on_top_of_prunefw_pruning_equals_torch_twice():
    ours = conv_model(8)
    theirs = copy.deepcopy(ours)
    GlobalPruningContext(ours, MagnitudeCriterion(amount=0.4)).prune()
    prune.global_unstructured(pairs(ours), prune.L1Unstructured, amount=0.4)
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=0.4)
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=0.4)
    assert_same_pruning(ours, theirs)


# ------------------------------------------------------------------ reparametrization


def pruned_by(kind: str, how: str) -> nn.Module:
    model = MODELS[kind](9)
    if how == "global":
        GlobalPruningContext(model, [MagnitudeCriterion(amount=0.5)]).prune()
    elif how == "global-twice":
        GlobalPruningContext(
            model, [MagnitudeCriterion(amount=0.3), RandomCriterion(0.3, seed=0)]
        ).prune()
    elif how == "layer":
        LayerPruningContext({m: MagnitudeCriterion(amount=0.5) for m in prunable(model)}).prune()
    else:
        LayerPruningContext(
            {
                m: [MagnitudeCriterion(amount=0.3), RandomCriterion(0.3, seed=1)]
                for m in prunable(model)
            }
        ).prune()
    return model


HOWS = ["global", "global-twice", "layer", "layer-twice"]


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("how", HOWS)
def test_native_reparametrization(kind: str, how: str):
    model = pruned_by(kind, how)
    assert prune.is_pruned(model)
    for m in prunable(model):
        assert isinstance(m.weight_orig, nn.Parameter)
        assert "weight" not in m._parameters
        assert dict(m.named_parameters())["weight_orig"] is m.weight_orig
        assert "weight_mask" in dict(m.named_buffers())
        assert m.weight_mask.dtype == m.weight_orig.dtype
        assert not isinstance(m.weight, nn.Parameter)
        hooks = [h for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        assert len(hooks) == 1
        assert hooks[0]._tensor_name == "weight"
        if how.endswith("twice"):
            assert isinstance(hooks[0], prune.PruningContainer)
            assert len(hooks[0]) == 2
        assert torch.equal(m.weight, m.weight_orig * m.weight_mask)
        assert {"weight_orig", "weight_mask"} <= {k.rsplit(".", 1)[-1] for k in model.state_dict()}


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("how", HOWS)
def test_forward_uses_masked_weights(kind: str, how: str):
    model = pruned_by(kind, how)
    first = prunable(model)[0]
    torch.manual_seed(0)
    x = torch.randn(INPUTS[kind])
    weight = first.weight_orig * first.weight_mask
    if isinstance(first, nn.Linear):
        expected = F.linear(x, weight, first.bias)
    elif isinstance(first, nn.Conv1d):
        expected = F.conv1d(x, weight, first.bias)
    else:
        expected = F.conv2d(x, weight, first.bias)
    assert torch.equal(first(x), expected)
    # The hook recomputes the weight on every forward from weight_orig and weight_mask.
    with torch.no_grad():
        first.weight_orig.add_(1.0)
    weight = first.weight_orig * first.weight_mask
    out = first(x)
    if isinstance(first, nn.Linear):
        assert torch.equal(out, F.linear(x, weight, first.bias))
    assert torch.equal(first.weight, weight)
    assert bool((first.weight[first.weight_mask == 0] == 0).all())


def test_linear_forward_and_gradients_match_torch():
    ours = linear_model(10)
    theirs = copy.deepcopy(ours)
    GlobalPruningContext(ours, MagnitudeCriterion(amount=0.6)).prune()
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=0.6)
    torch.manual_seed(1)
    x = torch.randn(5, 20)
    out_ours, out_theirs = ours(x), theirs(x)
    assert torch.equal(out_ours, out_theirs)
    layer = ours[0]
    assert torch.equal(layer(x), F.linear(x, layer.weight_orig * layer.weight_mask, layer.bias))
    out_ours.sum().backward()
    out_theirs.sum().backward()
    for mine, torchs in zip(prunable(ours), prunable(theirs), strict=True):
        assert torch.equal(mine.weight_orig.grad, torchs.weight_orig.grad)
        assert bool((mine.weight_orig.grad[mine.weight_mask == 0] == 0).all())


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("how", HOWS)
def test_prune_remove_works(kind: str, how: str):
    model = pruned_by(kind, how)
    for m in prunable(model):
        effective = (m.weight_orig * m.weight_mask).detach().clone()
        orig = m.weight_orig
        prune.remove(m, "weight")
        assert isinstance(m.weight, nn.Parameter)
        assert m.weight is orig  # torch writes into the same Parameter
        assert torch.equal(m.weight, effective)
        assert not hasattr(m, "weight_orig")
        assert not hasattr(m, "weight_mask")
        assert not any(
            isinstance(h, prune.BasePruningMethod) for h in m._forward_pre_hooks.values()
        )
    assert not prune.is_pruned(model)
    fresh = MODELS[kind](9)
    fresh.load_state_dict(model.state_dict())


def test_state_dict_loads_into_torch_pruned_model():
    ours = conv_model(11)
    theirs = copy.deepcopy(ours)
    GlobalPruningContext(ours, MagnitudeCriterion(amount=0.5)).prune()
    prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=0.2)
    theirs.load_state_dict(ours.state_dict())
    for mine, torchs in zip(prunable(ours), prunable(theirs), strict=True):
        assert torch.equal(mine.weight_mask, torchs.weight_mask)


# ------------------------------------------------------------------ random pruning


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.73, 1.0])
def test_random_global_count_equals_random_unstructured(kind: str, ratio: float):
    ours = MODELS[kind](12)
    theirs = copy.deepcopy(ours)
    GlobalPruningContext(ours, RandomCriterion(ratio, seed=0)).prune()
    prune.global_unstructured(pairs(theirs), prune.RandomUnstructured, amount=ratio)
    assert n_zeros(ours) == n_zeros(theirs) == round(ratio * n_weights(ours))


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_random_layer_count_equals_random_unstructured(kind: str, ratio: float):
    ours = MODELS[kind](13)
    theirs = copy.deepcopy(ours)
    LayerPruningContext(
        {
            m: [RandomCriterion(ratio, seed=1), RandomCriterion(ratio, seed=2)]
            for m in prunable(ours)
        }
    ).prune()
    for m in prunable(theirs):
        prune.random_unstructured(m, "weight", amount=ratio)
        prune.random_unstructured(m, "weight", amount=ratio)
    for mine, torchs in zip(prunable(ours), prunable(theirs), strict=True):
        assert int((mine.weight_mask == 0).sum()) == int((torchs.weight_mask == 0).sum())


def test_random_criterion_works_through_torch_apply():
    layer = linear_model(14)[0]
    crit = RandomCriterion(0.4, seed=3)
    RandomCriterion.PruningMethod.apply(layer, "weight", criterion=crit)
    assert prune.is_pruned(layer)
    assert int((layer.weight_mask == 0).sum()) == round(0.4 * layer.weight.numel())
