"""GlobalPruningContext and LayerPruningContext: targets, semantics, keys and bad input."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import torch
from conftest import SeedModel, make_mlp, model_state
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
)
from prunefw.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteWeightsError,
    PrunefwError,
    PruningTypeError,
    TargetError,
)

# --------------------------------------------------------------------------- helpers


class AllKinds(nn.Module):
    """Every module type the global context selects by default, and some it must not."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, 3, 3),
            nn.BatchNorm1d(3),
            nn.Conv2d(2, 3, 3),
            nn.Conv3d(2, 3, 3),
        )
        self.up = nn.Sequential(
            nn.ConvTranspose1d(3, 2, 3),
            nn.ConvTranspose2d(3, 2, 3),
            nn.ConvTranspose3d(3, 2, 3),
        )
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(4, 2)


DEFAULT_LABELS = [
    "features.0.weight",
    "features.2.weight",
    "features.3.weight",
    "up.0.weight",
    "up.1.weight",
    "up.2.weight",
    "head.weight",
]


def all_kinds(seed: int = 0) -> AllKinds:
    torch.manual_seed(seed)
    return AllKinds()


def labels(ctx: Any) -> list[str]:
    return [target.label for target in ctx.targets]


def n_pruned(module: nn.Module, name: str = "weight") -> int:
    return int((getattr(module, name + "_mask") == 0).sum())


def is_pruned_tensor(module: nn.Module, name: str) -> bool:
    return name + "_mask" in module._buffers and name + "_orig" in module._parameters


def linears(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


class ChannelL2Criterion(PruningCriterion):
    """Structured: prune the ``amount`` output channels with the lowest L2 norm."""

    name = "test-channel-l2"
    PRUNING_TYPE = "structured"

    def __init__(self, amount: int) -> None:
        self.amount = amount
        self.dim = 0

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        norms = scores.reshape(scores.shape[0], -1).norm(dim=1)
        drop = torch.argsort(norms)[: self.amount]
        keep = torch.ones(scores.shape[0], dtype=torch.bool)
        keep[drop] = False
        return keep.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores).clone()

    def config(self) -> dict[str, Any]:
        return {"amount": self.amount}


class NegMagnitude(MagnitudeCriterion):
    """Scores -|w|: the amount with the lowest score are the largest weights."""

    name = "test-neg-magnitude"

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
        return -getattr(module, name).detach().abs()


class ScoresOf(MagnitudeCriterion):
    """Returns a fixed scores object (wrong shape, NaN, ...) for every tensor."""

    name = "test-scores-of"

    def __init__(self, make: Any) -> None:
        super().__init__(amount=0.5)
        self.make = make

    def importance_scores(self, module: nn.Module, name: str) -> Any:
        return self.make(getattr(module, name))


class Recording(PruningCriterion):
    """Prunes nothing; records the scores it was shown."""

    name = "test-recording"

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        self.seen.append(scores.clone())
        return torch.ones_like(scores, dtype=torch.bool)


def global_ctx(model: nn.Module, criteria: Any) -> GlobalPruningContext:
    return GlobalPruningContext(model, criteria)


def layer_ctx(model: nn.Sequential, criteria: Any) -> LayerPruningContext:
    return LayerPruningContext({m: criteria for m in linears(model)}, model=model)


CONTEXTS = {"global": global_ctx, "layer": layer_ctx}


# --------------------------------------------------------------------------- global targets


def test_global_default_targets_are_linear_and_convolution_weights():
    model = all_kinds()
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
    assert labels(ctx) == DEFAULT_LABELS
    modules = dict(model.named_modules())
    for target in ctx.targets:
        assert target.name == "weight"
        assert target.module is modules[target.module_name]
    ctx.prune()
    for name in ("features.1", "embed", "norm", "bn"):
        module = modules[name]
        assert not prune.is_pruned(module), name
        assert "weight" in module._parameters
        assert not hasattr(module, "weight_mask")
    for label in DEFAULT_LABELS:
        module = modules[label.rsplit(".", 1)[0]]
        assert is_pruned_tensor(module, "weight")
        assert not is_pruned_tensor(module, "bias")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"module_types": [nn.Conv2d, nn.Linear]},
            ["features.2.weight", "head.weight"],
        ),
        (
            {"module_types": (nn.Embedding, nn.BatchNorm1d)},
            ["features.1.weight", "embed.weight"],
        ),
        (
            {"include": "features.*"},
            ["features.0.weight", "features.2.weight", "features.3.weight"],
        ),
        (
            {"include": ["features.0", "up.?"]},
            ["features.0.weight", "up.0.weight", "up.1.weight", "up.2.weight"],
        ),
        (
            {"exclude": ["up.*", "features.3"]},
            ["features.0.weight", "features.2.weight", "head.weight"],
        ),
        (
            {"include": "features.*", "exclude": "features.2"},
            ["features.0.weight", "features.3.weight"],
        ),
        (
            {"tensor_name": "bias"},
            [label.replace("weight", "bias") for label in DEFAULT_LABELS],
        ),
    ],
    ids=["types", "other-types", "include", "include-list", "exclude", "both", "bias"],
)
def test_global_target_selection(kwargs: dict[str, Any], expected: list[str]):
    model = all_kinds()
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), **kwargs)
    assert labels(ctx) == expected
    ctx.prune()
    modules = dict(model.named_modules())
    pruned = sorted(
        f"{qualname}.{name}"
        for qualname, module in model.named_modules()
        for name in ("weight", "bias")
        if is_pruned_tensor(module, name)
    )
    assert pruned == sorted(expected)
    for label in expected:
        module_name = label.rsplit(".", 1)[0]
        assert prune.is_pruned(modules[module_name])


def test_global_bias_skips_modules_without_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 3))
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=1), tensor_name="bias")
    assert labels(ctx) == ["1.bias"]


def test_global_explicit_parameters_in_given_order():
    model = all_kinds()
    pairs = [(model.head, "weight"), (model.features[0], "bias"), (model.bn, "weight")]
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), parameters=pairs)
    assert labels(ctx) == ["head.weight", "features.0.bias", "bn.weight"]
    assert [(t.module, t.name) for t in ctx.targets] == pairs
    ctx.prune()
    assert is_pruned_tensor(model.head, "weight")
    assert not is_pruned_tensor(model.head, "bias")
    assert is_pruned_tensor(model.features[0], "bias")
    assert not is_pruned_tensor(model.features[0], "weight")
    assert is_pruned_tensor(model.bn, "weight")
    assert not prune.is_pruned(model.features[2])
    total = sum(getattr(m, n).numel() for m, n in pairs)
    pruned = sum(n_pruned(m, n) for m, n in pairs)
    assert pruned == round(0.5 * total)


def test_global_parameters_accept_a_generator():
    model = make_mlp()
    pairs = ((m, "weight") for m in linears(model)[:2])
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), parameters=pairs)
    assert labels(ctx) == ["0.weight", "2.weight"]


# --------------------------------------------------------------------------- global semantics


def test_global_ranking_is_global():
    model = make_mlp()
    layers = linears(model)
    weights = [m.weight.detach().clone() for m in layers]
    total = sum(w.numel() for w in weights)
    GlobalPruningContext(model, [MagnitudeCriterion(amount=0.6)]).prune()

    pruned = [n_pruned(m) for m in layers]
    assert sum(pruned) == round(0.6 * total)
    sparsities = [p / w.numel() for p, w in zip(pruned, weights, strict=True)]
    assert len({round(s, 6) for s in sparsities}) == len(layers)  # all different

    # Exactly the globally smallest magnitudes are gone.
    pruned_abs = torch.cat(
        [w.abs()[m.weight_mask == 0] for w, m in zip(weights, layers, strict=True)]
    )
    kept_abs = torch.cat(
        [w.abs()[m.weight_mask == 1] for w, m in zip(weights, layers, strict=True)]
    )
    assert pruned_abs.max() < kept_abs.min()
    flat = torch.cat([w.abs().flatten() for w in weights])
    threshold = flat.sort().values[round(0.6 * total) - 1]
    assert pruned_abs.max() == threshold


@pytest.mark.parametrize(("a1", "a2"), [(0.5, 0.5), (0.3, 0.6), (0.2, 40)])
def test_global_criteria_apply_in_order_on_what_remains(a1: float, a2: float):
    model = make_mlp()
    layers = linears(model)
    total = sum(m.weight.numel() for m in layers)
    GlobalPruningContext(
        model, [MagnitudeCriterion(amount=a1), MagnitudeCriterion(amount=a2)]
    ).prune()
    k1 = round(a1 * total)
    k2 = a2 if isinstance(a2, int) else round(a2 * (total - k1))
    assert sum(n_pruned(m) for m in layers) == k1 + k2
    hook = layers[0]._forward_pre_hooks
    container = next(iter(hook.values()))
    assert isinstance(container, prune.PruningContainer)
    assert len(container._pruning_methods) == 2


def test_global_later_criterion_sees_only_survivors():
    model = make_mlp()
    layers = linears(model)
    original = [m.weight.detach().clone() for m in layers]
    recording = Recording()
    GlobalPruningContext(model, [RandomCriterion(0.4, seed=3), recording]).prune()
    assert len(recording.seen) == 1
    survivors = torch.cat(
        [w[m.weight_mask == 1].abs() for w, m in zip(original, layers, strict=True)]
    )
    seen = recording.seen[0]
    assert seen.dim() == 1
    assert seen.numel() == survivors.numel()
    assert torch.equal(seen, survivors)


def test_global_order_of_criteria_matters():
    def masks(criteria: list[PruningCriterion]) -> list[torch.Tensor]:
        model = make_mlp()
        GlobalPruningContext(model, criteria).prune()
        return [m.weight_mask.clone() for m in linears(model)]

    forward = masks([MagnitudeCriterion(min_threshold=0.05), MagnitudeCriterion(amount=0.5)])
    backward = masks([MagnitudeCriterion(amount=0.5), MagnitudeCriterion(min_threshold=0.05)])
    model = make_mlp()
    total = sum(m.weight.numel() for m in linears(model))
    below = sum(int((m.weight.abs() < 0.05).sum()) for m in linears(model))
    assert 0 < below < total // 2
    assert sum(int((m == 0).sum()) for m in forward) == below + round(0.5 * (total - below))
    assert sum(int((m == 0).sum()) for m in backward) == round(0.5 * total)


# --------------------------------------------------------------------------- layer keys


def test_layer_modules_as_keys_seed_readme():
    torch.manual_seed(0)
    model = SeedModel()
    w1 = model.conv1.weight.detach().clone()
    w2 = model.conv2.weight.detach().clone()
    ctx = LayerPruningContext(
        {
            model.conv1: [MagnitudeCriterion(min_threshold=0.1), RandomCriterion(prune_ratio=0.2)],
            model.conv2: [PercentileCriterion(0.2, 0.9)],
        }
    )
    # Without model=, modules are named by their type.
    assert labels(ctx) == ["Conv2d.weight", "Conv2d.weight"]
    ctx.prune()
    small = w1.abs() < 0.1
    assert bool((model.conv1.weight_mask[small] == 0).all())
    remaining = int((~small).sum())
    assert n_pruned(model.conv1) == int(small.sum()) + round(0.2 * remaining)
    n = w2.numel()
    assert n_pruned(model.conv2) == round(0.2 * n) + round(0.1 * n)
    kept = w2.abs()[model.conv2.weight_mask == 1]
    dropped = w2.abs()[model.conv2.weight_mask == 0]
    assert kept.numel() == n - n_pruned(model.conv2)
    assert bool((dropped < kept.min()).sum() == round(0.2 * n))
    assert bool((dropped > kept.max()).sum() == round(0.1 * n))
    assert not prune.is_pruned(model.fc1)


def test_layer_qualified_names_with_model():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)))
    model.add_module("head", nn.Linear(4, 2))
    ctx = LayerPruningContext(
        {"features.0": MagnitudeCriterion(amount=10), "head": [MagnitudeCriterion(amount=3)]},
        model=model,
    )
    assert labels(ctx) == ["features.0.weight", "head.weight"]
    assert ctx.targets[0].module is model.features[0]
    ctx.prune()
    assert n_pruned(model.features[0]) == 10
    assert n_pruned(model.head) == 3
    assert not prune.is_pruned(model.features[2])


def test_layer_module_keys_get_qualified_names_when_model_given():
    model = make_mlp()
    ctx = LayerPruningContext({model[2]: MagnitudeCriterion(amount=1)}, model=model)
    assert labels(ctx) == ["2.weight"]


@pytest.mark.parametrize("by_name", [False, True], ids=["module", "name"])
def test_layer_tensor_pairs(by_name: bool):
    model = make_mlp()
    key0 = ("0", "bias") if by_name else (model[0], "bias")
    ctx = LayerPruningContext(
        {key0: MagnitudeCriterion(amount=7), (model[2], "weight"): MagnitudeCriterion(amount=5)},
        model=model,
    )
    assert labels(ctx) == ["0.bias", "2.weight"]
    ctx.prune()
    assert is_pruned_tensor(model[0], "bias")
    assert not is_pruned_tensor(model[0], "weight")
    assert n_pruned(model[0], "bias") == 7
    assert n_pruned(model[2]) == 5


def test_layer_tensor_name_default_bias():
    model = make_mlp()
    ctx = LayerPruningContext({model[4]: MagnitudeCriterion(amount=1)}, tensor_name="bias")
    assert labels(ctx) == ["Linear.bias"]
    ctx.prune()
    assert n_pruned(model[4], "bias") == 1
    assert "weight" in model[4]._parameters


def test_layer_single_criterion_equals_list_of_one():
    a, b = make_mlp(), make_mlp()
    LayerPruningContext({a[0]: MagnitudeCriterion(amount=0.3)}).prune()
    LayerPruningContext({b[0]: [MagnitudeCriterion(amount=0.3)]}).prune()
    assert torch.equal(a[0].weight_mask, b[0].weight_mask)
    assert n_pruned(a[0]) == round(0.3 * a[0].weight.numel())


def test_layer_criteria_apply_in_order_on_what_remains():
    model = make_mlp()
    weight = model[0].weight.detach().clone()
    recording = Recording()
    LayerPruningContext(
        {model[0]: [MagnitudeCriterion(amount=0.5), RandomCriterion(0.5, seed=0), recording]}
    ).prune()
    n = weight.numel()
    k1 = round(0.5 * n)
    assert n_pruned(model[0]) == k1 + round(0.5 * (n - k1))
    (seen,) = recording.seen
    assert torch.equal(seen, weight[model[0].weight_mask == 1].abs())


# --------------------------------------------------------------------------- structured


def test_structured_criterion_in_layer_context_prunes_whole_rows():
    torch.manual_seed(0)
    model = SeedModel()
    weight = model.conv2.weight.detach().clone()
    LayerPruningContext({model.conv2: ChannelL2Criterion(amount=8)}).prune()
    mask = model.conv2.weight_mask
    rows = mask.reshape(32, -1)
    dead = (rows == 0).all(dim=1)
    alive = (rows == 1).all(dim=1)
    assert bool((dead | alive).all())  # whole channels only
    assert int(dead.sum()) == 8
    norms = weight.reshape(32, -1).norm(dim=1)
    assert set(torch.nonzero(dead).flatten().tolist()) == set(torch.argsort(norms)[:8].tolist())
    assert bool((model.conv2.weight[dead] == 0).all())
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10)


def test_structured_criterion_sees_only_surviving_channels():
    model = make_mlp()
    weight = model[0].weight.detach().clone()  # 30 x 20
    LayerPruningContext({model[0]: [ChannelL2Criterion(5), ChannelL2Criterion(5)]}).prune()
    dead = (model[0].weight_mask == 0).all(dim=1)
    assert int(dead.sum()) == 10
    assert int((model[0].weight_mask == 0).sum()) == 10 * 20
    norms = weight.norm(dim=1)
    assert set(torch.nonzero(dead).flatten().tolist()) == set(torch.argsort(norms)[:10].tolist())


def test_structured_after_unstructured_in_layer_context():
    model = make_mlp()
    LayerPruningContext(
        {model[2]: [MagnitudeCriterion(amount=0.5), ChannelL2Criterion(amount=3)]}
    ).prune()
    mask = model[2].weight_mask
    dead_rows = (mask == 0).all(dim=1)
    assert int(dead_rows.sum()) >= 3
    assert int((mask == 0).sum()) >= round(0.5 * mask.numel()) + 3


@pytest.mark.parametrize("as_list", [False, True])
def test_structured_criterion_refused_by_global_context(as_list: bool):
    model = make_mlp()
    crit = ChannelL2Criterion(amount=2)
    criteria = [MagnitudeCriterion(amount=0.1), crit] if as_list else crit
    before = model_state(model)
    with pytest.raises(PruningTypeError, match=re.escape("ChannelL2Criterion(amount=2)")) as info:
        GlobalPruningContext(model, criteria)
    assert isinstance(info.value, TypeError)
    assert "structured" in str(info.value)
    assert model_state(model) == before


# ------------------------------------------------------------------ torch reparametrization


def check_reparametrized(module: nn.Module, name: str = "weight") -> None:
    assert isinstance(module._parameters[name + "_orig"], nn.Parameter)
    assert name not in module._parameters
    assert name + "_mask" in module._buffers
    assert not isinstance(getattr(module, name), nn.Parameter)
    hooks = [
        h
        for h in module._forward_pre_hooks.values()
        if isinstance(h, prune.BasePruningMethod) and h._tensor_name == name
    ]
    assert len(hooks) == 1
    orig = getattr(module, name + "_orig")
    mask = getattr(module, name + "_mask")
    assert torch.equal(getattr(module, name), orig * mask)
    assert prune.is_pruned(module)


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_torch_reparametrization_after_context(kind: str):
    model = make_mlp()
    originals = [m.weight for m in linears(model)]
    CONTEXTS[kind](model, MagnitudeCriterion(amount=0.5)).prune()
    assert prune.is_pruned(model)
    for module, original in zip(linears(model), originals, strict=True):
        check_reparametrized(module)
        assert module.weight_orig is original  # the same Parameter object
        assert "bias" in module._parameters
    assert sorted(model.state_dict()) == sorted(
        f"{i}.{k}" for i in ("0", "2", "4") for k in ("bias", "weight_orig", "weight_mask")
    )
    x = torch.randn(3, 20)
    assert copy.deepcopy(model)(x).shape == (3, 3)


@pytest.mark.parametrize(
    "sequence",
    [("global", "global"), ("layer", "layer"), ("global", "layer"), ("layer", "global", "layer")],
    ids=lambda s: "-".join(s),
)
def test_pruning_again_on_top(sequence: tuple[str, ...]):
    model = make_mlp()
    layers = linears(model)
    remaining = {id(m): m.weight.numel() for m in layers}
    total = sum(remaining.values())
    for step, kind in enumerate(sequence, start=1):
        CONTEXTS[kind](model, MagnitudeCriterion(amount=0.5)).prune()
        if kind == "layer":
            for m in layers:
                remaining[id(m)] -= round(0.5 * remaining[id(m)])
            for m in layers:
                assert m.weight.numel() - n_pruned(m) == remaining[id(m)]
        else:
            now = sum(remaining.values())
            after = now - round(0.5 * now)
            assert total - sum(n_pruned(m) for m in layers) == after
            for m in layers:
                remaining[id(m)] = m.weight.numel() - n_pruned(m)
        for m in layers:
            check_reparametrized(m)
            (hook,) = m._forward_pre_hooks.values()
            if step == 1:
                assert not isinstance(hook, prune.PruningContainer)
            else:
                assert isinstance(hook, prune.PruningContainer)
                assert len(hook._pruning_methods) == step
    # Pruned entries stay pruned and torch can still remove the reparametrization.
    for m in layers:
        expected = m.weight_orig.detach() * m.weight_mask
        prune.remove(m, "weight")
        assert torch.equal(m.weight.detach(), expected)


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_pruning_again_leaves_earlier_mask_tensors_alone(kind: str):
    # torch writes a new ``weight_mask`` buffer on every prune (BasePruningMethod.apply
    # clones the old mask first); tensors taken from the model before, e.g. a saved
    # state_dict, must keep their values.
    model = make_mlp()
    LayerPruningContext(
        {name: MagnitudeCriterion(amount=0.2) for name in "024"}, model=model
    ).prune()
    saved = model.state_dict()
    old_masks = {name: saved[f"{name}.weight_mask"].clone() for name in "024"}
    old_buffers = {name: model[int(name)].weight_mask for name in "024"}
    CONTEXTS[kind](model, MagnitudeCriterion(amount=0.5)).prune()
    for name in "024":
        assert model[int(name)].weight_mask is not old_buffers[name]
        assert n_pruned(model[int(name)]) > int((old_masks[name] == 0).sum())
        assert torch.equal(saved[f"{name}.weight_mask"], old_masks[name]), name
        assert torch.equal(old_buffers[name], old_masks[name]), name


def test_prune_on_top_of_torch_pruning():
    model = make_mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.25)
    first = model[0].weight_mask.clone()
    LayerPruningContext({model[0]: MagnitudeCriterion(amount=0.5)}).prune()
    assert bool((model[0].weight_mask[first == 0] == 0).all())
    n = first.numel()
    k1 = round(0.25 * n)
    assert n_pruned(model[0]) == k1 + round(0.5 * (n - k1))
    check_reparametrized(model[0])


# --------------------------------------------------------------------------- custom scores


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_custom_importance_scores_are_honoured(kind: str):
    model = make_mlp()
    layers = linears(model)
    weights = [m.weight.detach().clone() for m in layers]
    CONTEXTS[kind](model, NegMagnitude(amount=0.25)).prune()
    if kind == "layer":
        for w, m in zip(weights, layers, strict=True):
            k = round(0.25 * w.numel())
            assert n_pruned(m) == k
            assert w.abs()[m.weight_mask == 0].min() > w.abs()[m.weight_mask == 1].max()
    else:
        total = sum(w.numel() for w in weights)
        assert sum(n_pruned(m) for m in layers) == round(0.25 * total)
        dropped = torch.cat(
            [w.abs()[m.weight_mask == 0] for w, m in zip(weights, layers, strict=True)]
        )
        kept = torch.cat(
            [w.abs()[m.weight_mask == 1] for w, m in zip(weights, layers, strict=True)]
        )
        assert dropped.min() > kept.max()  # the largest weights went


def test_custom_scores_only_for_some_tensors_in_global_context():
    class OnlyFirst(MagnitudeCriterion):
        name = "test-only-first"

        def importance_scores(self, module, name):
            if module is model[0]:
                return torch.full_like(getattr(module, name), -1.0)  # least important
            return None

    model = make_mlp()
    n0 = model[0].weight.numel()
    GlobalPruningContext(model, OnlyFirst(amount=n0)).prune()
    assert n_pruned(model[0]) == n0
    assert n_pruned(model[2]) == 0
    assert n_pruned(model[4]) == 0


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda w: torch.ones(w.numel()), InvalidArgumentError, r"returned shape \(600,\)"),
        (lambda w: torch.ones(3, 3), InvalidArgumentError, r"expected \(30, 20\)"),
        (
            lambda w: torch.where(torch.arange(w.numel()).view_as(w) < 2, torch.nan, w.abs()),
            NonFiniteWeightsError,
            r"0\.weight has 2 NaN and 0 infinite importance scores",
        ),
        (
            lambda w: torch.where(torch.arange(w.numel()).view_as(w) == 5, torch.inf, 1.0),
            NonFiniteWeightsError,
            r"has 0 NaN and 1 infinite",
        ),
        (lambda w: w.abs().tolist(), InvalidTypeError, "returned list"),
    ],
    ids=["flat", "small", "nan", "inf", "list"],
)
def test_bad_importance_scores(kind: str, make: Any, error: type[Exception], match: str):
    model = make_mlp()
    before = model_state(model)
    crit = ScoresOf(make)
    with pytest.raises(error, match=match) as info:
        CONTEXTS[kind](model, crit).prune()
    assert "ScoresOf(amount=0.5)" in str(info.value)
    assert model_state(model) == before
    assert not prune.is_pruned(model)


# --------------------------------------------------------------------------- bad input


def _bad_global(kind: str) -> Any:
    model = make_mlp()
    crit = MagnitudeCriterion(amount=0.5)
    stray = nn.Linear(3, 3)
    cases = {
        "missing-tensor": lambda: GlobalPruningContext(
            model, crit, parameters=[(model[1], "weight")]
        ),
        "no-bias": lambda: GlobalPruningContext(
            nn.Sequential(nn.Linear(2, 2, bias=False)),
            crit,
            parameters=[(model[0], "bias")],
        ),
        "buffer": lambda: GlobalPruningContext(
            nn.Sequential(nn.BatchNorm1d(3)),
            crit,
            module_types=[nn.BatchNorm1d],
            tensor_name="running_mean",
        ),
        "twice": lambda: GlobalPruningContext(
            model,
            crit,
            parameters=[(model[0], "weight"), (model[2], "weight"), (model[0], "weight")],
        ),
        "empty-parameters": lambda: GlobalPruningContext(model, crit, parameters=[]),
        "include-nothing": lambda: GlobalPruningContext(model, crit, include="features.*"),
        "exclude-all": lambda: GlobalPruningContext(model, crit, exclude="*"),
        "class": lambda: GlobalPruningContext(model, MagnitudeCriterion),
        "class-in-list": lambda: GlobalPruningContext(model, [crit, RandomCriterion]),
        "not-criterion": lambda: GlobalPruningContext(model, [crit, 0.5]),
        "string": lambda: GlobalPruningContext(model, "magnitude"),
        "empty-criteria": lambda: GlobalPruningContext(model, []),
        "parameters-and-include": lambda: GlobalPruningContext(
            model, crit, parameters=[(model[0], "weight")], include="0"
        ),
        "parameters-and-types": lambda: GlobalPruningContext(
            model, crit, parameters=[(model[0], "weight")], module_types=[nn.Linear]
        ),
        "stray-module": lambda: GlobalPruningContext(
            model, crit, parameters=[(model[0], "weight"), (stray, "weight")]
        ),
        "not-a-pair": lambda: GlobalPruningContext(model, crit, parameters=[model[0]]),
        "not-a-model": lambda: GlobalPruningContext("model", crit),
        "bad-type": lambda: GlobalPruningContext(model, crit, module_types=[nn.Linear, 42]),
        "bad-pattern": lambda: GlobalPruningContext(model, crit, include=["0", 2]),
    }
    return cases[kind]


GLOBAL_BAD = [
    ("missing-tensor", TargetError, r"module '1' \(ReLU\) has no parameter 'weight'.*none"),
    ("no-bias", TargetError, r"is not a submodule of the model"),
    ("buffer", TargetError, r"no parameter 'running_mean'.*weight, bias"),
    ("twice", TargetError, r"0\.weight is listed twice"),
    ("empty-parameters", TargetError, r"parameters= is empty"),
    ("include-nothing", TargetError, r"no tensor to prune.*include=\['features\.\*'\]"),
    ("exclude-all", TargetError, r"no tensor to prune.*exclude=\['\*'\]"),
    ("class", InvalidTypeError, r"got the class MagnitudeCriterion; pass an instance"),
    ("class-in-list", InvalidTypeError, r"got the class RandomCriterion"),
    ("not-criterion", InvalidTypeError, r"0\.5 is not a PruningCriterion"),
    ("string", InvalidTypeError, r"got 'magnitude'"),
    ("empty-criteria", InvalidArgumentError, r"no criteria given for GlobalPruningContext"),
    ("parameters-and-include", TargetError, r"either parameters=.*not both"),
    ("parameters-and-types", TargetError, r"either parameters=.*not both"),
    ("stray-module", TargetError, r"Linear\(in_features=3.*is not a submodule of the model"),
    ("not-a-pair", InvalidTypeError, r"expects \(module, tensor_name\) pairs, got Linear"),
    ("not-a-model", InvalidTypeError, r"model must be an nn\.Module, got 'model'"),
    (
        "bad-type",
        InvalidTypeError,
        r"module_types= expects nn\.Module subclasses or class names.*42",
    ),
    ("bad-pattern", InvalidTypeError, r"include= expects glob strings, got 2"),
]


@pytest.mark.parametrize(("kind", "error", "match"), GLOBAL_BAD, ids=[c[0] for c in GLOBAL_BAD])
def test_global_bad_input(kind: str, error: type[Exception], match: str):
    build = _bad_global(kind)
    with pytest.raises(error, match=match) as info:
        build()
    assert type(info.value) is error
    assert isinstance(info.value, PrunefwError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"module_types": nn.Linear}, "module_types"),
        ({"include": 5}, "include"),
        ({"exclude": 3}, "exclude"),
        ({"tensor_name": 5}, "tensor_name|5"),
    ],
    ids=["types-not-a-sequence", "include-int", "exclude-int", "tensor-name-int"],
)
def test_global_wrongly_typed_selection_arguments(kwargs: dict[str, Any], match: str):
    # The documented contract: "InvalidTypeError: Arguments of the wrong type".
    model = make_mlp()
    with pytest.raises(InvalidTypeError, match=match):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), **kwargs)


def _bad_layer(kind: str) -> Any:
    model = make_mlp()
    crit = MagnitudeCriterion(amount=0.5)
    cases = {
        "missing-tensor": lambda: LayerPruningContext({model[1]: crit}),
        "missing-named-tensor": lambda: LayerPruningContext({(model[0], "scale"): crit}),
        "module-and-name": lambda: LayerPruningContext({model[2]: crit, "2": crit}, model=model),
        "module-and-pair": lambda: LayerPruningContext(
            {model[2]: crit, (model[2], "weight"): crit}
        ),
        "name-and-pair": lambda: LayerPruningContext(
            {("4", "bias"): crit, (model[4], "bias"): crit}, model=model
        ),
        "empty": lambda: LayerPruningContext({}),
        "no-such-name": lambda: LayerPruningContext({"3.": crit}, model=model),
        "typo": lambda: LayerPruningContext({"features.O": crit}, model=features_model()),
        "name-without-model": lambda: LayerPruningContext({"0": crit}),
        "class": lambda: LayerPruningContext({model[0]: MagnitudeCriterion}),
        "not-criterion": lambda: LayerPruningContext({model[0]: [crit, "random"]}),
        "empty-criteria": lambda: LayerPruningContext({model[0]: []}, model=model),
        "not-a-mapping": lambda: LayerPruningContext([(model[0], crit)]),
        "bad-key": lambda: LayerPruningContext({3: crit}),
        "stray-module": lambda: LayerPruningContext({nn.Linear(3, 3): crit}, model=model),
        "bad-model": lambda: LayerPruningContext({model[0]: crit}, model="model"),
        "tensor-name-int": lambda: LayerPruningContext({model[0]: crit}, tensor_name=5),
        "pair-name-int": lambda: LayerPruningContext({(model[0], 0): crit}),
    }
    return cases[kind]


def features_model() -> nn.Module:
    model = nn.Module()
    model.features = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    return model


LAYER_BAD = [
    ("missing-tensor", TargetError, r"module 'ReLU' \(ReLU\) has no parameter 'weight'"),
    ("missing-named-tensor", TargetError, r"has no parameter 'scale'.*weight, bias"),
    ("module-and-name", TargetError, r"2\.weight is listed twice"),
    ("module-and-pair", TargetError, r"Linear\.weight is listed twice"),
    ("name-and-pair", TargetError, r"4\.bias is listed twice"),
    ("empty", InvalidArgumentError, r"got no layers"),
    ("no-such-name", TargetError, r"no submodule '3\.'"),
    ("typo", TargetError, r"no submodule 'features\.O'; did you mean .*'features\.0'"),
    ("name-without-model", TargetError, r"module name '0' needs a model.*model="),
    ("class", InvalidTypeError, r"got the class MagnitudeCriterion; pass an instance"),
    ("not-criterion", InvalidTypeError, r"'random' is not a PruningCriterion"),
    ("empty-criteria", InvalidArgumentError, r"no criteria given for 0\.weight"),
    ("not-a-mapping", InvalidTypeError, r"expects a mapping.*got list"),
    ("bad-key", InvalidTypeError, r"expected an nn\.Module to prune, got 3"),
    ("stray-module", TargetError, r"Linear\(in_features=3.*is not a submodule of the model"),
    ("bad-model", InvalidTypeError, r"model must be an nn\.Module or None, got 'model'"),
    ("tensor-name-int", InvalidTypeError, r"expected a tensor name \(str\), got 5"),
    ("pair-name-int", InvalidTypeError, r"expected a tensor name \(str\), got 0"),
]


@pytest.mark.parametrize(("kind", "error", "match"), LAYER_BAD, ids=[c[0] for c in LAYER_BAD])
def test_layer_bad_input(kind: str, error: type[Exception], match: str):
    build = _bad_layer(kind)
    with pytest.raises(error, match=match) as info:
        build()
    assert type(info.value) is error


def test_bad_input_does_not_touch_the_model():
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(TargetError):
        LayerPruningContext(
            {model[0]: MagnitudeCriterion(amount=0.5), "0": MagnitudeCriterion(amount=0.5)},
            model=model,
        )
    with pytest.raises(TargetError):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), include="nothing")
    assert model_state(model) == before


def test_target_errors_are_value_errors():
    assert issubclass(TargetError, ValueError)
    assert issubclass(InvalidTypeError, TypeError)
    assert issubclass(PruningTypeError, TypeError)
    assert issubclass(NonFiniteWeightsError, ValueError)


def test_pruned_tensor_is_a_valid_target():
    model = make_mlp()
    LayerPruningContext({model[0]: MagnitudeCriterion(amount=0.5)}).prune()
    ctx = LayerPruningContext({(model[0], "weight"): MagnitudeCriterion(amount=0.5)})
    assert labels(ctx) == ["Linear.weight"]
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
    assert labels(ctx) == ["0.weight", "2.weight", "4.weight"]


# --------------------------------------------------------------------------- non-finite weights


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_non_finite_weights_refused_model_untouched(kind: str):
    model = make_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
        model[2].weight[1, 1] = float("nan")
        model[2].weight[2, 2] = float("-inf")
    before = model_state(model)
    with pytest.raises(
        NonFiniteWeightsError, match=r"2\.weight has 2 NaN and 1 infinite weights"
    ) as info:
        CONTEXTS[kind](model, MagnitudeCriterion(amount=0.5)).prune()
    assert isinstance(info.value, ValueError)
    assert "nan_to_num" in str(info.value)
    assert model_state(model) == before
    assert not prune.is_pruned(model)


def test_non_finite_weights_in_an_already_pruned_tensor():
    model = make_mlp()
    LayerPruningContext({model[0]: MagnitudeCriterion(amount=0.5)}, model=model).prune()
    position = (model[0].weight_mask == 0).nonzero()[0].tolist()
    with torch.no_grad():
        model[0].weight_orig[tuple(position)] = float("inf")
    model(torch.randn(1, 20))  # the hook recomputes weight: inf * 0 = nan
    before = model_state(model)
    with pytest.raises(NonFiniteWeightsError, match=r"0\.weight has 1 NaN and 0 infinite"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    assert model_state(model) == before


def test_non_finite_weights_outside_the_targets_are_ignored():
    model = make_mlp()
    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
    LayerPruningContext({"0": MagnitudeCriterion(amount=0.5)}, model=model).prune()
    assert n_pruned(model[0]) == 300
    assert not prune.is_pruned(model[4])


# --------------------------------------------------------------------------- make_permanent


def test_make_permanent_only_touches_own_targets():
    model = make_mlp()
    a = LayerPruningContext({"0": MagnitudeCriterion(amount=0.5)}, model=model)
    b = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), include=["2", "4"])
    c = LayerPruningContext({(model[2], "bias"): MagnitudeCriterion(amount=3)})
    for ctx in (a, b, c):
        ctx.prune()
    orig0 = model[0].weight_orig
    mask0 = model[0].weight_mask.clone()
    x = torch.randn(5, 20)
    out = model(x)

    b.make_permanent()
    assert is_pruned_tensor(model[0], "weight")
    assert is_pruned_tensor(model[2], "bias")  # c's target, same module as b's
    for m in (model[2], model[4]):
        assert not is_pruned_tensor(m, "weight")
        assert isinstance(m._parameters["weight"], nn.Parameter)
    assert torch.equal(model(x), out)
    assert copy.deepcopy(model)(x).shape == out.shape

    a.make_permanent()
    assert model[0].weight is orig0  # the same Parameter object
    assert bool((model[0].weight[mask0 == 0] == 0).all())
    assert not prune.is_pruned(model[0])
    assert prune.is_pruned(model)  # c still there
    a.make_permanent()  # already permanent: skipped
    c.make_permanent()
    assert not prune.is_pruned(model)
    assert torch.equal(model(x), out)
    assert sorted(model.state_dict()) == sorted(
        f"{i}.{k}" for i in ("0", "2", "4") for k in ("weight", "bias")
    )
    assert "__deepcopy__" not in vars(model[0])
    copy.deepcopy(model)


# --- the weights as they are now ------------------------------------------------------------


@pytest.mark.parametrize("context", ["global", "streaming", "layer"])
def test_pruning_after_an_optimizer_step_scores_the_current_weights(context):
    """Between an optimizer step and the next forward pass, ``weight`` is stale.

    torch's forward pre-hook recomputes ``weight = weight_orig * weight_mask`` only at
    the next forward pass; a prune in between (a gradual pruner stepping after
    ``optimizer.step()``) must rank the weights the optimizer just wrote.
    """
    layer = nn.Linear(8, 8)

    def build(amount: float):
        criterion = MagnitudeCriterion(amount=amount)
        if context == "layer":
            return LayerPruningContext({layer: criterion})
        strategy = "streaming" if context == "streaming" else "global_unstructured"
        return GlobalPruningContext(layer, criterion, strategy=strategy)

    build(0.25).prune()
    stale = layer.weight.detach().clone()
    with torch.no_grad():  # what an optimizer step does: write weight_orig in place
        layer.weight_orig.copy_(torch.arange(64.0).flip(0).reshape(8, 8) + 1)
    build(0.5).prune()
    current = layer.weight_orig.detach()
    survivors = current[layer.weight_mask != 0]
    assert int((layer.weight_mask == 0).sum()) == 16 + 24
    # the 24 newly pruned are the smallest *current* weights among the 48 unpruned
    newly = current[(layer.weight_mask == 0) & (stale != 0)]
    assert len(newly) == 24
    assert newly.abs().max() < survivors.abs().min()
    assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)


def test_global_module_types_by_name_match_like_classes():
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1), nn.LazyLinear(2))
    by_name = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), module_types=["Linear"])
    by_class = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), module_types=[nn.Linear])
    assert [t.label for t in by_name.targets] == [t.label for t in by_class.targets]
    assert [t.label for t in by_name.targets] == ["0.weight", "2.weight"]
    qualified = GlobalPruningContext(
        model, MagnitudeCriterion(amount=0.5), module_types=["torch.nn.modules.conv.Conv1d"]
    )
    assert [t.label for t in qualified.targets] == ["1.weight"]


def test_global_module_type_names_import_nothing(monkeypatch):
    import builtins

    def no_import(name, *args, **kwargs):
        raise AssertionError(f"resolving a module type name imported {name!r}")

    model = nn.Sequential(nn.Linear(4, 4))
    monkeypatch.setattr(builtins, "__import__", no_import)
    with pytest.raises(TargetError, match=r"no module of type \(evilmod\.Block\)"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), module_types=["evilmod.Block"])
