"""Regression tests for the faults and bad inputs of the hostile pass (issue 12).

Each test failed before its fix: a raw torch/Python error, a silently accepted bad
value, or a model changed by a failing call.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunefw import (
    GlobalPruningContext,
    GradualPruner,
    LayerPruningContext,
    MagnitudeCriterion,
    PruningCriterion,
    RandomCriterion,
    load_pruned_state_dict,
)
from prunefw.errors import (
    CheckpointError,
    InvalidArgumentError,
    InvalidMaskError,
    PrunefwError,
    TargetError,
)
from prunefw.testing import ModelSnapshot

STRATEGIES = ["global_unstructured", "streaming"]


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))


class Vandal(PruningCriterion):
    """Writes zeros into everything it is handed, then raises."""

    name = "vandal"

    def compute_mask(self, scores, default_mask):
        default_mask.zero_()
        scores.zero_()
        raise RuntimeError("vandal")


# 1. A criterion that mutates its inputs and raises leaves the masks as they were.
@pytest.mark.parametrize("context", ["layer", "global"])
@pytest.mark.parametrize("earlier_amount", [0.0, 0.25])
def test_criterion_writing_into_its_inputs_then_raising_changes_nothing(context, earlier_amount):
    model = mlp()
    GlobalPruningContext(model, MagnitudeCriterion(amount=earlier_amount)).prune()
    before = ModelSnapshot.take(model)
    if context == "layer":
        ctx = LayerPruningContext({model[0]: Vandal(), model[2]: Vandal()}, model=model)
    else:
        ctx = GlobalPruningContext(model, Vandal())
    with pytest.raises(RuntimeError, match="vandal"):
        ctx.prune()
    assert before.diff(ModelSnapshot.take(model)) == []


# 2. Bad masks: values, device, requires_grad; from checkpoints and on the model.
@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan")])
def test_load_pruned_state_dict_refuses_masks_that_are_not_0_or_1(bad):
    model = mlp()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    state = model.state_dict()
    state["0.weight_mask"] = state["0.weight_mask"].clone()
    state["0.weight_mask"][0, 0] = bad
    fresh = mlp()
    before = ModelSnapshot.take(fresh)
    with pytest.raises(CheckpointError, match=r"'0\.weight_mask' is not a usable pruning mask"):
        load_pruned_state_dict(fresh, state)
    assert before.diff(ModelSnapshot.take(fresh)) == []


def test_load_pruned_state_dict_refuses_a_meta_mask_and_detaches_one_requiring_grad():
    import copy

    model = mlp()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    state = model.state_dict()
    meta = dict(state, **{"0.weight_mask": torch.ones(8, 8, device="meta")})
    with pytest.raises(CheckpointError, match="meta device"):
        load_pruned_state_dict(mlp(), meta)
    grad = dict(state, **{"0.weight_mask": state["0.weight_mask"].clone().requires_grad_()})
    fresh = mlp()
    load_pruned_state_dict(fresh, grad)
    assert not fresh[0].weight_mask.requires_grad
    copy.deepcopy(fresh)  # a non-leaf mask used to break deepcopy


@pytest.mark.parametrize("context", ["layer", "global"])
def test_a_mask_on_another_device_is_refused_before_anything_changes(context):
    model = mlp()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    model[0].weight_mask = torch.ones(8, 8, device="meta")
    before = ModelSnapshot.take(model)
    if context == "layer":
        ctx = LayerPruningContext({model[0]: MagnitudeCriterion(amount=0.5)}, model=model)
    else:
        ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
    with pytest.raises(InvalidMaskError, match=r"0\.weight has a mask on the meta device"):
        ctx.prune()
    assert before.diff(ModelSnapshot.take(model)) == []


def test_a_mask_with_bad_values_on_the_model_is_refused():
    model = mlp()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    model[2].weight_mask = torch.full((4, 8), 0.5)
    with pytest.raises(InvalidMaskError, match=r"2\.weight has a mask containing 0\.5"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()


# 3. Numbers too large for torch or for a float.
@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_random_seed_out_of_range_is_a_clear_error(seed):
    with pytest.raises(InvalidArgumentError, match=r"RandomCriterion\(seed=.*a seed must be in"):
        RandomCriterion(0.5, seed=seed)


def test_random_seed_range_edges_work():
    for seed in (-(2**63), 2**64 - 1):
        RandomCriterion(0.5, seed=seed)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MagnitudeCriterion(min_threshold=10**400),
        lambda: RandomCriterion(prune_ratio=10**400),
        lambda: GradualPruner(factory(mlp()), final_sparsity=10**400, end_step=10),
    ],
    ids=["threshold", "ratio", "schedule"],
)
def test_numbers_too_large_are_prunefw_errors(build):
    with pytest.raises(PrunefwError):
        build()


def test_huge_threshold_message_is_short():
    with pytest.raises(InvalidArgumentError, match=r"<an int of 401 digits>.*too large") as info:
        MagnitudeCriterion(min_threshold=10**400)
    assert len(str(info.value)) < 200


# 4. Meta-device models.
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_meta_device_model_is_a_clear_error(strategy):
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(TargetError, match=r"0\.weight is on the meta device"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy=strategy).prune()
    with pytest.raises(TargetError, match="meta device"):
        LayerPruningContext({model[0]: MagnitudeCriterion(amount=0.5)}).prune()


# 5. A transposed (non-contiguous) weight in the default global strategy.
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_contiguous_weight_prunes_like_a_contiguous_one(strategy):
    model, reference = mlp(), mlp()
    model[0].weight = nn.Parameter(model[0].weight.detach().t().contiguous().t())
    assert not model[0].weight.is_contiguous()
    for m in (model, reference):
        GlobalPruningContext(m, MagnitudeCriterion(amount=0.5), strategy=strategy).prune()
    assert torch.equal(model[0].weight_mask, reference[0].weight_mask)
    assert torch.equal(model[0].weight, reference[0].weight)


def test_non_contiguous_weight_layout_is_restored_when_the_prune_fails():
    model = mlp()
    weight = nn.Parameter(model[0].weight.detach().t().contiguous().t())
    model[0].weight = weight
    strides = weight.stride()
    with pytest.raises(RuntimeError, match="vandal"):
        GlobalPruningContext(model, Vandal()).prune()
    assert model[0].weight is weight and weight.stride() == strides


# 6. The same submodule registered under two names.
def test_module_registered_under_two_names_is_found_and_listed_once():
    layer = nn.Linear(3, 3)
    model = nn.Module()
    model.a = layer
    model.b = layer
    LayerPruningContext({"b": MagnitudeCriterion(amount=0.5)}, model=model).prune()
    assert int((layer.weight_mask == 0).sum()) == 4
    with pytest.raises(TargetError, match="'b' is another name of module 'a'"):
        LayerPruningContext(
            {"a": MagnitudeCriterion(amount=0.5), "b": MagnitudeCriterion(amount=0.5)},
            model=model,
        )


# 13. Resuming a gradual pruner anywhere lands the target.
def factory(model):
    return lambda amount: GlobalPruningContext(model, MagnitudeCriterion(amount=amount))


def test_resume_past_end_step_catches_up_with_the_final_sparsity():
    model = mlp()
    pruner = GradualPruner(factory(model), final_sparsity=0.5, end_step=10)
    state = dict(pruner.state_dict(), step_count=25)
    pruner.load_state_dict(state)
    assert pruner.sparsity() == 0
    assert pruner.step() is True
    assert pruner.sparsity() == pytest.approx(0.5, abs=0.01)
    assert pruner.step() is False


def test_resume_between_events_lands_the_next_event_target():
    model = mlp()
    pruner = GradualPruner(factory(model), final_sparsity=0.5, end_step=10, frequency=5)
    pruner.load_state_dict(dict(pruner.state_dict(), step_count=3))
    assert [pruner.step() for _ in range(3)] == [False, False, True]  # 5 is the event
    assert pruner.sparsity() == pytest.approx(pruner.sparsity_at(5), abs=0.01)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"step_count": 3}, "with 'step_count' and 'config'"),
        ({"step_count": 3, "config": "x"}, "'config' must be the settings mapping"),
        ("x", "expected the mapping state_dict"),
    ],
)
def test_load_state_dict_refuses_malformed_states(state, match):
    pruner = GradualPruner(factory(mlp()), final_sparsity=0.5, end_step=10)
    with pytest.raises(InvalidArgumentError, match=match):
        pruner.load_state_dict(state)


# 9. A recipe is data: resolving its module types never imports code.
def test_recipe_module_types_are_never_imported(tmp_path, monkeypatch):
    import subprocess
    import sys

    (tmp_path / "evilmod.py").write_text("print('EVIL RAN')\n")
    (tmp_path / "r.toml").write_text(
        '[global]\ncriteria = [{ name = "magnitude", amount = 0.5 }]\n'
        'module_types = ["evilmod.Block", "this.Zen", "Linear"]\n'
    )
    code = (
        "import sys\n"
        "from torch import nn\n"
        "from prunefw.recipes import apply_recipe, load_recipe\n"
        "recipe = load_recipe('r.toml')\n"
        "model = nn.Sequential(nn.Linear(4, 4))\n"
        "apply_recipe(model, recipe)\n"
        "print('evilmod' in sys.modules, 'this' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert "EVIL RAN" not in result.stdout
    assert "Zen of Python" not in result.stdout
