"""WandaCriterion(pattern="N:M"): Wanda scores compared within groups of M input features."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import prunefw
from prunefw import LayerPruningContext, MagnitudeCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.recipes import Recipe, apply_recipe
from prunefw.testing import ModelSnapshot
from prunefw_wanda import WandaCriterion

PATTERNS = [(2, 4), (1, 4), (3, 4), (4, 8), (0, 4), (4, 4), (1, 1), (1, 2)]


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def scaled_inputs(in_features: int, batches: int = 3, rows: int = 10, seed: int = 0):
    """Random batches whose features have very different scales (0.01 to 100)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-2, 2, in_features)[torch.randperm(in_features, generator=generator)]
    return [torch.randn(rows, in_features, generator=generator) * scales for _ in range(batches)]


def wanda_scores(weight: torch.Tensor, inputs: list[torch.Tensor]) -> list[list[float]]:
    """|W[i, j]| * ||X_j||_2 in float64, plain Python."""
    tokens = torch.cat([x.reshape(-1, weight.shape[1]) for x in inputs]).double()
    norms = [math.sqrt(sum(v * v for v in column)) for column in tokens.T.tolist()]
    return [[abs(w) * norms[j] for j, w in enumerate(row)] for row in weight.double().tolist()]


def reference_mask(
    scores: list[list[float]], n: int, m: int, alive: torch.Tensor | None = None
) -> torch.Tensor:
    """Per group of m inputs: rank by (survives, score, index), keep the top n survivors."""
    rows = []
    for i, row in enumerate(scores):
        alive_row = [True] * len(row) if alive is None else (alive[i] != 0).tolist()
        keep = []
        for start in range(0, len(row), m):
            group = range(start, start + m)
            ranked = sorted(group, key=lambda j: (alive_row[j], row[j], j))
            kept = set(ranked[m - n :])
            keep.extend(j in kept and alive_row[j] for j in group)
        rows.append(keep)
    return torch.tensor(rows, dtype=torch.bool)


def kept_per_group(mask: torch.Tensor, m: int) -> torch.Tensor:
    return (mask != 0).reshape(mask.shape[0], -1, m).sum(dim=-1)


def prune(layer: nn.Module, inputs: list[torch.Tensor], *criteria: object) -> None:
    LayerPruningContext({layer: list(criteria)}, model=layer).prune(calibration_data=inputs)


# -- the pattern -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), PATTERNS)
def test_every_group_keeps_its_n_best_wanda_scores(n, m):
    """Exactly n kept per group of m inputs, the highest |W| * ||X_j|| (reference)."""
    layer = nn.Linear(4 * m, 12)
    inputs = scaled_inputs(4 * m)
    expected = reference_mask(wanda_scores(layer.weight.detach(), inputs), n, m)
    prune(layer, inputs, WandaCriterion(pattern=f"{n}:{m}"))
    assert (kept_per_group(layer.weight_mask, m) == n).all()
    assert torch.equal(layer.weight_mask.bool(), expected)
    pruned = (layer.weight_mask == 0).float().mean().item()
    assert pruned == pytest.approx((m - n) / m)


def test_groups_are_compared_not_rows():
    """A row's weakest features all in one group: the pattern spreads the pruning."""
    layer = nn.Linear(8, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.ones(4, 8) * torch.tensor([1.0, 2.0, 3.0, 4.0, 50.0, 60.0, 70.0, 80.0])
    per_row, two_four = copy.deepcopy(layer), layer
    prune(per_row, [x], WandaCriterion(0.5))
    prune(two_four, [x], WandaCriterion(pattern="2:4"))
    assert per_row.weight_mask.tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]
    assert two_four.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]]


def test_ties_prune_the_lower_index_first_in_every_group():
    crit = WandaCriterion(pattern="2:4")
    mask = crit.compute_mask(torch.ones(2, 8), torch.ones(2, 8))
    assert mask.tolist() == [[False, False, True, True] * 2] * 2


def test_same_groups_and_ties_as_the_nm_plugin():
    """On the same scores, pattern N:M and NMCriterion(N, M) give the same mask."""
    nm = pytest.importorskip("prunefw_nm")
    for n, m in PATTERNS:
        scores = torch.randint(0, 3, (6, 2 * m)).float()  # many ties
        prior = (torch.rand(6, 2 * m) > 0.3).float()
        for alive in (torch.ones_like(scores), prior):
            assert torch.equal(
                WandaCriterion(pattern=f"{n}:{m}").compute_mask(scores, alive),
                nm.NMCriterion(n, m).compute_mask(scores, alive),
            )


# -- already-pruned entries ----------------------------------------------------------------------


def test_entries_pruned_before_count_first_and_stay_pruned():
    """After unstructured magnitude pruning: groups keep min(n, survivors), nothing revives."""
    layer = nn.Linear(16, 10)
    LayerPruningContext({layer: MagnitudeCriterion(amount=0.4)}).prune()
    prior = layer.weight_mask.clone()
    survivors = kept_per_group(prior, 4)
    assert (survivors < 2).any()  # some groups already have fewer than n survivors
    inputs = scaled_inputs(16)
    expected = reference_mask(wanda_scores(layer.weight.detach(), inputs), 2, 4, alive=prior)
    prune(layer, inputs, WandaCriterion(pattern="2:4"))
    mask = layer.weight_mask
    assert torch.equal(mask.bool(), expected)
    assert torch.equal(kept_per_group(mask, 4), survivors.clamp(max=2))
    assert not bool(((prior == 0) & (mask != 0)).any())


def test_applying_again_changes_nothing():
    layer = nn.Linear(16, 6)
    inputs = scaled_inputs(16)
    prune(layer, inputs, WandaCriterion(pattern="2:4"))
    first = layer.weight_mask.clone()
    prune(layer, inputs, WandaCriterion(pattern="2:4"))
    assert torch.equal(layer.weight_mask, first)


# -- arguments, config, registry, recipes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "sparsity"), [("2:4", 0.5), ("1:4", 0.75), ("3:4", 0.25), ("4:8", 0.5), ("0:3", 1)]
)
def test_sparsity_defaults_to_the_pattern_and_may_be_given_equal(pattern, sparsity):
    implied = WandaCriterion(pattern=pattern)
    assert implied.sparsity == sparsity
    assert WandaCriterion(sparsity, pattern=pattern).config() == implied.config()
    assert WandaCriterion(sparsity=2 / 3, pattern="1:3").sparsity == 2 / 3


def test_sparsity_other_than_the_patterns_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"pattern='2:4'.*sparsity is 2/4 = 0\.5"):
        WandaCriterion(0.3, pattern="2:4")
    with pytest.raises(InvalidArgumentError, match=r"pass sparsity=0\.75"):
        WandaCriterion(0.25, pattern="1:4")


@pytest.mark.parametrize("pattern", ["2-4", "2:4:8", "2:", ":4", "a:b", "", "-1:4", "2.0:4"])
def test_malformed_patterns_are_refused(pattern):
    with pytest.raises(InvalidArgumentError, match=r"pattern must be 'N:M'") as info:
        WandaCriterion(pattern=pattern)
    assert f"pattern={pattern!r}" in str(info.value)


@pytest.mark.parametrize("pattern", ["5:4", "0:0", "1:0"])
def test_patterns_out_of_range_are_refused(pattern):
    with pytest.raises(InvalidArgumentError, match=r"M >= 1 and 0 <= N <= M"):
        WandaCriterion(pattern=pattern)


@pytest.mark.parametrize("pattern", [2, (2, 4), 0.5])
def test_patterns_of_the_wrong_type_are_refused(pattern):
    with pytest.raises(InvalidTypeError, match=r"pattern must be a string 'N:M'"):
        WandaCriterion(pattern=pattern)


def test_without_pattern_sparsity_is_required():
    with pytest.raises(InvalidTypeError, match=r"expected a float in \[0, 1\] \(or give pattern"):
        WandaCriterion()


def test_in_features_not_a_multiple_of_m_is_refused_naming_the_tensor():
    """Linear(6, 3) with 2:4: InvalidArgumentError naming the layer; nothing changes."""
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    before = ModelSnapshot.take(model)
    crit = WandaCriterion(pattern="2:4")
    with pytest.raises(
        InvalidArgumentError, match="6 input features are not a multiple of M=4"
    ) as e:
        LayerPruningContext({"0": crit, "2": crit}, model=model).prune(
            calibration_data=scaled_inputs(8)
        )
    assert "weight of Linear(in_features=6, out_features=3" in str(e.value)
    assert any("2.weight" in note for note in e.value.__notes__)
    assert before.diff(ModelSnapshot.take(model)) == []
    with pytest.raises(InvalidArgumentError, match=r"weight of shape \(3, 6\).*M=4"):
        crit.compute_mask(torch.ones(3, 6), torch.ones(3, 6))


def test_config_repr_and_the_registry_round_trip():
    crit = WandaCriterion(pattern="2:4")
    assert crit.config() == {"sparsity": 0.5, "pattern": "2:4"}
    assert repr(crit) == "WandaCriterion(sparsity=0.5, pattern='2:4')"
    assert (crit.n, crit.m) == (2, 4)
    assert WandaCriterion(**crit.config()).config() == crit.config()
    assert WandaCriterion(pattern=" 4:8 ").config() == {"sparsity": 0.5, "pattern": "4:8"}
    assert WandaCriterion(0.5).config() == {"sparsity": 0.5}  # unchanged without a pattern
    by_name = prunefw.criterion("wanda", sparsity=0.5, pattern="2:4")
    assert type(by_name) is WandaCriterion
    assert by_name.config() == crit.config()
    assert prunefw.criterion("wanda", pattern="1:4").sparsity == 0.75
    copied = copy.deepcopy(crit)
    assert copied.config() == crit.config()


def test_a_recipe_builds_it_from_its_config():
    """A [[layer]] rule with { name = "wanda", pattern = "2:4" } prunes 2:4 Wanda."""
    recipe = Recipe.from_toml(
        """
        [[layer]]
        module_type = "Linear"
        criteria = [{ name = "wanda", pattern = "2:4" }]
        """
    )
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    reference = copy.deepcopy(model)
    inputs = scaled_inputs(16)
    apply_recipe(model, recipe, calibration_data=inputs)
    crit = WandaCriterion(pattern="2:4")
    LayerPruningContext({"0": crit, "2": crit}, model=reference).prune(calibration_data=inputs)
    for layer, expected in ((model[0], reference[0]), (model[2], reference[2])):
        assert (kept_per_group(layer.weight_mask, 4) == 2).all()
        assert torch.equal(layer.weight_mask, expected.weight_mask)
