"""load_pruned_state_dict: rebuilding torch's pruning before loading a pruned state_dict."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import make_mlp, model_state
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    RandomCriterion,
    load_pruned_state_dict,
    make_permanent,
)
from prunefw.errors import CheckpointError, InvalidTypeError
from prunefw.reparametrization import pruned_tensor_names

LAYERS = (0, 2, 4)

# --------------------------------------------------------------------------- helpers


def prune_global(model: nn.Sequential) -> None:
    GlobalPruningContext(model, [MagnitudeCriterion(amount=0.6)]).prune()


def prune_partial(model: nn.Sequential) -> None:
    """Only layers 0 and 4: layer 2 stays unpruned."""
    GlobalPruningContext(
        model,
        [MagnitudeCriterion(amount=0.5)],
        parameters=[(model[0], "weight"), (model[4], "weight")],
    ).prune()


def prune_layer(model: nn.Sequential) -> None:
    LayerPruningContext(
        {"0": MagnitudeCriterion(amount=0.3), "4": RandomCriterion(0.5, seed=0)}, model=model
    ).prune()


def prune_multi(model: nn.Sequential) -> None:
    """Several criteria per tensor: torch's PruningContainer hooks, also on a bias."""
    LayerPruningContext(
        {
            "0": [MagnitudeCriterion(amount=0.3), RandomCriterion(0.25, seed=0)],
            "2": [PercentileCriterion(0.1, 0.9), MagnitudeCriterion(amount=5)],
            ("4", "bias"): [RandomCriterion(0.34, seed=1), MagnitudeCriterion(amount=1)],
        },
        model=model,
    ).prune()
    assert isinstance(next(iter(model[0]._forward_pre_hooks.values())), prune.PruningContainer)


PRUNERS: dict[str, Callable[[nn.Sequential], None]] = {
    "global": prune_global,
    "partial": prune_partial,
    "layer": prune_layer,
    "multi-criteria": prune_multi,
}


@pytest.fixture(params=sorted(PRUNERS))
def pruned(request: pytest.FixtureRequest) -> nn.Sequential:
    model = make_mlp(0)
    PRUNERS[request.param](model)
    # Train a little after pruning so weight_orig differs from any fresh init.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    return model


def inputs(seed: int = 7) -> torch.Tensor:
    return torch.randn(6, 20, generator=torch.Generator().manual_seed(seed))


def pruned_pairs(model: nn.Module) -> set[tuple[str, str]]:
    return {(qual, name) for qual, m in model.named_modules() for name in pruned_tensor_names(m)}


def check_same_pruning(fresh: nn.Module, saved: nn.Module) -> None:
    """Same pruned tensors, equal masks and origs, current ``name`` attributes, equal forward."""
    assert pruned_pairs(fresh) == pruned_pairs(saved)
    modules = dict(fresh.named_modules())
    saved_modules = dict(saved.named_modules())
    for qual, name in pruned_pairs(saved):
        ours, theirs = modules[qual], saved_modules[qual]
        assert torch.equal(getattr(ours, name + "_mask"), getattr(theirs, name + "_mask"))
        assert torch.equal(getattr(ours, name + "_orig"), getattr(theirs, name + "_orig"))
        assert isinstance(getattr(ours, name + "_orig"), nn.Parameter)
        current = getattr(ours, name + "_orig") * getattr(ours, name + "_mask")
        assert torch.equal(getattr(ours, name), current)
        assert torch.equal(
            getattr(ours, name), getattr(theirs, name + "_orig") * getattr(theirs, name + "_mask")
        )
    for key, value in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    x = inputs()
    assert torch.equal(fresh(x), saved(x))


# --------------------------------------------------------------------------- loading


def test_torch_alone_refuses_a_pruned_state_dict() -> None:
    saved = make_mlp(0)
    prune_global(saved)
    fresh = make_mlp(1)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*0\.weight") as info:
        fresh.load_state_dict(saved.state_dict())
    assert "Unexpected key(s)" in str(info.value)
    assert "0.weight_orig" in str(info.value)


def test_load_pruned_state_dict(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    result = load_pruned_state_dict(fresh, pruned.state_dict())
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    assert prune.is_pruned(fresh)
    # ``weight`` is current right after loading, before any forward pass.
    check_same_pruning(fresh, pruned)
    assert sorted(fresh.state_dict()) == sorted(pruned.state_dict())


def test_loaded_weight_has_autograd_history(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, pruned.state_dict())
    for qual, name in pruned_pairs(fresh):
        module = dict(fresh.named_modules())[qual]
        orig = getattr(module, name + "_orig")
        (grad,) = torch.autograd.grad(getattr(module, name).sum(), [orig])
        assert torch.equal(grad, getattr(module, name + "_mask"))


def test_partial_checkpoint_leaves_unpruned_layers_unpruned() -> None:
    saved = make_mlp(0)
    prune_partial(saved)
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, saved.state_dict())
    assert pruned_tensor_names(fresh[2]) == []
    assert "2.weight" in fresh.state_dict()
    assert pruned_pairs(fresh) == {("0", "weight"), ("4", "weight")}
    assert torch.equal(fresh[2].weight, saved[2].weight)
    check_same_pruning(fresh, saved)


def test_load_through_torch_save_weights_only(pruned: nn.Sequential) -> None:
    buffer = io.BytesIO()
    torch.save(pruned.state_dict(), buffer)
    buffer.seek(0)
    state_dict = torch.load(buffer, weights_only=True)
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, state_dict)
    check_same_pruning(fresh, pruned)


def test_loaded_model_can_be_pruned_further_and_made_permanent(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, pruned.state_dict())
    old_masks = {
        (q, n): getattr(dict(fresh.named_modules())[q], n + "_mask").clone()
        for q, n in pruned_pairs(fresh)
    }
    GlobalPruningContext(fresh, [MagnitudeCriterion(amount=0.25)]).prune()
    modules = dict(fresh.named_modules())
    for (qual, name), old in old_masks.items():
        new = getattr(modules[qual], name + "_mask")
        assert bool((new <= old).all()), (qual, name)
    assert pruned_pairs(fresh) >= {(str(i), "weight") for i in LAYERS}

    x = inputs()
    expected = fresh(x).detach()
    effective = {
        (q, n): (getattr(modules[q], n + "_orig") * getattr(modules[q], n + "_mask")).detach()
        for q, n in pruned_pairs(fresh)
    }
    ids = {(q, n): id(getattr(modules[q], n + "_orig")) for q, n in pruned_pairs(fresh)}
    assert make_permanent(fresh) is fresh
    assert not prune.is_pruned(fresh)
    assert not [k for k in fresh.state_dict() if k.endswith(("_orig", "_mask"))]
    for (qual, name), value in effective.items():
        assert id(getattr(modules[qual], name)) == ids[(qual, name)]
        assert torch.equal(getattr(modules[qual], name).detach(), value)
    assert torch.equal(fresh(x), expected)


def test_load_into_a_model_already_pruned_the_same_way(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    pairs = pruned_pairs(pruned)
    modules = dict(fresh.named_modules())
    # Prune the same tensors, with different masks.
    for qual, name in pairs:
        prune.random_unstructured(modules[qual], name, amount=0.9)
    hooks_before = {q: list(m._forward_pre_hooks.values()) for q, m in fresh.named_modules()}
    result = load_pruned_state_dict(fresh, pruned.state_dict())
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    # The existing pruning is reused, not stacked.
    assert {
        q: list(m._forward_pre_hooks.values()) for q, m in fresh.named_modules()
    } == hooks_before
    check_same_pruning(fresh, pruned)


def test_load_the_same_checkpoint_twice(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, pruned.state_dict())
    load_pruned_state_dict(fresh, pruned.state_dict())
    assert all(len(m._forward_pre_hooks) <= 1 for m in fresh.modules())
    check_same_pruning(fresh, pruned)


def test_unpruned_checkpoint_still_loads() -> None:
    saved = make_mlp(0)
    fresh = make_mlp(1)
    result = load_pruned_state_dict(fresh, saved.state_dict())
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    assert not prune.is_pruned(fresh)
    assert sorted(fresh.state_dict()) == sorted(saved.state_dict())
    x = inputs()
    assert torch.equal(fresh(x), saved(x))


def test_root_module_checkpoint() -> None:
    torch.manual_seed(0)
    saved = nn.Linear(20, 4)
    prune.l1_unstructured(saved, "weight", amount=0.5)
    torch.manual_seed(1)
    fresh = nn.Linear(20, 4)
    load_pruned_state_dict(fresh, saved.state_dict())
    check_same_pruning(fresh, saved)


def test_strict_false_with_an_extra_key(pruned: nn.Sequential) -> None:
    state_dict = dict(pruned.state_dict())
    state_dict["9.weight"] = torch.ones(3)
    fresh = make_mlp(1)
    result = load_pruned_state_dict(fresh, state_dict, strict=False)
    assert result.unexpected_keys == ["9.weight"]
    assert result.missing_keys == []
    check_same_pruning(fresh, pruned)


def test_strict_false_with_a_missing_key(pruned: nn.Sequential) -> None:
    state_dict = dict(pruned.state_dict())
    del state_dict["2.bias"]
    fresh = make_mlp(1)
    bias = fresh[2].bias.detach().clone()
    result = load_pruned_state_dict(fresh, state_dict, strict=False)
    assert result.missing_keys == ["2.bias"]
    assert torch.equal(fresh[2].bias, bias)
    assert pruned_pairs(fresh) == pruned_pairs(pruned)


def test_deepcopy_and_pickle_of_loaded_model(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, pruned.state_dict())
    x = inputs()
    clone = copy.deepcopy(fresh)
    assert torch.equal(clone(x), pruned(x))
    for q, n in pruned_pairs(fresh):
        assert getattr(dict(clone.named_modules())[q], n + "_orig") is not getattr(
            dict(fresh.named_modules())[q], n + "_orig"
        )
    assert torch.equal(pickle.loads(pickle.dumps(fresh))(x), pruned(x))
    assert torch.equal(copy.deepcopy(clone)(x), pruned(x))


def test_hooks_of_loaded_model_refer_to_the_mask_buffers(pruned: nn.Sequential) -> None:
    fresh = make_mlp(1)
    load_pruned_state_dict(fresh, pruned.state_dict())
    modules = dict(fresh.named_modules())
    for qual, name in pruned_pairs(fresh):
        module = modules[qual]
        for hook in module._forward_pre_hooks.values():
            methods = list(hook) if isinstance(hook, prune.PruningContainer) else [hook]
            for method in methods:
                assert isinstance(method, prune.CustomFromMask)
                assert method.mask is getattr(module, name + "_mask")


def test_type_errors() -> None:
    with pytest.raises(InvalidTypeError, match=r"nn\.Module"):
        load_pruned_state_dict("model", {})  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="mapping"):
        load_pruned_state_dict(make_mlp(), [("0.weight", torch.ones(1))])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors


def saved_state_dict() -> dict[str, Any]:
    saved = make_mlp(0)
    prune_global(saved)
    return dict(saved.state_dict())


def smaller_mlp() -> nn.Sequential:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))


def rename(sd: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {(new if k == old else k): v for k, v in sd.items()}


def _missing_module() -> tuple[nn.Module, dict[str, Any]]:
    return smaller_mlp(), saved_state_dict()


def _missing_parameter() -> tuple[nn.Module, dict[str, Any]]:
    sd = rename(
        rename(saved_state_dict(), "2.weight_orig", "2.kernel_orig"),
        "2.weight_mask",
        "2.kernel_mask",
    )
    return make_mlp(1), sd


def _mask_shape() -> tuple[nn.Module, dict[str, Any]]:
    sd = saved_state_dict()
    sd["2.weight_mask"] = sd["2.weight_mask"][:, :7]
    return make_mlp(1), sd


def _orig_shape() -> tuple[nn.Module, dict[str, Any]]:
    sd = saved_state_dict()
    sd["2.weight_orig"] = sd["2.weight_orig"][:5]
    return make_mlp(1), sd


def _other_shape() -> tuple[nn.Module, dict[str, Any]]:
    sd = saved_state_dict()
    sd["4.bias"] = torch.zeros(4)
    return make_mlp(1), sd


def _strict_missing() -> tuple[nn.Module, dict[str, Any]]:
    sd = saved_state_dict()
    del sd["2.bias"]
    return make_mlp(1), sd


def _strict_unexpected() -> tuple[nn.Module, dict[str, Any]]:
    sd = saved_state_dict()
    sd["extra"] = torch.zeros(1)
    return make_mlp(1), sd


def _missing_into_pruned() -> tuple[nn.Module, dict[str, Any]]:
    model = make_mlp(1)
    prune_layer(model)
    sd = saved_state_dict()
    del sd["4.weight_orig"]
    return model, sd


ERRORS: dict[str, tuple[Callable[[], tuple[nn.Module, dict[str, Any]]], tuple[str, ...]]] = {
    "mask-for-missing-module": (_missing_module, ("'4.weight_mask'", "'4'")),
    "mask-for-missing-parameter": (_missing_parameter, ("'2.kernel_mask'", "'kernel'")),
    "mask-shape-mismatch": (_mask_shape, ("'2.weight_mask'", "(10, 7)", "(10, 30)")),
    "orig-shape-mismatch": (_orig_shape, ("2.weight_orig", "(5, 30)")),
    "other-shape-mismatch": (_other_shape, ("4.bias", "(4,)", "(3,)")),
    "strict-missing-key": (_strict_missing, ("missing", "2.bias")),
    "strict-unexpected-key": (_strict_unexpected, ("unexpected", "extra")),
    "missing-key-into-pruned-model": (_missing_into_pruned, ("missing", "4.weight_orig")),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_the_key_and_leave_the_model_untouched(case: str) -> None:
    make, fragments = ERRORS[case]
    model, state_dict = make()
    x = inputs()
    out = model(x).detach()
    before = model_state(model)
    with pytest.raises(CheckpointError) as info:
        load_pruned_state_dict(model, state_dict)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert model_state(model) == before
    assert torch.equal(model(x), out)


def test_non_tensor_value_leaves_the_model_untouched() -> None:
    """The docstring promises: on error ``model`` is left untouched.

    A value that is not a tensor passes prunefw's checks, so torch's
    ``load_state_dict`` copies every other entry in place before it reports it.
    """
    state_dict = saved_state_dict()
    state_dict["4.bias"] = "not a tensor"
    model = make_mlp(1)
    before = model_state(model)
    with pytest.raises(CheckpointError, match=r"4\.bias"):
        load_pruned_state_dict(model, state_dict)
    assert model_state(model) == before
