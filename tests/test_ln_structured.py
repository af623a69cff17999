"""LnStructuredCriterion ("ln-structured"): torch's ln_structured as a prunefw criterion."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import GlobalPruningContext, LayerPruningContext, LnStructuredCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError, PruningTypeError
from prunefw.recipes import Recipe, apply_recipe
from prunefw.testing import CriterionContract


class TestLnStructuredContract(CriterionContract):
    """prunefw's contract kit: structured, so refused by the global context."""

    criterion_class = LnStructuredCriterion

    def make_criterion(self) -> LnStructuredCriterion:
        return LnStructuredCriterion(amount=0.5)


def layer(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(6, 8, 3) if kind == "conv" else nn.Linear(10, 7)


NORMS = [1, 2, 3, 0.5, math.inf, -math.inf, "fro"]


@pytest.mark.parametrize("n", NORMS)
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("amount", [0.3, 2])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_masks_equal_torch_ln_structured_applied_twice(n, dim, amount, kind):
    if kind == "conv" and (n == "fro" or dim == -1):
        pytest.skip("torch's 'fro' needs 2 dims to reduce; a 3-wide kernel dim has 3 channels")
    ours, theirs = layer(kind), layer(kind)
    for _ in range(2):
        prune.ln_structured(theirs, "weight", amount=amount, n=n, dim=dim)
    crits = [LnStructuredCriterion(amount, n, dim), LnStructuredCriterion(amount, n, dim)]
    LayerPruningContext({ours: crits}).prune()
    assert torch.equal(ours.weight_mask, theirs.weight_mask)
    assert torch.equal(ours.weight, theirs.weight)


def test_whole_output_channels_are_pruned_by_default():
    conv = layer("conv")
    LayerPruningContext({conv: LnStructuredCriterion(0.5)}).prune()
    per_channel = conv.weight_mask.reshape(8, -1)
    assert (per_channel.sum(1) == 0).sum() == 4
    assert bool(((per_channel == 0).all(1) | (per_channel == 1).all(1)).all())


def test_ties_prune_the_lower_channel_first():
    crit = LnStructuredCriterion(amount=2)
    scores = torch.ones(4, 3)
    keep = crit.compute_mask(scores, torch.ones(4, 3))
    assert keep[:, 0].tolist() == [False, False, True, True]


def test_entries_pruned_before_stay_pruned_and_dead_channels_are_not_counted():
    lin = layer("linear")
    mask = torch.ones(7, 10)
    mask[0] = 0  # a whole channel pruned before: the container leaves it out
    mask[1, :3] = 0  # part of a channel
    prune.custom_from_mask(lin, "weight", mask)
    LayerPruningContext({lin: LnStructuredCriterion(amount=0.5)}).prune()
    dead = (lin.weight_mask.sum(1) == 0).sum()
    assert int(dead) == 1 + round(0.5 * 6)
    assert bool((lin.weight_mask[1, :3] == 0).all())


def test_registered_by_name_and_config_rebuilds_it():
    crit = prunefw.criterion("ln-structured", amount=0.25, n=1, dim=1)
    assert isinstance(crit, LnStructuredCriterion)
    assert crit.config() == {"amount": 0.25, "n": 1, "dim": 1}
    assert repr(LnStructuredCriterion(**crit.config())) == repr(crit)
    assert "ln-structured" in prunefw.available_criteria()


def test_global_context_refuses_it():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(PruningTypeError):
        GlobalPruningContext(model, LnStructuredCriterion(0.5))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"amount": 1.5}, InvalidArgumentError),
        ({"amount": -1}, InvalidArgumentError),
        ({"amount": "half"}, InvalidTypeError),
        ({"amount": 0.5, "n": "nuc"}, InvalidArgumentError),
        ({"amount": 0.5, "n": "l2"}, InvalidArgumentError),
        ({"amount": 0.5, "n": math.nan}, InvalidArgumentError),
        ({"amount": 0.5, "n": True}, InvalidTypeError),
        ({"amount": 0.5, "dim": 0.0}, InvalidTypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        LnStructuredCriterion(**kwargs)


def test_one_dimensional_tensors_and_bad_dims_are_refused_with_the_model_untouched():
    lin = layer("linear")
    before = copy.deepcopy(lin.state_dict())
    with pytest.raises(InvalidArgumentError, match="at least 2 dimensions"):
        LayerPruningContext({(lin, "bias"): LnStructuredCriterion(0.5)}).prune()
    with pytest.raises(InvalidArgumentError, match="out of range"):
        LayerPruningContext({lin: LnStructuredCriterion(0.5, dim=2)}).prune()
    with pytest.raises(InvalidArgumentError, match="more than"):
        LayerPruningContext({lin: LnStructuredCriterion(8)}).prune()
    assert not prune.is_pruned(lin)
    assert all(torch.equal(v, before[k]) for k, v in lin.state_dict().items())


def test_recipe_layer_rule():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    recipe = Recipe.from_dict(
        {"layer": [{"match": "0", "criteria": [{"name": "ln-structured", "amount": 0.25}]}]}
    )
    apply_recipe(model, recipe)
    assert int((model[0].weight_mask.sum(1) == 0).sum()) == 4


def test_hugging_face_conv1d_is_pruned_along_output_features():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv1d = Conv1D(6, 4)  # weight stored (in_features=4, out_features=6)
    LayerPruningContext({conv1d: LnStructuredCriterion(amount=3)}).prune()
    dead_outputs = (conv1d.weight_mask.sum(0) == 0).sum()
    assert int(dead_outputs) == 3
    assert int((conv1d.weight_mask.sum(1) == 0).sum()) == 0
