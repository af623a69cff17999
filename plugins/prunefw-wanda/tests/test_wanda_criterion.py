"""WandaCriterion: the formula, per-row counts, calibration, prior masks, errors, contexts."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import GlobalPruningContext, LayerPruningContext, MagnitudeCriterion, make_permanent
from prunefw.errors import InvalidArgumentError, InvalidTypeError, PruningTypeError
from prunefw.testing import ModelSnapshot
from prunefw_wanda import WandaCriterion

SPARSITIES = [0.0, 0.1, 0.25, 0.5, 0.7, 1.0]
LINEAR_SHAPES = [(16, 8), (37, 5), (64, 3), (1, 4)]  # (in_features, out_features)


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Make every test's random weights reproducible."""
    torch.manual_seed(0)


def scaled_inputs(
    in_features: int, batches: int = 3, rows: int = 10, seed: int = 0, tokens: int | None = None
) -> list[torch.Tensor]:
    """Random batches whose features have very different scales (0.01 to 100)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-2, 2, in_features)[torch.randperm(in_features, generator=generator)]
    shape = (rows, in_features) if tokens is None else (rows, tokens, in_features)
    return [torch.randn(shape, generator=generator) * scales for _ in range(batches)]


def reference_mask(
    weight: torch.Tensor,
    inputs: list[torch.Tensor],
    sparsity: float,
    alive: torch.Tensor | None = None,
) -> torch.Tensor:
    """Wanda written out plainly: float64 scores, then row by row in Python.

    ``S[i, j] = |W[i, j]| * sqrt(sum over all tokens t of X[t, j] ** 2)``. In each row,
    rank ascending by (survives, score, index) and prune the first
    ``round(sparsity * in_features)``: entries pruned before go first, then low
    scores, then, among ties, the lower index. Pruned entries stay pruned.
    """
    out_features, in_features = weight.shape
    tokens = torch.cat([x.reshape(-1, in_features) for x in inputs]).double()
    norms = [math.sqrt(sum(v * v for v in column)) for column in tokens.T.tolist()]
    scores = weight.double().abs().tolist()
    alive_rows = [[True] * in_features] * out_features if alive is None else (alive != 0).tolist()
    k = round(sparsity * in_features)
    rows = []
    for i in range(out_features):
        score = [scores[i][j] * norms[j] for j in range(in_features)]
        ranked = sorted(range(in_features), key=lambda j: (alive_rows[i][j], score[j], j))
        pruned = set(ranked[:k])
        rows.append([j not in pruned and alive_rows[i][j] for j in range(in_features)])
    return torch.tensor(rows, dtype=torch.bool).reshape(weight.shape)


def pruned_per_row(mask: torch.Tensor) -> torch.Tensor:
    return (mask == 0).sum(dim=1)


def wanda_layer(
    layer: nn.Linear,
    sparsity: float,
    inputs: list[torch.Tensor],
    crit: WandaCriterion | None = None,
) -> WandaCriterion:
    """Prune one Linear with Wanda in a layer context, calibrated on ``inputs``."""
    crit = WandaCriterion(sparsity) if crit is None else crit
    LayerPruningContext({layer: crit}, model=layer).prune(calibration_data=inputs)
    return crit


# -- exact counts and the formula ----------------------------------------------------------


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize(("in_features", "out_features"), LINEAR_SHAPES)
def test_exact_count_in_every_row(sparsity, in_features, out_features):
    """Every output row loses exactly round(sparsity * in_features) weights."""
    layer = nn.Linear(in_features, out_features)
    original = layer.weight.detach().clone()
    wanda_layer(layer, sparsity, scaled_inputs(in_features))
    k = round(sparsity * in_features)
    assert layer.weight_mask.shape == (out_features, in_features)
    assert pruned_per_row(layer.weight_mask).tolist() == [k] * out_features
    assert pruned_per_row(layer.weight).tolist() == [k] * out_features  # no zero weights
    assert torch.equal(layer.weight_orig.detach(), original)  # only a mask is added


def test_python_rounding_of_the_count():
    """round() is Python's, like the built-ins: 0.5 * 5 = 2.5 -> 2, 0.5 * 7 = 3.5 -> 4."""
    for in_features, expected in ((5, 2), (7, 4), (3, 2)):
        layer = nn.Linear(in_features, 4)
        wanda_layer(layer, 0.5, scaled_inputs(in_features))
        assert pruned_per_row(layer.weight_mask).tolist() == [expected] * 4


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_matches_the_reference_implementation(seed, sparsity):
    """The masks equal a plain re-implementation of the Wanda formula on random data."""
    generator = torch.Generator().manual_seed(100 + seed)
    layer = nn.Linear(48, 20)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(20, 48, generator=generator))
    inputs = scaled_inputs(48, batches=4, rows=6, seed=seed, tokens=5)  # (batch, seq, features)
    expected = reference_mask(layer.weight.detach(), inputs, sparsity)
    wanda_layer(layer, sparsity, inputs)
    assert torch.equal(layer.weight_mask.bool(), expected)


def test_scores_and_norms_are_the_formula():
    """importance_scores = |W| * ||X_j||_2 over every token of every batch."""
    layer = nn.Linear(12, 7)
    inputs = scaled_inputs(12, batches=3, rows=4, tokens=3)
    crit = WandaCriterion(0.5)
    crit.reset_calibration()
    handle = layer.register_forward_hook(
        lambda module, args, output: crit.observe(module, "weight", args, output)
    )
    with torch.no_grad():
        for x in inputs:
            layer(x)
    handle.remove()
    tokens = torch.cat([x.reshape(-1, 12) for x in inputs]).double()
    norms = tokens.pow(2).sum(dim=0).sqrt()
    assert crit.input_norms(layer).dtype == torch.float64
    torch.testing.assert_close(crit.input_norms(layer), norms)
    scores = crit.importance_scores(layer, "weight")
    assert scores.shape == layer.weight.shape
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), layer.weight.detach().double().abs() * norms)


def test_activations_decide_not_magnitudes():
    """Equal weights: the columns of the weakest input features are pruned, in every row."""
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 3))
    x = torch.randn(256, 4) * torch.tensor([100.0, 10.0, 0.1, 0.01])
    wanda_layer(layer, 0.5, [x])
    # |W| alone would prune columns 0 and 1; |W| * ||X_j|| prunes 2 and 3.
    assert layer.weight_mask.tolist() == [[1.0, 1.0, 0.0, 0.0]] * 3


def test_rows_are_compared_separately():
    """A row of tiny weights keeps its share, unlike a ranking over the whole layer."""
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1e-4, 2e-4, 3e-4, 4e-4], [1.0, 2.0, 3.0, 4.0]]))
    wanda_layer(layer, 0.5, [torch.ones(8, 4)])
    assert layer.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]


def test_ties_prune_the_lower_index_first():
    """Equal scores everywhere: the first k columns go, in every row."""
    layer = nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.fill_(-0.5)
    wanda_layer(layer, 0.5, [torch.ones(4, 6)])
    assert layer.weight_mask.tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]] * 3
    crit = WandaCriterion(0.25)
    mask = crit.compute_mask(torch.tensor([[2.0, 1.0, 1.0, 1.0]]), torch.ones(1, 4))
    assert mask.tolist() == [[True, False, True, True]]


@pytest.mark.parametrize(
    ("dtype", "score_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_other_dtypes(dtype, score_dtype):
    """Half precision scores in float32 (no overflow of large norms), float64 stays."""
    layer = nn.Linear(16, 8).to(dtype)
    inputs = [x.to(dtype) for x in scaled_inputs(16, batches=2, rows=64)]
    crit = wanda_layer(layer, 0.5, inputs)
    assert pruned_per_row(layer.weight_mask).tolist() == [8] * 8
    assert layer.weight_mask.dtype == dtype
    assert crit.importance_scores(layer, "weight").dtype == score_dtype
    expected = reference_mask(layer.weight_orig.detach(), inputs, 0.5)
    assert torch.equal(layer.weight_mask.bool(), expected)


# -- calibration ---------------------------------------------------------------------------


class TwoInputs(nn.Module):
    """A model called with two positional inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


def test_calibration_with_tensor_batches():
    """Tensor batches (here (batch, seq, features)) are the model's single argument."""
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    batches = scaled_inputs(12, batches=3, rows=4, tokens=6)
    hidden = [torch.relu(model[0](x)).detach() for x in batches]
    expected = [
        reference_mask(model[0].weight.detach(), batches, 0.5),
        reference_mask(model[2].weight.detach(), hidden, 0.5),
    ]
    crit = WandaCriterion(0.5)
    LayerPruningContext({"0": crit, "2": crit}, model=model).prune(calibration_data=batches)
    assert torch.equal(model[0].weight_mask.bool(), expected[0])
    assert torch.equal(model[2].weight_mask.bool(), expected[1])


def test_calibration_with_tuple_and_mapping_batches():
    """Tuple batches are positional arguments, mappings keyword arguments: same masks."""
    xs, ys = scaled_inputs(6, seed=1), scaled_inputs(10, seed=2)
    masks = []
    pairs = list(zip(xs, ys, strict=True))
    for batches in (pairs, [{"x": x, "y": y} for x, y in pairs]):
        torch.manual_seed(0)
        model = TwoInputs()
        expected_a = reference_mask(model.a.weight.detach(), xs, 0.5)
        expected_b = reference_mask(model.b.weight.detach(), ys, 0.5)
        crit = WandaCriterion(0.5)
        LayerPruningContext({"a": crit, "b": crit}, model=model).prune(calibration_data=batches)
        assert torch.equal(model.a.weight_mask.bool(), expected_a)
        assert torch.equal(model.b.weight_mask.bool(), expected_b)
        assert pruned_per_row(model.a.weight_mask).tolist() == [3] * 5
        assert pruned_per_row(model.b.weight_mask).tolist() == [5] * 5
        masks.append((model.a.weight_mask.clone(), model.b.weight_mask.clone()))
    assert all(torch.equal(p, q) for p, q in zip(*masks, strict=True))


def test_layer_by_layer_calibrates_on_the_pruned_earlier_layers():
    """One context per layer, in forward order: layer 2 sees the pruned layer 0's outputs."""
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    batches = scaled_inputs(12, batches=2, rows=16)
    dense_hidden = [torch.relu(model[0](x)).detach() for x in batches]
    crit = WandaCriterion(0.5)
    LayerPruningContext({"0": crit}, model=model).prune(calibration_data=batches)
    pruned_hidden = [torch.relu(model[0](x)).detach() for x in batches]
    LayerPruningContext({"2": crit}, model=model).prune(calibration_data=batches)
    weight = model[2].weight_orig.detach()
    expected = reference_mask(weight, pruned_hidden, 0.5)
    assert torch.equal(model[2].weight_mask.bool(), expected)
    norms = crit.input_norms(model[2])
    torch.testing.assert_close(norms, torch.cat(pruned_hidden).double().norm(dim=0))
    assert not torch.allclose(norms, torch.cat(dense_hidden).double().norm(dim=0))


def test_batch_split_does_not_matter_and_a_generator_works():
    """Norms accumulate over batches: one batch or many, list or generator, same mask."""
    data = scaled_inputs(20, batches=1, rows=60)[0]
    masks = []
    for batches in ([data], list(data.split(7)), (x for x in data.split(13))):
        torch.manual_seed(0)
        layer = nn.Linear(20, 9)
        wanda_layer(layer, 0.4, batches)
        masks.append(layer.weight_mask)
    assert torch.equal(masks[0], masks[1])
    assert torch.equal(masks[0], masks[2])


def test_a_layer_called_twice_per_forward_sees_both_inputs():
    """Every forward call of a target module is observed (weight sharing)."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(torch.tanh(self.shared(x)))

    model = Twice()
    batches = scaled_inputs(8, batches=2)
    seen = []
    for x in batches:
        seen.append(x)
        seen.append(torch.tanh(model.shared(x)).detach())
    expected = reference_mask(model.shared.weight.detach(), seen, 0.5)
    crit = WandaCriterion(0.5)
    LayerPruningContext({"shared": crit}, model=model).prune(calibration_data=batches)
    assert torch.equal(model.shared.weight_mask.bool(), expected)


def test_missing_calibration_data_is_a_clear_error_and_changes_nothing():
    """No batches (or no model to run them through): InvalidArgumentError, model untouched."""
    model = nn.Sequential(nn.Linear(8, 4))
    before = ModelSnapshot.take(model)
    with pytest.raises(
        InvalidArgumentError, match=r"WandaCriterion\(sparsity=0.5\) needs calibration data"
    ):
        LayerPruningContext({"0": WandaCriterion(0.5)}, model=model).prune()
    with pytest.raises(InvalidArgumentError, match="pass model="):
        LayerPruningContext({model[0]: WandaCriterion(0.5)}).prune(
            calibration_data=scaled_inputs(8)
        )
    with pytest.raises(InvalidArgumentError, match="was empty"):
        LayerPruningContext({"0": WandaCriterion(0.5)}, model=model).prune(calibration_data=[])
    assert before.diff(ModelSnapshot.take(model)) == []


def test_a_module_never_observed_is_named_and_nothing_changes():
    """A target the batches never reach: InvalidArgumentError naming it; rollback."""

    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = Skips()
    before = ModelSnapshot.take(model)
    crit = WandaCriterion(0.5)
    ctx = LayerPruningContext({"used": crit, "unused": crit}, model=model)
    with pytest.raises(InvalidArgumentError, match="never observed") as info:
        ctx.prune(calibration_data=scaled_inputs(4))
    assert "Linear(in_features=4, out_features=3" in str(info.value)
    assert any("unused.weight" in note for note in info.value.__notes__)
    assert before.diff(ModelSnapshot.take(model)) == []
    with pytest.raises(InvalidArgumentError, match="never observed"):
        WandaCriterion(0.5).importance_scores(nn.Linear(2, 2), "weight")


def test_reset_calibration_forgets_earlier_runs():
    """A criterion reused on another model starts from fresh statistics."""
    crit = WandaCriterion(0.5)
    first, second = nn.Linear(6, 2), nn.Linear(6, 2)
    wanda_layer(first, 0.5, scaled_inputs(6, seed=1), crit=crit)
    wanda_layer(second, 0.5, scaled_inputs(6, seed=2), crit=crit)
    with pytest.raises(InvalidArgumentError, match="never observed"):
        crit.input_norms(first)
    expected = reference_mask(second.weight_orig.detach(), scaled_inputs(6, seed=2), 0.5)
    assert torch.equal(second.weight_mask.bool(), expected)
    crit.reset_calibration()
    with pytest.raises(InvalidArgumentError, match="never observed"):
        crit.input_norms(second)


def test_copies_start_without_statistics():
    """deepcopy and pickle keep the configuration and drop module-bound statistics."""
    layer = nn.Linear(4, 2)
    crit = wanda_layer(layer, 0.25, scaled_inputs(4))
    assert crit.input_norms(layer).shape == (4,)
    for clone in (copy.deepcopy(crit), pickle.loads(pickle.dumps(crit))):
        assert repr(clone) == "WandaCriterion(sparsity=0.25)"
        with pytest.raises(InvalidArgumentError, match="never observed"):
            clone.input_norms(layer)
    assert crit.input_norms(layer).shape == (4,)  # the original keeps its own


# -- refused targets, inputs and arguments -------------------------------------------------


def test_non_linear_modules_are_refused_and_nothing_changes():
    """A Conv2d target: InvalidTypeError during calibration; the model is untouched."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    before = ModelSnapshot.take(model)
    with pytest.raises(InvalidTypeError, match=r"linear-like layers only; got a Conv2d") as info:
        LayerPruningContext({"0": WandaCriterion(0.5)}, model=model).prune(
            calibration_data=[torch.randn(2, 3, 4, 4)]
        )
    # The message lists what is accepted, with each type's weight layout.
    assert "Linear (weight (out_features, in_features))" in str(info.value)
    assert "Conv1D (weight (in_features, out_features))" in str(info.value)
    assert before.diff(ModelSnapshot.take(model)) == []
    assert not model[0]._forward_hooks
    with pytest.raises(InvalidTypeError, match="got a Conv1d"):
        WandaCriterion(0.5).importance_scores(nn.Conv1d(2, 2, 1), "weight")


def test_tensors_other_than_the_weight_are_refused():
    """Wanda prunes the 2-D weight; a bias is an InvalidArgumentError."""
    model = nn.Sequential(nn.Linear(4, 3))
    before = ModelSnapshot.take(model)
    with pytest.raises(InvalidArgumentError, match="not 'bias'"):
        LayerPruningContext({("0", "bias"): WandaCriterion(0.5)}, model=model).prune(
            calibration_data=[torch.randn(2, 4)]
        )
    assert before.diff(ModelSnapshot.take(model)) == []
    with pytest.raises(InvalidArgumentError, match="not 'bias'"):
        WandaCriterion(0.5).importance_scores(nn.Linear(2, 2), "bias")


def test_compute_mask_needs_the_whole_2d_weight():
    crit = WandaCriterion(0.5)
    with pytest.raises(InvalidArgumentError, match=r"2-D weight.*shape \(8,\)"):
        crit.compute_mask(torch.rand(8), torch.ones(8))
    with pytest.raises(InvalidArgumentError, match="default_mask has shape"):
        crit.compute_mask(torch.rand(2, 4), torch.ones(8))
    empty = crit.compute_mask(torch.rand(0, 4), torch.ones(0, 4))
    assert empty.shape == (0, 4)
    assert empty.dtype == torch.bool


def test_observe_needs_a_positional_input_of_in_features():
    crit, layer = WandaCriterion(0.5), nn.Linear(4, 2)
    with pytest.raises(InvalidArgumentError, match="without a positional input tensor"):
        crit.observe(layer, "weight", (), None)
    with pytest.raises(InvalidArgumentError, match=r"shape \(3, 5\); expected \(\.\.\., 4\)"):
        crit.observe(layer, "weight", (torch.randn(3, 5),), None)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), -1])
def test_sparsity_outside_zero_one_is_refused(value):
    with pytest.raises(InvalidArgumentError, match=rf"WandaCriterion\(sparsity={value!r}\)"):
        WandaCriterion(value)


@pytest.mark.parametrize("value", ["0.5", None, True, torch.tensor(0.5), [0.5]])
def test_sparsity_of_the_wrong_type_is_refused(value):
    with pytest.raises(InvalidTypeError, match=r"WandaCriterion\(sparsity=.*expected a float"):
        WandaCriterion(value)


def test_errors_are_also_builtin_exceptions():
    with pytest.raises(ValueError, match="must be a fraction"):
        WandaCriterion(2.0)
    with pytest.raises(TypeError, match="expected a float"):
        WandaCriterion("half")


def test_config_repr_and_class_attributes():
    crit = WandaCriterion(1)
    assert crit.sparsity == 1.0
    assert isinstance(crit.sparsity, float)
    assert crit.config() == {"sparsity": 1.0}
    assert repr(WandaCriterion(0.5)) == "WandaCriterion(sparsity=0.5)"
    assert WandaCriterion(**WandaCriterion(0.3).config()).config() == {"sparsity": 0.3}
    assert WandaCriterion.name == "wanda"
    assert WandaCriterion.PRUNING_TYPE == "global"
    assert WandaCriterion.requires_calibration is True
    assert WandaCriterion.PruningMethod.PRUNING_TYPE == "global"
    assert WandaCriterion(0.5).rank_selection(10) is None


# -- contexts ------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["global_unstructured", "streaming"])
def test_global_context_refuses_the_criterion(strategy):
    """Per-row comparison cannot be a global ranking: PruningTypeError, model untouched."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    before = ModelSnapshot.take(model)
    with pytest.raises(PruningTypeError, match=r"'global'.*Use LayerPruningContext"):
        GlobalPruningContext(model, [WandaCriterion(0.5)], strategy=strategy)
    with pytest.raises(PruningTypeError):
        GlobalPruningContext(model, [MagnitudeCriterion(amount=0.2), WandaCriterion(0.5)])
    assert before.diff(ModelSnapshot.take(model)) == []
    assert not prune.is_pruned(model)


def test_by_registered_name_then_make_permanent():
    """prunefw.criterion("wanda", ...) in a layer context, then prunefw.make_permanent."""
    crit = prunefw.criterion("wanda", sparsity=0.5)
    assert type(crit) is WandaCriterion
    assert crit.config() == {"sparsity": 0.5}
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    batches = scaled_inputs(16, batches=4, rows=8)
    LayerPruningContext({"0": crit, "2": crit}, model=model).prune(calibration_data=batches)
    x = torch.randn(5, 16)
    with torch.no_grad():
        pruned_output = model(x)
    make_permanent(model)
    assert not prune.is_pruned(model)
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert isinstance(model[0].weight, nn.Parameter)
    assert pruned_per_row(model[0].weight).tolist() == [8] * 32
    assert pruned_per_row(model[2].weight).tolist() == [16] * 8
    with torch.no_grad():
        assert torch.equal(model(x), pruned_output)


def test_torch_prune_remove_after_layer_context():
    layer = nn.Linear(10, 4)
    wanda_layer(layer, 0.3, scaled_inputs(10))
    prune.remove(layer, "weight")
    assert pruned_per_row(layer.weight).tolist() == [3] * 4
    assert not hasattr(layer, "weight_mask")


# -- already-pruned entries ----------------------------------------------------------------


def test_entries_pruned_before_count_towards_the_row():
    """After unstructured magnitude pruning, rows end with max(k, pruned before) zeros."""
    layer = nn.Linear(20, 12)
    LayerPruningContext({layer: MagnitudeCriterion(amount=0.35)}).prune()
    prior = layer.weight_mask.clone()
    prior_per_row = pruned_per_row(prior)
    assert len(set(prior_per_row.tolist())) > 1  # uneven rows, some above k = 10
    inputs = scaled_inputs(20)
    expected = reference_mask(layer.weight.detach(), inputs, 0.5, alive=prior)
    wanda_layer(layer, 0.5, inputs)
    mask = layer.weight_mask
    assert torch.equal(mask.bool(), expected)
    assert pruned_per_row(mask).tolist() == torch.clamp(prior_per_row, min=10).tolist()
    assert not bool(((prior == 0) & (mask != 0)).any())  # nothing un-pruned


def test_survivors_are_pruned_even_if_pruned_entries_had_high_scores():
    """Already-pruned entries use up the share first, whatever their scores say."""
    crit = WandaCriterion(0.5)
    scores = torch.tensor([[9.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    alive = torch.tensor([[0.0, 1, 1, 1, 1, 1]])
    assert crit.compute_mask(scores, alive).tolist() == [[False, False, False, True, True, True]]
    all_dead = torch.zeros(1, 6)
    assert not bool(crit.compute_mask(scores, all_dead).any())


def test_applying_again_changes_nothing_and_sparsity_is_a_target():
    """A second Wanda 0.5 is a no-op; 0.3 then 0.5 ends at 50% per row, not 65%."""
    layer = nn.Linear(20, 6)
    inputs = scaled_inputs(20)
    crit = wanda_layer(layer, 0.5, inputs)
    first = layer.weight_mask.clone()
    wanda_layer(layer, 0.5, inputs, crit=crit)
    assert torch.equal(layer.weight_mask, first)

    other = nn.Linear(20, 6)
    wanda_layer(other, 0.3, inputs)
    wanda_layer(other, 0.5, inputs)
    assert pruned_per_row(other.weight_mask).tolist() == [10] * 6


# -- gradual pruning -------------------------------------------------------------------------


def test_a_recipe_schedule_steers_wanda_by_its_target_sparsity():
    """``parameter = "sparsity"`` with ``amount_type = "sparsity"``: every row follows the curve."""
    from prunefw.recipes import Recipe, gradual_pruner

    recipe = Recipe.from_toml(
        """
        [[layer]]
        module_type = "Linear"
        criteria = ["wanda"]
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
    inputs = scaled_inputs(16)
    pruner = gradual_pruner(model, recipe)
    for t, expected in enumerate([0.0, 0.0, 0.375, 0.375, 0.75]):
        pruner.step(inputs)
        for layer in (model[0], model[2]):
            per_row = round(expected * layer.in_features)
            if per_row:
                assert pruned_per_row(layer.weight_mask).tolist() == [per_row] * layer.out_features
            else:
                assert not hasattr(layer, "weight_mask"), t
    assert pruner.sparsity() == 0.75
