"""RowMagnitudeCriterion ("row-magnitude"): |w| compared per output row, Wanda's groups."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    RowMagnitudeCriterion,
    make_permanent,
)
from prunefw.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    PruningTypeError,
    RecipeError,
)
from prunefw.recipes import Recipe, apply_recipe, gradual_pruner
from prunefw.selection import smallest_k_per_row
from prunefw.testing import CriterionContract, ModelSnapshot

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# A small set of values gives many ties (the tie rule matters); any floats give few.
TIED = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0])
ANY = st.floats(0.0, 1e6, allow_nan=False, width=32)


class TestRowMagnitudeContract(CriterionContract):
    """prunefw's contract kit: the default Linear model, refused by the global context."""

    criterion_class = RowMagnitudeCriterion

    def make_criterion(self) -> RowMagnitudeCriterion:
        return RowMagnitudeCriterion(0.5)


def reference_keep(scores: torch.Tensor, sparsity: float, alive: torch.Tensor) -> torch.Tensor:
    """The documented rule, row by row in plain Python.

    Rank every row by (survives, score, index) ascending and prune the first
    round(sparsity * in_features): already-pruned entries first, then low scores,
    then, among ties, the lower index. Already-pruned entries stay pruned.
    """
    k = round(sparsity * scores.shape[1])
    rows = []
    for row, alive_row in zip(scores.tolist(), (alive != 0).tolist(), strict=True):
        ranked = sorted(range(len(row)), key=lambda j: (alive_row[j], row[j], j))
        pruned = set(ranked[:k])
        rows.append([j not in pruned and alive_row[j] for j in range(len(row))])
    return torch.tensor(rows, dtype=torch.bool).reshape(scores.shape)


@st.composite
def rows_and_masks(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative scores (out, in), tied or not, and a random prior mask."""
    out_features = draw(st.integers(1, 6))
    in_features = draw(st.integers(1, 12))
    values = draw(st.sampled_from([TIED, ANY, st.one_of(TIED, ANY)]))
    flat = draw(st.lists(values, min_size=out_features * in_features, max_size=out_features * 12))
    scores = torch.tensor(np.array(flat[: out_features * in_features], dtype=np.float32))
    alive = draw(
        st.lists(
            st.sampled_from([1.0, 1.0, 1.0, 0.0]),
            min_size=out_features * in_features,
            max_size=out_features * in_features,
        )
    )
    shape = (out_features, in_features)
    return scores.reshape(shape), torch.tensor(alive).reshape(shape)


@SETTINGS
@given(data=rows_and_masks(), sparsity=st.floats(0.0, 1.0, allow_nan=False))
def test_property_every_row_ends_with_its_share_or_what_was_pruned_before(data, sparsity):
    """Per row: max(round(s * in), pruned before) pruned; nothing revived; the rule exactly."""
    scores, alive = data
    keep = RowMagnitudeCriterion(sparsity).compute_mask(scores, alive)
    assert keep.dtype == torch.bool
    assert keep.shape == scores.shape
    k = round(sparsity * scores.shape[1])
    dead_before = (alive == 0).sum(dim=1)
    assert (~keep).sum(dim=1).tolist() == dead_before.clamp(min=k).tolist()
    assert not bool((keep & (alive == 0)).any())
    assert torch.equal(keep, reference_keep(scores, sparsity, alive))
    # Every survivor that was pruned now scores <= every kept entry of its row.
    newly = (~keep) & (alive != 0)
    low = torch.where(newly, scores, -torch.inf).amax(dim=1)
    high = torch.where(keep, scores, torch.inf).amin(dim=1)
    assert (low <= high).all()


@SETTINGS
@given(data=rows_and_masks(), k_fraction=st.floats(0.0, 1.0))
def test_property_smallest_k_per_row_marks_k_or_every_dead_entry(data, k_fraction):
    """The shared selection: with and without a prior mask."""
    scores, alive = data
    k = round(k_fraction * scores.shape[1])
    fresh = smallest_k_per_row(scores, k)
    assert fresh.sum(dim=1).tolist() == [k] * scores.shape[0]
    marked = smallest_k_per_row(scores, k, alive)
    assert marked.sum(dim=1).tolist() == (alive == 0).sum(dim=1).clamp(min=k).tolist()
    assert bool(marked[alive == 0].all())


def test_smallest_k_per_row_checks_its_arguments():
    with pytest.raises(ValueError, match="2-D"):
        smallest_k_per_row(torch.ones(4), 1)
    with pytest.raises(ValueError, match=r"k=5 must be in \[0, 4\]"):
        smallest_k_per_row(torch.ones(2, 4), 5)
    with pytest.raises(ValueError, match="alive has shape"):
        smallest_k_per_row(torch.ones(2, 4), 1, torch.ones(8))


# -- in a layer context ----------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.7, 1.0])
@pytest.mark.parametrize(("in_features", "out_features"), [(16, 8), (37, 5), (1, 4)])
def test_exact_count_in_every_row(sparsity, in_features, out_features):
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features)
    original = layer.weight.detach().clone()
    LayerPruningContext({layer: RowMagnitudeCriterion(sparsity)}).prune()
    k = round(sparsity * in_features)
    assert (layer.weight_mask == 0).sum(dim=1).tolist() == [k] * out_features
    expected = reference_keep(original.abs(), sparsity, torch.ones_like(original))
    assert torch.equal(layer.weight_mask.bool(), expected)
    assert torch.equal(layer.weight_orig.detach(), original)


def test_rows_are_compared_separately_unlike_magnitude():
    """A row of tiny weights keeps its share; unstructured magnitude empties it."""
    weight = torch.tensor([[1e-4, 2e-4, 3e-4, 4e-4], [1.0, 2.0, 3.0, 4.0]])
    by_row, by_layer = nn.Linear(4, 2), nn.Linear(4, 2)
    for layer in (by_row, by_layer):
        with torch.no_grad():
            layer.weight.copy_(weight)
    LayerPruningContext({by_row: RowMagnitudeCriterion(0.5)}).prune()
    LayerPruningContext({by_layer: MagnitudeCriterion(amount=0.5)}).prune()
    assert by_row.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0]] * 2
    assert by_layer.weight_mask.tolist() == [[0.0] * 4, [1.0] * 4]


def test_magnitudes_not_signed_values_and_ties_lower_index_first():
    layer = nn.Linear(6, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-5.0, 0.1, 3.0, -0.2, 1.0, 1.0], [1.0] * 6]))
    LayerPruningContext({layer: RowMagnitudeCriterion(0.5)}).prune()
    assert layer.weight_mask.tolist() == [
        [1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
    ]


def test_entries_pruned_before_count_towards_the_row():
    """After unstructured magnitude: every row ends with max(k, pruned before)."""
    torch.manual_seed(1)
    layer = nn.Linear(20, 12)
    LayerPruningContext({layer: MagnitudeCriterion(amount=0.35)}).prune()
    prior = layer.weight_mask.clone()
    prior_per_row = (prior == 0).sum(dim=1)
    assert len(set(prior_per_row.tolist())) > 1
    expected = reference_keep(layer.weight_orig.detach().abs(), 0.5, prior)
    LayerPruningContext({layer: RowMagnitudeCriterion(0.5)}).prune()
    assert torch.equal(layer.weight_mask.bool(), expected)
    assert (layer.weight_mask == 0).sum(dim=1).tolist() == prior_per_row.clamp(min=10).tolist()
    assert not bool(((prior == 0) & (layer.weight_mask != 0)).any())


def test_applying_again_changes_nothing_and_sparsity_is_a_target():
    torch.manual_seed(2)
    layer = nn.Linear(20, 6)
    LayerPruningContext({layer: RowMagnitudeCriterion(0.5)}).prune()
    first = layer.weight_mask.clone()
    LayerPruningContext({layer: RowMagnitudeCriterion(0.5)}).prune()
    assert torch.equal(layer.weight_mask, first)
    other = nn.Linear(20, 6)
    LayerPruningContext({other: [RowMagnitudeCriterion(0.3), RowMagnitudeCriterion(0.5)]}).prune()
    assert (other.weight_mask == 0).sum(dim=1).tolist() == [10] * 6


def test_by_registered_name_then_make_permanent():
    assert prunefw.available_criteria()["row-magnitude"] is RowMagnitudeCriterion
    crit = prunefw.criterion("row-magnitude", sparsity=0.25)
    assert type(crit) is RowMagnitudeCriterion
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    LayerPruningContext({"0": crit, "2": crit}, model=model).prune()
    make_permanent(model)
    assert not prune.is_pruned(model)
    assert (model[0].weight == 0).sum(dim=1).tolist() == [4] * 8
    assert (model[2].weight == 0).sum(dim=1).tolist() == [2] * 4


# -- Conv1D (GPT-2): the canonical (out, in) view --------------------------------------------------


def test_conv1d_rows_are_outputs_and_masks_match_the_equivalent_linear():
    """Conv1D weight (in, out): each output (a column) loses its share of inputs."""
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    torch.manual_seed(3)
    conv = pytorch_utils.Conv1D(12, 20)  # nf=12 outputs, nx=20 inputs: weight (20, 12)
    linear = nn.Linear(20, 12)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
    LayerPruningContext({conv: RowMagnitudeCriterion(0.3)}).prune()
    LayerPruningContext({linear: RowMagnitudeCriterion(0.3)}).prune()
    assert conv.weight_mask.shape == (20, 12)
    assert (conv.weight_mask == 0).sum(dim=0).tolist() == [6] * 12
    assert torch.equal(conv.weight_mask.T, linear.weight_mask)


def test_conv1d_with_ties_follows_the_input_index():
    """Equal magnitudes: the lower INPUT index goes first, as for the Linear."""
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    conv = pytorch_utils.Conv1D(3, 4)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    LayerPruningContext({conv: RowMagnitudeCriterion(0.5)}).prune()
    assert conv.weight_mask.tolist() == [[0.0] * 3, [0.0] * 3, [1.0] * 3, [1.0] * 3]


# -- refusals, arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["global_unstructured", "streaming"])
def test_global_context_refuses_it(strategy):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    before = ModelSnapshot.take(model)
    with pytest.raises(PruningTypeError, match="'global'"):
        GlobalPruningContext(model, [RowMagnitudeCriterion(0.5)], strategy=strategy)
    assert before.diff(ModelSnapshot.take(model)) == []


def test_other_modules_are_refused_listing_the_accepted_types():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    before = ModelSnapshot.take(model)
    with pytest.raises(InvalidTypeError, match="got a Conv2d") as info:
        LayerPruningContext({"0": RowMagnitudeCriterion(0.5)}, model=model).prune()
    assert "Accepted: Linear.weight, transformers.pytorch_utils.Conv1D.weight" in str(info.value)
    assert any("0.weight" in note for note in info.value.__notes__)
    assert before.diff(ModelSnapshot.take(model)) == []


def test_a_bias_is_refused():
    layer = nn.Linear(4, 3)
    with pytest.raises(InvalidArgumentError, match="its 'bias' is not its weight"):
        LayerPruningContext({(layer, "bias"): RowMagnitudeCriterion(0.5)}).prune()
    assert not prune.is_pruned(layer)


def test_compute_mask_needs_the_whole_2d_weight():
    crit = RowMagnitudeCriterion(0.5)
    with pytest.raises(InvalidArgumentError, match=r"2-D weight.*shape \(8,\)"):
        crit.compute_mask(torch.rand(8), torch.ones(8))
    with pytest.raises(InvalidArgumentError, match="default_mask has shape"):
        crit.compute_mask(torch.rand(2, 4), torch.ones(8))
    empty = crit.compute_mask(torch.rand(0, 4), torch.ones(0, 4))
    assert empty.shape == (0, 4)
    assert empty.dtype == torch.bool


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_sparsity_outside_zero_one_is_refused(value):
    with pytest.raises(InvalidArgumentError, match=r"RowMagnitudeCriterion\(sparsity="):
        RowMagnitudeCriterion(value)


@pytest.mark.parametrize("value", ["0.5", None, True])
def test_sparsity_of_the_wrong_type_is_refused(value):
    with pytest.raises(InvalidTypeError, match="expected a float"):
        RowMagnitudeCriterion(value)


def test_config_repr_and_class_attributes():
    crit = RowMagnitudeCriterion(1)
    assert crit.sparsity == 1.0
    assert crit.config() == {"sparsity": 1.0}
    assert repr(RowMagnitudeCriterion(0.5)) == "RowMagnitudeCriterion(sparsity=0.5)"
    assert RowMagnitudeCriterion(**RowMagnitudeCriterion(0.3).config()).config() == {
        "sparsity": 0.3
    }
    assert copy.deepcopy(crit).config() == crit.config()
    assert RowMagnitudeCriterion.name == "row-magnitude"
    assert RowMagnitudeCriterion.PRUNING_TYPE == "global"
    assert RowMagnitudeCriterion.PruningMethod.PRUNING_TYPE == "global"
    assert not RowMagnitudeCriterion.supports_streaming()


# -- recipes --------------------------------------------------------------------------------------


def test_a_recipe_layer_rule_builds_it_and_the_global_section_refuses_it():
    recipe = Recipe.from_toml(
        """
        [[layer]]
        module_type = "Linear"
        criteria = [{ name = "row-magnitude", sparsity = 0.5 }]
        """
    )
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    apply_recipe(model, recipe)
    assert (model[0].weight_mask == 0).sum(dim=1).tolist() == [8] * 8
    assert (model[2].weight_mask == 0).sum(dim=1).tolist() == [4] * 4
    with pytest.raises(RecipeError, match="PRUNING_TYPE 'global'"):
        Recipe.from_toml('[global]\ncriteria = [{ name = "row-magnitude", sparsity = 0.5 }]')


def test_a_recipe_schedule_steers_it_by_its_target_sparsity():
    recipe = Recipe.from_toml(
        """
        [[layer]]
        module_type = "Linear"
        criteria = ["row-magnitude"]
        [schedule]
        final_sparsity = 0.75
        end_step = 4
        frequency = 2
        curve = "linear"
        parameter = "sparsity"
        amount_type = "sparsity"
        """
    )
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    pruner = gradual_pruner(model, recipe)
    for expected in (0.0, 0.0, 0.375, 0.375, 0.75):
        pruner.step()
        for layer in (model[0], model[2]):
            per_row = round(expected * layer.in_features)
            if per_row:
                assert (layer.weight_mask == 0).sum(dim=1).tolist() == [per_row] * (
                    layer.out_features
                )
    assert pruner.sparsity() == 0.75
