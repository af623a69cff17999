"""NMCriterion: the exact N:M pattern, selection, ties, errors, contexts, prior masks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.sparse._semi_structured_conversions import (
    sparse_semi_structured_from_dense_cutlass,
    sparse_semi_structured_to_dense_cutlass,
)

import prunefw
from prunefw import GlobalPruningContext, LayerPruningContext, MagnitudeCriterion, make_permanent
from prunefw.errors import InvalidArgumentError, InvalidTypeError, PruningTypeError
from prunefw_nm import NMCriterion

NM_VALUES = [(1, 4), (2, 4), (2, 8), (4, 8)]
LINEAR_SHAPES = [(8, 1), (16, 3), (24, 5), (64, 32)]  # (in_features, out_features)


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Make every test's random weights reproducible."""
    torch.manual_seed(0)


def kept_per_group(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """Nonzeros in every row-major group of ``m`` along the (flattened) input dimension."""
    return (tensor.detach().reshape(-1, m) != 0).sum(dim=1)


def reference_mask(
    scores: torch.Tensor, n: int, m: int, alive: torch.Tensor | None = None
) -> torch.Tensor:
    """The documented rule, one group at a time in plain Python.

    Per group: rank ascending by (survives, score, index) and keep the top ``n``
    survivors. So pruned entries go first, then low scores, then, among ties, the
    lower index.
    """
    alive = torch.ones_like(scores, dtype=torch.bool) if alive is None else alive != 0
    groups = scores.reshape(-1, m).tolist()
    survivors = alive.reshape(-1, m).tolist()
    rows = []
    for group, alive_group in zip(groups, survivors, strict=True):
        ranked = sorted(range(m), key=lambda i: (alive_group[i], group[i], i))
        top = set(ranked[m - n :])
        rows.append([i in top and alive_group[i] for i in range(m)])
    return torch.tensor(rows, dtype=torch.bool).reshape(scores.shape)


def prune_layer(
    layer: nn.Module, *criteria: prunefw.PruningCriterion, name: str = "weight"
) -> None:
    """Prune ``layer.<name>`` with ``criteria`` in a layer context."""
    LayerPruningContext({(layer, name): list(criteria)}).prune()


# -- the exact pattern -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), NM_VALUES)
@pytest.mark.parametrize(("in_features", "out_features"), LINEAR_SHAPES)
def test_exact_pattern_on_every_group_of_linear_layers(n, m, in_features, out_features):
    """Every group of m inputs keeps exactly n weights: in the mask and in the weight."""
    layer = nn.Linear(in_features, out_features)
    original = layer.weight.detach().clone()
    prune_layer(layer, NMCriterion(n, m))

    assert layer.weight_mask.shape == (out_features, in_features)
    assert (kept_per_group(layer.weight_mask, m) == n).all()
    assert (kept_per_group(layer.weight, m) == n).all()  # random init: no zero weights
    assert int(layer.weight_mask.sum()) == n * out_features * in_features // m
    assert torch.equal(layer.weight_mask.bool(), reference_mask(original.abs(), n, m))
    assert torch.equal(layer.weight_orig.detach(), original)  # the weights themselves are kept


@pytest.mark.parametrize(("n", "m"), [(0, 4), (4, 4), (0, 1), (1, 1), (3, 4), (1, 2)])
def test_extreme_and_odd_ratios(n, m):
    """Keeping 0 prunes everything, keeping m nothing; other ratios are exact too."""
    layer = nn.Linear(8, 6)
    prune_layer(layer, NMCriterion(n, m))
    assert (kept_per_group(layer.weight_mask, m) == n).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    """Half, bfloat16 and double weights get the same exact pattern."""
    layer = nn.Linear(16, 8).to(dtype)
    original = layer.weight.detach().clone()
    prune_layer(layer, NMCriterion(2, 4))
    assert (kept_per_group(layer.weight_mask, 4) == 2).all()
    assert torch.equal(layer.weight_mask.bool(), reference_mask(original.abs(), 2, 4))


# -- which entries are kept --------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), NM_VALUES)
def test_keeps_the_largest_of_every_group(n, m):
    """In each group every kept magnitude is >= every pruned one."""
    weight = torch.randn(12, 4 * m)
    mask = NMCriterion(n, m).compute_mask(weight.abs(), torch.ones_like(weight))
    groups, keep = weight.abs().reshape(-1, m), mask.reshape(-1, m)
    kept = torch.where(keep, groups, torch.inf).amin(dim=1)
    pruned = torch.where(keep, -torch.inf, groups).amax(dim=1)
    assert (kept >= pruned).all()
    assert torch.equal(mask, reference_mask(weight.abs(), n, m))


def test_keeps_the_largest_magnitudes_not_values():
    """Default importance is |w|: large negative weights are kept."""
    layer = nn.Linear(4, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-5.0, 0.1, 3.0, -0.2]]))
    prune_layer(layer, NMCriterion(2, 4))
    assert layer.weight_mask.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert layer.weight.tolist() == [[-5.0, 0.0, 3.0, -0.0]]


def test_subclass_scores_replace_magnitudes():
    """A subclass's importance_scores decide (here: signed values, so negatives go)."""

    class SignedNM(NMCriterion):
        name = "nm-signed"

        def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
            return getattr(module, name).detach()

    layer = nn.Linear(4, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-5.0, 0.1, 3.0, -0.2]]))
    prune_layer(layer, SignedNM(2, 4))
    assert layer.weight_mask.tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_tie_rule_lower_index_pruned_first():
    """Equal scores: the lower index within the group is pruned first."""
    crit = NMCriterion(2, 4)
    ones = torch.ones(3, 8)
    assert crit.compute_mask(ones, ones).tolist() == [[False, False, True, True] * 2] * 3
    scores = torch.tensor([[5.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    assert crit.compute_mask(scores, torch.ones(1, 8)).tolist() == [
        [True, False, False, True, False, True, True, False]
    ]
    assert NMCriterion(1, 2).compute_mask(torch.zeros(1, 4), torch.ones(1, 4)).tolist() == [
        [False, True, False, True]
    ]


@pytest.mark.parametrize(("n", "m"), NM_VALUES)
def test_ties_everywhere_match_the_reference(n, m):
    """Scores with many ties (3 distinct values) follow the documented rule exactly."""
    scores = torch.randint(0, 3, (10, 3 * m)).float()
    mask = NMCriterion(n, m).compute_mask(scores, torch.ones_like(scores))
    assert torch.equal(mask, reference_mask(scores, n, m))
    assert torch.equal(mask, NMCriterion(n, m).compute_mask(scores, torch.ones_like(scores)))


def test_tie_rule_in_a_layer():
    """Equal magnitudes in a real layer: the last n of every group survive."""
    layer = nn.Linear(8, 2)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    prune_layer(layer, NMCriterion(2, 4))
    assert layer.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0] * 2] * 2


# -- shapes: convolutions, biases, shapes that do not fit --------------------------------


def test_conv_groups_run_along_the_flattened_input_dimension():
    """Conv (out, in, kh, kw): groups of m along in*kh*kw, as weight.reshape(out, -1)."""
    conv = nn.Conv2d(16, 8, kernel_size=3)  # rows of 16 * 3 * 3 = 144 = 36 groups of 4
    original = conv.weight.detach().clone()
    prune_layer(conv, NMCriterion(2, 4))
    flat_mask = conv.weight_mask.reshape(8, -1)
    assert (kept_per_group(flat_mask, 4) == 2).all()
    assert torch.equal(flat_mask.bool(), reference_mask(original.reshape(8, -1).abs(), 2, 4))


def test_conv_groups_span_kernel_positions():
    """A group is 4 consecutive entries in memory order, here one whole 2x2 kernel."""
    conv = nn.Conv2d(1, 1, kernel_size=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    prune_layer(conv, NMCriterion(2, 4))
    assert conv.weight_mask.tolist() == [[[[0.0, 0.0], [1.0, 1.0]]]]


def test_conv_with_kernel_width_multiple_of_m_groups_along_the_last_dim():
    """If kw is a multiple of m, the groups are exactly those along the last dimension."""
    conv = nn.Conv2d(3, 4, kernel_size=(3, 4))
    prune_layer(conv, NMCriterion(1, 4))
    assert (conv.weight_mask.sum(dim=-1) == 1).all()


def test_conv1d_and_conv_transpose_follow_the_same_shape_rule():
    """Other weight shapes: dim 0 is the row, the rest is flattened."""
    conv1d = nn.Conv1d(4, 6, kernel_size=2)  # (6, 4, 2): rows of 8
    transposed = nn.ConvTranspose2d(8, 4, kernel_size=2)  # (8, 4, 2, 2): rows of 16
    for module, rows in ((conv1d, 6), (transposed, 8)):
        prune_layer(module, NMCriterion(2, 8))
        assert (kept_per_group(module.weight_mask.reshape(rows, -1), 8) == 2).all()


def test_one_dimensional_tensor_is_one_row():
    """A bias is a single row of groups."""
    layer = nn.Linear(4, 8)
    original = layer.bias.detach().clone()
    prune_layer(layer, NMCriterion(1, 4), name="bias")
    assert (kept_per_group(layer.bias_mask, 4) == 1).all()
    assert torch.equal(layer.bias_mask.bool(), reference_mask(original.abs(), 1, 4))


@pytest.mark.parametrize(
    ("module", "shape", "row"),
    [
        (nn.Linear(6, 8), "(8, 6)", "last dimension is 6"),
        (nn.Conv2d(3, 8, kernel_size=3), "(8, 3, 3, 3)", "is 27"),
    ],
)
def test_shape_not_a_multiple_of_m_is_refused_and_model_unchanged(module, shape, row):
    """The error names the shape and m; the context rolls back."""
    before = copy.deepcopy(module.state_dict())
    with pytest.raises(InvalidArgumentError, match="m=4") as info:
        prune_layer(module, NMCriterion(2, 4))
    assert shape in str(info.value)
    assert row in str(info.value)
    assert not prune.is_pruned(module)
    assert module.state_dict().keys() == before.keys()
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())


def test_scalar_and_mismatched_mask_are_refused():
    """Direct calls: a 0-d tensor, an odd 1-D length, a default_mask of another shape."""
    crit = NMCriterion(2, 4)
    with pytest.raises(InvalidArgumentError, match="0-d"):
        crit.compute_mask(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(InvalidArgumentError, match=r"\(6,\).*length is 6"):
        crit.compute_mask(torch.ones(6), torch.ones(6))
    with pytest.raises(InvalidArgumentError, match="default_mask"):
        crit.compute_mask(torch.ones(2, 4), torch.ones(8))


def test_empty_tensor():
    """A tensor with no entries gives an empty mask."""
    mask = NMCriterion(2, 4).compute_mask(torch.ones(0, 8), torch.ones(0, 8))
    assert mask.shape == (0, 8)
    assert mask.dtype == torch.bool


# -- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"n": 5, "m": 4}, InvalidArgumentError, "n=5"),
        ({"n": -1, "m": 4}, InvalidArgumentError, "n=-1"),
        ({"n": 0, "m": 0}, InvalidArgumentError, "m=0"),
        ({"n": 1, "m": -4}, InvalidArgumentError, "m=-4"),
        ({"n": 2.0, "m": 4}, InvalidTypeError, "n=2.0"),
        ({"n": 2, "m": "4"}, InvalidTypeError, "m='4'"),
        ({"n": True, "m": 4}, InvalidTypeError, "n=True"),
        ({"n": 2, "m": None}, InvalidTypeError, "m=None"),
    ],
)
def test_invalid_arguments(kwargs, error, named):
    """Wrong types and values raise prunefw's errors, naming the value."""
    with pytest.raises(error, match="NMCriterion") as info:
        NMCriterion(**kwargs)
    assert named in str(info.value)


def test_errors_are_also_builtin_exceptions():
    """The errors of prunefw keep `except ValueError/TypeError` working."""
    with pytest.raises(ValueError, match="n=9"):
        NMCriterion(9, 8)
    with pytest.raises(TypeError, match="float"):
        NMCriterion(1, 4.0)


def test_defaults_config_and_repr():
    """NMCriterion() is 2:4; config() rebuilds it."""
    crit = NMCriterion()
    assert (crit.n, crit.m) == (2, 4)
    assert crit.config() == {"n": 2, "m": 4}
    assert repr(NMCriterion(1, 8)) == "NMCriterion(n=1, m=8)"
    assert NMCriterion(**NMCriterion(4, 8).config()).config() == {"n": 4, "m": 8}
    assert NMCriterion.name == "nm"
    assert NMCriterion.PRUNING_TYPE == "global"
    assert NMCriterion.PruningMethod.PRUNING_TYPE == "global"


# -- contexts, by name, permanence -------------------------------------------------------


def test_layer_context_by_registered_name_then_make_permanent():
    """prunefw.criterion("nm", ...) in a LayerPruningContext, then make_permanent."""
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    crit = prunefw.criterion("nm", n=2, m=4)
    assert isinstance(crit, NMCriterion)
    LayerPruningContext({"0": crit, "2": crit}, model=model).prune()
    assert prune.is_pruned(model)
    masks = [model[0].weight_mask.clone(), model[2].weight_mask.clone()]

    make_permanent(model)
    assert not prune.is_pruned(model)
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for layer, mask in zip((model[0], model[2]), masks, strict=True):
        assert isinstance(layer.weight, nn.Parameter)
        assert (kept_per_group(layer.weight, 4) == 2).all()
        assert torch.equal(layer.weight != 0, mask.bool())


def test_torch_prune_remove_after_layer_context():
    """torch.nn.utils.prune.remove bakes the N:M pattern into the weight."""
    layer = nn.Linear(32, 16)
    prune_layer(layer, prunefw.criterion("nm", n=1, m=4))
    prune.remove(layer, "weight")
    assert not hasattr(layer, "weight_mask")
    assert not prune.is_pruned(layer)
    assert (kept_per_group(layer.weight, 4) == 1).all()
    out = layer(torch.randn(3, 32))
    assert out.shape == (3, 16)


def test_torch_apply_api_works_with_the_adapter():
    """The adapter is a torch BasePruningMethod of PRUNING_TYPE "global"."""
    layer = nn.Linear(8, 4)
    NMCriterion.PruningMethod.apply(layer, "weight", criterion=NMCriterion(2, 4))
    assert (kept_per_group(layer.weight_mask, 4) == 2).all()


@pytest.mark.parametrize("strategy", ["global_unstructured", "streaming"])
def test_global_context_refuses_the_criterion(strategy):
    """Global ranking cannot keep per-group counts: PruningTypeError, model untouched."""
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    for crit in (NMCriterion(2, 4), prunefw.criterion("nm")):
        with pytest.raises(PruningTypeError, match="LayerPruningContext") as info:
            GlobalPruningContext(model, [crit], strategy=strategy)
        assert "'global'" in str(info.value)
        assert isinstance(info.value, TypeError)
    assert not prune.is_pruned(model)


# -- already-pruned entries --------------------------------------------------------------


def test_after_magnitude_pruning_groups_keep_min_n_survivors():
    """A group keeps its n best survivors, or all if fewer survive; nothing is un-pruned."""
    layer = nn.Linear(32, 16)
    magnitude_only = copy.deepcopy(layer)
    prune_layer(magnitude_only, MagnitudeCriterion(amount=0.6))
    prior = magnitude_only.weight_mask.bool()

    prune_layer(layer, MagnitudeCriterion(amount=0.6), NMCriterion(2, 4))
    mask = layer.weight_mask.bool()
    assert not (mask & ~prior).any()  # never un-prunes
    survivors = kept_per_group(prior, 4)
    assert (survivors < 2).any()  # the test covers groups with fewer than n survivors
    assert torch.equal(kept_per_group(mask, 4), survivors.clamp(max=2))
    expected = reference_mask(layer.weight_orig.detach().abs(), 2, 4, alive=prior)
    assert torch.equal(mask, expected)


def test_survivors_are_preferred_over_pruned_entries_with_high_scores():
    """Even if scores favour pruned entries, kept slots go to survivors."""

    class FavourPruned(NMCriterion):
        name = "nm-favour-pruned"

        def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
            mask = getattr(module, name + "_mask", None)
            scores = getattr(module, name + "_orig", getattr(module, name)).detach().abs()
            return scores if mask is None else scores + 100.0 * (1 - mask)

    layer = nn.Linear(16, 8)
    prune_layer(layer, MagnitudeCriterion(amount=0.25))
    prior = layer.weight_mask.bool().clone()
    prune_layer(layer, FavourPruned(2, 4))
    mask = layer.weight_mask.bool()
    assert not (mask & ~prior).any()
    assert torch.equal(kept_per_group(mask, 4), kept_per_group(prior, 4).clamp(max=2))
    expected = reference_mask(layer.weight_orig.detach().abs(), 2, 4, alive=prior)
    assert torch.equal(mask, expected)


def test_applying_twice_changes_nothing():
    """Idempotent: the second application finds exactly n survivors per group."""
    layer = nn.Linear(16, 8)
    prune_layer(layer, NMCriterion(2, 4))
    first = layer.weight_mask.clone()
    prune_layer(layer, NMCriterion(2, 4))
    assert torch.equal(layer.weight_mask, first)


def test_stricter_pattern_after_a_looser_one_nests():
    """2:4 then 1:4: every group ends with 1, chosen among the 2 survivors."""
    layer = nn.Linear(16, 8)
    prune_layer(layer, NMCriterion(2, 4))
    first = layer.weight_mask.bool().clone()
    prune_layer(layer, NMCriterion(1, 4))
    assert (kept_per_group(layer.weight_mask, 4) == 1).all()
    assert not (layer.weight_mask.bool() & ~first).any()


def test_direct_call_with_prior_mask():
    """compute_mask itself never keeps an entry whose default_mask is 0."""
    crit = NMCriterion(2, 4)
    scores = torch.tensor([[9.0, 8.0, 1.0, 2.0], [9.0, 8.0, 7.0, 6.0], [1.0, 2.0, 3.0, 4.0]])
    prior = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert crit.compute_mask(scores, prior).tolist() == [
        [False, True, False, True],
        [True, False, False, False],
        [False, False, False, False],
    ]


@pytest.mark.parametrize(("n", "m"), NM_VALUES)
def test_random_prior_masks_and_ties_match_the_reference(n, m):
    """Random prior masks with tied scores: the vectorized rule equals the reference."""
    for _ in range(5):
        scores = torch.randint(0, 4, (6, 2 * m)).float()
        prior = (torch.rand(6, 2 * m) > 0.4).float()
        assert torch.equal(
            NMCriterion(n, m).compute_mask(scores, prior), reference_mask(scores, n, m, prior)
        )


# -- torch's semi-structured format ------------------------------------------------------


def try_to_sparse_semi_structured(dense: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """Call torch's public converter; return (result, "") or (None, error message)."""
    try:
        return torch.sparse.to_sparse_semi_structured(dense), ""
    except RuntimeError as exc:
        return None, str(exc)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_two_four_is_torchs_semi_structured_layout(dtype):
    """NMCriterion(2, 4) on a Linear weight is the layout torch compresses."""
    layer = nn.Linear(128, 64)
    prune_layer(layer, NMCriterion(2, 4))
    make_permanent(layer)
    dense = layer.weight.detach().to(dtype)

    # The documented pattern, asserted directly: row-major groups of 4 along the last
    # dimension, exactly 2 nonzeros each.
    assert ((dense.reshape(-1, 4) != 0).sum(dim=1) == 2).all()

    # torch's public converter. In torch 2.13 it refuses CPU tensors ("Only CUDA tensors
    # are currently supported"), so on CPU we can only check that it refuses because of
    # the device and not because of the pattern or the shape; where it works, the
    # compressed tensor must hold exactly the pruned weight.
    sparse, error = try_to_sparse_semi_structured(dense)
    if sparse is None:
        assert not dense.is_cuda
        assert "Only CUDA tensors" in error
    else:
        assert torch.equal(sparse.to_dense(), dense)

    # torch's pure-PyTorch reference of the CUTLASS compression does run on CPU:
    # compressing keeps 2 values per group of 4 plus metadata, so the round trip is
    # lossless exactly when every group has at most 2 nonzeros.
    values, meta = sparse_semi_structured_from_dense_cutlass(dense)
    assert values.shape == (64, 64)
    assert torch.equal(sparse_semi_structured_to_dense_cutlass(values, meta), dense)


def test_the_cutlass_round_trip_detects_a_wrong_pattern():
    """Sanity check of the check above: 3 of 4 kept does not survive compression."""
    layer = nn.Linear(64, 32)
    prune_layer(layer, NMCriterion(3, 4))
    dense = layer.weight.detach().half()
    values, meta = sparse_semi_structured_from_dense_cutlass(dense)
    assert not torch.equal(sparse_semi_structured_to_dense_cutlass(values, meta), dense)


def test_one_two_is_torchs_float32_layout():
    """The float32 semi-structured layout (CUTLASS) is 1:2: NMCriterion(1, 2), not 2:4."""
    layer = nn.Linear(64, 32)
    prune_layer(layer, NMCriterion(1, 2))
    dense = layer.weight.detach()
    assert ((dense.reshape(-1, 4) != 0).sum(dim=1) == 2).all()  # also a 2:4 pattern
    # The reference moves float32 values as pairs of 16-bit halves and does not restore
    # their low bits exactly (torch 2.13), so compare where the nonzeros are.
    values, meta = sparse_semi_structured_from_dense_cutlass(dense)
    restored = sparse_semi_structured_to_dense_cutlass(values, meta)
    assert torch.equal(restored != 0, dense != 0)

    # A 2:4 pattern that keeps two neighbours is not representable in float32.
    two_four = torch.randn(32, 64)
    with torch.no_grad():
        two_four.reshape(-1, 4)[:, 2:] = 0
    values, meta = sparse_semi_structured_from_dense_cutlass(two_four)
    restored = sparse_semi_structured_to_dense_cutlass(values, meta)
    assert not torch.equal(restored != 0, two_four != 0)
