"""make_permanent, deepcopy and pickling of pruned models, and the mask reference leak."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
from conftest import SeedModel, make_mlp, model_state
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    RandomCriterion,
    make_permanent,
)
from prunefw.errors import InvalidTypeError

LAYERS = ("0", "2", "4")

# --------------------------------------------------------------------------- helpers


def prune_global(model: nn.Sequential) -> None:
    GlobalPruningContext(model, [MagnitudeCriterion(amount=0.6)]).prune()


def prune_global_two_criteria(model: nn.Sequential) -> None:
    GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.3), RandomCriterion(0.5, seed=1)]
    ).prune()


def prune_layer(model: nn.Sequential) -> None:
    LayerPruningContext(
        {
            "0": [MagnitudeCriterion(amount=0.5), RandomCriterion(0.25, seed=0)],
            "2": MagnitudeCriterion(amount=17),
            "4": RandomCriterion(0.4, seed=3),
        },
        model=model,
    ).prune()


PRUNERS: dict[str, Callable[[nn.Sequential], None]] = {
    "global": prune_global,
    "global-two-criteria": prune_global_two_criteria,
    "layer": prune_layer,
}


@pytest.fixture(params=sorted(PRUNERS))
def pruner(request: pytest.FixtureRequest) -> Callable[[nn.Sequential], None]:
    return PRUNERS[request.param]


def pruned_mlp(pruner: Callable[[nn.Sequential], None], seed: int = 0) -> nn.Sequential:
    model = make_mlp(seed)
    pruner(model)
    return model


def pruning_hooks(model: nn.Module) -> list[prune.BasePruningMethod]:
    return [
        hook
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]


def custom_from_mask_methods(module: nn.Module) -> list[prune.CustomFromMask]:
    """Every CustomFromMask held by ``module``'s pruning hooks (also inside containers)."""
    methods: list[prune.CustomFromMask] = []
    for hook in module._forward_pre_hooks.values():
        inner = list(hook) if isinstance(hook, prune.PruningContainer) else [hook]
        methods.extend(m for m in inner if isinstance(m, prune.CustomFromMask))
    return methods


def inputs(seed: int = 123) -> torch.Tensor:
    return torch.randn(5, 20, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- make_permanent


def test_make_permanent_keeps_parameter_objects_and_zeros(
    pruner: Callable[[nn.Sequential], None],
) -> None:
    model = make_mlp()
    ids_before_pruning = {name: id(p) for name, p in model.named_parameters()}
    pruner(model)
    assert prune.is_pruned(model)
    x = inputs()
    expected_out = model(x).detach()
    orig_ids = {i: id(model[int(i)].weight_orig) for i in LAYERS}
    masks = {i: model[int(i)].weight_mask.clone() for i in LAYERS}
    effective = {
        i: (model[int(i)].weight_orig * model[int(i)].weight_mask).detach() for i in LAYERS
    }
    for i in LAYERS:
        assert orig_ids[i] == ids_before_pruning[f"{i}.weight"]
        assert int((masks[i] == 0).sum()) > 0

    result = make_permanent(model)

    assert result is model
    assert not prune.is_pruned(model)
    assert pruning_hooks(model) == []
    keys = list(model.state_dict())
    assert not [k for k in keys if k.endswith(("_orig", "_mask"))]
    assert sorted(keys) == sorted(ids_before_pruning)
    for i in LAYERS:
        layer = model[int(i)]
        weight = layer._parameters["weight"]
        assert isinstance(weight, nn.Parameter)
        assert id(weight) == orig_ids[i] == ids_before_pruning[f"{i}.weight"]
        assert layer.weight is weight
        assert not hasattr(layer, "weight_orig")
        assert not hasattr(layer, "weight_mask")
        assert "__deepcopy__" not in vars(layer)
        assert torch.equal(weight.detach(), effective[i])
        assert bool((weight[masks[i] == 0] == 0).all())
        # Zeros only where the mask was 0 (the random weights have no exact zeros).
        assert torch.equal(weight.detach() == 0, masks[i] == 0)
    assert {name: id(p) for name, p in model.named_parameters()} == ids_before_pruning
    assert torch.equal(model(x), expected_out)
    # A plain model again: deepcopy works without prunefw's help.
    assert torch.equal(copy.deepcopy(model)(x), expected_out)


def test_optimizer_created_before_make_permanent_still_updates(
    pruner: Callable[[nn.Sequential], None],
) -> None:
    model = pruned_mlp(pruner)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    make_permanent(model)
    assert {id(p) for p in model.parameters()} == held

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad()
    model(inputs()).pow(2).sum().backward()
    optimizer.step()
    for i in LAYERS:
        name = f"{i}.weight"
        param = model[int(i)].weight
        assert param.grad is not None
        assert not torch.equal(param.detach(), before[name]), name
        # The step ran on exactly this object: it moved by -lr * grad.
        assert torch.allclose(param.detach(), before[name] - 0.1 * param.grad)


def test_make_permanent_optimizer_created_before_pruning() -> None:
    model = make_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    prune_global(model)
    make_permanent(model)
    weight = model[0].weight
    before = weight.detach().clone()
    model(inputs()).sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), before)


def test_make_permanent_is_idempotent_on_unpruned_model() -> None:
    model = make_mlp()
    before = model_state(model)
    assert make_permanent(model) is model
    assert model_state(model) == before
    prune_global(model)
    make_permanent(model)
    after_first = model_state(model)
    assert make_permanent(model) is model
    assert model_state(model) == after_first


def test_make_permanent_handles_tensors_pruned_by_torch() -> None:
    model = make_mlp()
    prune.global_unstructured(
        [(model[0], "weight"), (model[2], "weight")], prune.L1Unstructured, amount=0.5
    )
    prune.l1_unstructured(model[0], "weight", amount=0.2)  # a PruningContainer now
    prune.random_unstructured(model[4], "bias", amount=1)
    prune.ln_structured(model[4], "weight", amount=1, n=2, dim=0)
    (hook,) = model[0]._forward_pre_hooks.values()
    assert isinstance(hook, prune.PruningContainer)
    param_ids = {id(model[0].weight_orig), id(model[4].bias_orig), id(model[4].weight_orig)}
    x = inputs()
    expected = model(x).detach()
    zeros = {
        (0, "weight"): model[0].weight_mask == 0,
        (4, "bias"): model[4].bias_mask == 0,
        (4, "weight"): model[4].weight_mask == 0,
    }

    assert make_permanent(model) is model

    assert not prune.is_pruned(model)
    assert pruning_hooks(model) == []
    assert not [k for k in model.state_dict() if k.endswith(("_orig", "_mask"))]
    assert {id(model[0].weight), id(model[4].bias), id(model[4].weight)} == param_ids
    for (index, name), was_pruned in zeros.items():
        assert torch.equal(getattr(model[index], name).detach() == 0, was_pruned)
    assert torch.equal(model(x), expected)


@pytest.mark.parametrize("value", ["model", None, 3, {"weight": torch.ones(2)}, [nn.Linear(2, 2)]])
def test_make_permanent_refuses_non_modules(value: object) -> None:
    with pytest.raises(InvalidTypeError, match=r"nn\.Module"):
        make_permanent(value)  # type: ignore[arg-type]
    assert issubclass(InvalidTypeError, TypeError)


# --------------------------------------------------------------------------- deepcopy


def test_torch_alone_cannot_deepcopy_a_pruned_model() -> None:
    """Why prunefw installs ``__deepcopy__``: plain torch pruning breaks deepcopy."""
    model = make_mlp()
    prune.global_unstructured(
        [(model[0], "weight"), (model[2], "weight")], prune.L1Unstructured, amount=0.5
    )
    with pytest.raises(RuntimeError, match="Only Tensors created explicitly by the user"):
        copy.deepcopy(model)


@pytest.mark.parametrize("forward_first", [False, True])
def test_deepcopy_of_prunefw_pruned_model(
    pruner: Callable[[nn.Sequential], None], forward_first: bool
) -> None:
    model = pruned_mlp(pruner)
    x = inputs()
    if forward_first:
        model(x)
    state = model_state(model)

    clone = copy.deepcopy(model)

    assert model_state(model) == state  # the original is untouched by copying
    assert prune.is_pruned(clone)
    assert torch.equal(clone(x), model(x))
    for i in LAYERS:
        ours, theirs = model[int(i)], clone[int(i)]
        assert theirs.weight_orig is not ours.weight_orig
        assert isinstance(theirs.weight_orig, nn.Parameter)
        assert theirs.weight_mask is not ours.weight_mask
        assert theirs.weight is not ours.weight
        assert torch.equal(theirs.weight_orig, ours.weight_orig)
        assert torch.equal(theirs.weight_mask, ours.weight_mask)
        assert torch.equal(theirs.weight, ours.weight)
        our_hooks = [id(h) for h in ours._forward_pre_hooks.values()]
        their_hooks = list(theirs._forward_pre_hooks.values())
        assert len(their_hooks) == len(our_hooks) == 1
        assert not {id(h) for h in their_hooks} & set(our_hooks)
        assert isinstance(their_hooks[0], prune.BasePruningMethod)
        # The copy's hooks refer to the copy's own mask, not the original's.
        for method in custom_from_mask_methods(theirs):
            assert method.mask is theirs.weight_mask

    # Independence: changing the copy's weight_orig does not touch the original.
    expected = model(x).detach()
    original_orig = model[0].weight_orig.detach().clone()
    with torch.no_grad():
        clone[0].weight_orig.add_(1.0)
        clone[2].weight_mask.zero_()
    assert torch.equal(model[0].weight_orig, original_orig)
    assert torch.equal(model(x), expected)
    assert not torch.equal(clone(x), expected)


def test_deepcopy_weight_has_autograd_history_to_the_copy(
    pruner: Callable[[nn.Sequential], None],
) -> None:
    model = pruned_mlp(pruner)
    clone = copy.deepcopy(model)
    layer = clone[0]
    assert layer.weight.grad_fn is not None
    assert layer.weight.requires_grad
    grads = torch.autograd.grad(
        layer.weight.sum(), [layer.weight_orig, model[0].weight_orig], allow_unused=True
    )
    assert torch.equal(grads[0], layer.weight_mask)
    assert grads[1] is None

    clone(inputs()).sum().backward()
    for i in LAYERS:
        theirs, ours = clone[int(i)], model[int(i)]
        assert theirs.weight_orig.grad is not None
        assert bool((theirs.weight_orig.grad[theirs.weight_mask == 0] == 0).all())
        assert ours.weight_orig.grad is None
        assert ours.bias.grad is None


def test_deepcopy_can_be_pruned_again_copied_again_and_made_permanent(
    pruner: Callable[[nn.Sequential], None],
) -> None:
    model = pruned_mlp(pruner)
    x = inputs()
    original_out = model(x).detach()
    original_state = model_state(model)

    clone = copy.deepcopy(model)
    zeros_before = sum(int((clone[int(i)].weight_mask == 0).sum()) for i in LAYERS)
    GlobalPruningContext(clone, [MagnitudeCriterion(amount=0.5)]).prune()
    zeros_after = sum(int((clone[int(i)].weight_mask == 0).sum()) for i in LAYERS)
    assert zeros_after > zeros_before
    for i in LAYERS:
        # Earlier pruning stays: the new mask is within the old one.
        assert bool((clone[int(i)].weight_mask <= model[int(i)].weight_mask).all())

    second = copy.deepcopy(clone)
    assert torch.equal(second(x), clone(x))
    assert second[0].weight_orig is not clone[0].weight_orig

    clone_out = clone(x).detach()
    clone_ids = {i: id(clone[int(i)].weight_orig) for i in LAYERS}
    assert make_permanent(clone) is clone
    assert not prune.is_pruned(clone)
    assert {i: id(clone[int(i)].weight) for i in LAYERS} == clone_ids
    assert torch.equal(clone(x), clone_out)
    assert prune.is_pruned(second)
    assert torch.equal(second(x), clone_out)

    assert model_state(model) == original_state
    assert prune.is_pruned(model)
    assert torch.equal(model(x), original_out)


def test_deepcopy_of_a_single_pruned_submodule() -> None:
    model = pruned_mlp(prune_global)
    layer = copy.deepcopy(model[2])
    assert torch.equal(layer.weight, model[2].weight)
    assert layer.weight_orig is not model[2].weight_orig
    x = torch.randn(3, 30)
    assert torch.equal(layer(x), model[2](x))


# --------------------------------------------------------------------------- pickling


def test_pickle_roundtrip_of_pruned_model(pruner: Callable[[nn.Sequential], None]) -> None:
    model = pruned_mlp(pruner)
    x = inputs()
    expected = model(x)
    loaded = pickle.loads(pickle.dumps(model))
    assert prune.is_pruned(loaded)
    assert torch.equal(loaded(x), expected)
    for i in LAYERS:
        assert torch.equal(loaded[int(i)].weight_mask, model[int(i)].weight_mask)
    # The unpickled model still deep-copies.
    assert torch.equal(copy.deepcopy(loaded)(x), expected)


def test_torch_save_roundtrip_of_pruned_model(pruner: Callable[[nn.Sequential], None]) -> None:
    model = pruned_mlp(pruner)
    x = inputs()
    model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert prune.is_pruned(loaded)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(make_permanent(loaded)(x), model(x))


# --------------------------------------------------------------------------- mask reference leak


def storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_raw_global_unstructured_hooks_share_one_concatenated_mask() -> None:
    """pytorch/pytorch#34257: torch's hooks keep views into one concatenated mask."""
    torch.manual_seed(0)
    model = SeedModel()
    modules = [model.conv1, model.conv2, model.fc1]
    prune.global_unstructured([(m, "weight") for m in modules], prune.L1Unstructured, amount=0.5)
    total = sum(m.weight_mask.numel() for m in modules) * 4
    methods = [method for m in modules for method in custom_from_mask_methods(m)]
    assert len(methods) == 3
    assert len({storage_key(method.mask) for method in methods}) == 1
    for m, method in zip(modules, methods, strict=True):
        assert method.mask is not m.weight_mask
        assert method.mask._base is not None  # a view
        assert method.mask.untyped_storage().nbytes() == total
        assert method.mask.untyped_storage().nbytes() > m.weight_mask.untyped_storage().nbytes()


def check_no_mask_leak(modules: list[nn.Module]) -> None:
    storages: dict[int, int] = {}
    for m in modules:
        methods = custom_from_mask_methods(m)
        assert methods, m
        own = m.weight_mask.untyped_storage().nbytes()
        assert own == m.weight_mask.numel() * m.weight_mask.element_size()
        for method in methods:
            assert method.mask is m.weight_mask
            assert method.mask.untyped_storage().nbytes() == own
            storages[storage_key(method.mask)] = method.mask.untyped_storage().nbytes()
    # What the hooks keep alive is exactly the per-module masks, nothing bigger.
    assert sum(storages.values()) == sum(
        m.weight_mask.numel() * m.weight_mask.element_size() for m in modules
    )


@pytest.mark.parametrize(
    "criteria",
    [
        [MagnitudeCriterion(amount=0.5)],
        [MagnitudeCriterion(min_threshold=0.02), RandomCriterion(0.3, seed=0)],
    ],
    ids=["one-criterion", "two-criteria"],
)
def test_global_context_releases_the_concatenated_mask(criteria: list) -> None:
    torch.manual_seed(0)
    model = SeedModel()
    GlobalPruningContext(model, criteria).prune()
    check_no_mask_leak([model.conv1, model.conv2, model.fc1])


def test_layer_context_and_deepcopy_keep_masks_unshared() -> None:
    model = pruned_mlp(prune_layer)
    modules = [model[int(i)] for i in LAYERS]
    check_no_mask_leak(modules)
    clone = copy.deepcopy(model)
    check_no_mask_leak([clone[int(i)] for i in LAYERS])
