"""The built-in criteria: arguments, exact counts, tie rule, RNG use, sequential semantics."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
)
from prunefw.errors import InvalidArgumentError, InvalidTypeError

# --------------------------------------------------------------------------- helpers


def keep(crit: PruningCriterion, scores: torch.Tensor) -> torch.Tensor:
    """The criterion's keep-mask for ``scores``, as a bool tensor."""
    mask = crit.compute_mask(scores, torch.ones_like(scores))
    assert mask.shape == scores.shape
    return mask.bool()


def n_pruned(mask: torch.Tensor) -> int:
    return int((mask == 0).sum())


def pruned_indices(mask: torch.Tensor) -> list[int]:
    return (mask.reshape(-1) == 0).nonzero().squeeze(1).tolist()


def distinct_scores(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` distinct non-negative scores in random order: the value ``(r + 1) / n`` has rank r."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randperm(n, generator=gen).to(torch.float64) + 1) / n


def stable_order(scores: torch.Tensor) -> np.ndarray:
    """Flat indices in (score, index) order: the tie rule of prunefw."""
    return np.argsort(scores.reshape(-1).numpy(), kind="stable")


def linear(in_features: int, out_features: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


def set_weight(module: nn.Module, values: torch.Tensor) -> None:
    with torch.no_grad():
        module.weight.copy_(values.reshape(module.weight.shape))


# ------------------------------------------------------------- MagnitudeCriterion


def test_threshold_prunes_below_and_keeps_equal():
    scores = torch.tensor([0.1, 0.5, 0.5, 0.75, 0.0, 1.0, 0.49999])
    mask = keep(MagnitudeCriterion(min_threshold=0.5), scores)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [False, True, True, True, False, True, False]


def test_threshold_zero_keeps_everything_including_zeros():
    scores = torch.tensor([0.0, 0.0, 3.0])
    assert keep(MagnitudeCriterion(min_threshold=0), scores).all()


def test_threshold_on_layer_uses_absolute_value():
    layer = linear(3, 2)
    set_weight(layer, torch.tensor([-0.25, 0.25, -0.125, 0.5, -0.5, 0.0]))
    LayerPruningContext({layer: MagnitudeCriterion(min_threshold=0.25)}).prune()
    assert layer.weight_mask.reshape(-1).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("dtype", "threshold"),
    [(torch.bfloat16, 0.501), (torch.float16, 0.5001), (torch.float32, 0.5 + 2**-30)],
    ids=["bfloat16", "float16", "float32"],
)
def test_threshold_is_not_rounded_to_the_weight_dtype(dtype: torch.dtype, threshold: float):
    # 0.5 < threshold, so 0.5 must be pruned; but each threshold rounds to 0.5 in ``dtype``.
    scores = torch.tensor([0.5, 0.75, 0.25], dtype=dtype)
    assert keep(MagnitudeCriterion(min_threshold=threshold), scores).tolist() == [
        False,
        True,
        False,
    ]
    layer = nn.Linear(3, 1).to(dtype)
    set_weight(layer, scores)
    LayerPruningContext({layer: MagnitudeCriterion(min_threshold=threshold)}).prune()
    assert layer.weight_mask.reshape(-1).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("n", [1, 7, 10, 101])
@pytest.mark.parametrize("amount", [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.55, 0.999, 1.0])
def test_float_amount_prunes_exactly_round_a_n(n: int, amount: float):
    scores = distinct_scores(n)
    mask = keep(MagnitudeCriterion(amount=amount), scores)
    k = round(amount * n)
    assert n_pruned(mask) == k
    # exactly the k smallest
    assert set(pruned_indices(mask)) == set(stable_order(scores)[:k].tolist())


@pytest.mark.parametrize("k", [0, 1, 5, 12])
def test_int_amount_prunes_exactly_that_many(k: int):
    scores = distinct_scores(12, seed=3)
    mask = keep(MagnitudeCriterion(amount=k), scores)
    assert n_pruned(mask) == k
    assert set(pruned_indices(mask)) == set(stable_order(scores)[:k].tolist())


def test_int_and_float_amounts_are_not_confused():
    scores = distinct_scores(10)
    assert n_pruned(keep(MagnitudeCriterion(amount=1), scores)) == 1
    assert n_pruned(keep(MagnitudeCriterion(amount=1.0), scores)) == 10
    assert n_pruned(keep(MagnitudeCriterion(amount=np.int64(3)), scores)) == 3


def test_magnitude_needs_exactly_one_argument():
    with pytest.raises(InvalidArgumentError, match=r"min_threshold=None, amount=None"):
        MagnitudeCriterion()
    with pytest.raises(InvalidArgumentError, match=r"min_threshold=0\.1, amount=0\.2"):
        MagnitudeCriterion(0.1, amount=0.2)
    with pytest.raises(InvalidArgumentError, match=r"min_threshold=0\.0, amount=3"):
        MagnitudeCriterion(min_threshold=0.0, amount=3)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (-1.0, r"min_threshold=-1\.0\b"),
        (-1e-12, r"min_threshold=-1e-12\b"),
        (-3, r"min_threshold=-3\b"),
        (float("nan"), r"min_threshold=nan\b"),
        (float("inf"), r"min_threshold=inf\b"),
        (float("-inf"), r"min_threshold=-inf\b"),
    ],
)
def test_bad_threshold_value(value: float, pattern: str):
    with pytest.raises(InvalidArgumentError, match=pattern):
        MagnitudeCriterion(min_threshold=value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"min_threshold": "0.5"}, r"min_threshold='0\.5'.*str"),
        ({"min_threshold": True}, r"min_threshold=True.*bool"),
        ({"min_threshold": [0.5]}, r"min_threshold=\[0\.5\].*list"),
        ({"amount": "0.2"}, r"amount='0\.2'.*str"),
        ({"amount": True}, r"amount=True.*bool"),
        ({"amount": False}, r"amount=False.*bool"),
    ],
)
def test_bad_magnitude_types(kwargs: dict[str, Any], pattern: str):
    with pytest.raises(InvalidTypeError, match=pattern):
        MagnitudeCriterion(**kwargs)


@pytest.mark.parametrize(
    ("amount", "pattern"),
    [
        (-1, r"amount=-1\b"),
        (-0.1, r"amount=-0\.1\b"),
        (1.5, r"amount=1\.5\b"),
        (float("nan"), r"amount=nan\b"),
        (float("inf"), r"amount=inf\b"),
    ],
)
def test_bad_amount_value(amount: float, pattern: str):
    with pytest.raises(InvalidArgumentError, match=pattern):
        MagnitudeCriterion(amount=amount)


def test_errors_are_value_and_type_errors():
    with pytest.raises(ValueError, match="nan"):
        MagnitudeCriterion(min_threshold=float("nan"))
    with pytest.raises(TypeError, match="str"):
        MagnitudeCriterion(amount="x")
    with pytest.raises(prunefw.PrunefwError):
        MagnitudeCriterion()


def test_int_amount_larger_than_tensor_direct():
    crit = MagnitudeCriterion(amount=10)
    with pytest.raises(InvalidArgumentError, match=r"amount=10 is more than the 9 entries"):
        keep(crit, distinct_scores(9))


def test_int_amount_larger_than_tensor_fails_at_prune_time_and_leaves_layer_alone():
    layer = linear(3, 3)
    before = layer.weight.detach().clone()
    context = LayerPruningContext({layer: MagnitudeCriterion(amount=10)})  # constructing is fine
    with pytest.raises(InvalidArgumentError, match=r"amount=10.*9 entries"):
        context.prune()
    assert not prune.is_pruned(layer)
    assert torch.equal(layer.weight, before)


def test_int_amount_larger_than_unpruned_rest_fails():
    layer = linear(3, 3)
    context = LayerPruningContext(
        {layer: [MagnitudeCriterion(amount=5), MagnitudeCriterion(amount=5)]}
    )
    with pytest.raises(InvalidArgumentError, match=r"amount=5 is more than the 4 entries still"):
        context.prune()
    assert not prune.is_pruned(layer)
    # Exactly as many as remain is fine.
    LayerPruningContext(
        {layer: [MagnitudeCriterion(amount=5), MagnitudeCriterion(amount=4)]}
    ).prune()
    assert n_pruned(layer.weight_mask) == 9


def test_int_amount_larger_than_model_fails_in_global_context():
    model = nn.Sequential(linear(3, 3), linear(2, 2, seed=1))
    with pytest.raises(InvalidArgumentError, match=r"amount=14.*13 entries"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=14)).prune()
    assert not prune.is_pruned(model)
    GlobalPruningContext(model, MagnitudeCriterion(amount=13)).prune()
    assert n_pruned(model[0].weight_mask) + n_pruned(model[1].weight_mask) == 13


def test_tie_rule_lower_flat_index_first():
    crit = MagnitudeCriterion(amount=2)
    assert pruned_indices(keep(crit, torch.ones(5))) == [0, 1]
    assert pruned_indices(keep(crit, torch.tensor([2.0, 1.0, 1.0, 3.0, 1.0]))) == [1, 2]
    # 2-D: the flat (row-major) index decides.
    scores = torch.tensor([[3.0, 1.0, 1.0], [1.0, 0.5, 1.0]])
    mask = keep(MagnitudeCriterion(amount=3), scores)
    assert pruned_indices(mask) == [1, 2, 4]


def test_tie_rule_is_deterministic_and_matches_stable_sort():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (40, 25), generator=gen).to(torch.float32)
    crit = MagnitudeCriterion(amount=0.37)
    masks = [keep(crit, scores) for _ in range(3)]
    assert all(torch.equal(masks[0], m) for m in masks)
    k = round(0.37 * scores.numel())
    assert set(pruned_indices(masks[0])) == set(stable_order(scores)[:k].tolist())


def test_tie_rule_in_layer_context_on_magnitudes():
    layer = linear(3, 2)
    set_weight(layer, torch.tensor([0.5, -0.5, 0.5, -0.5, 0.5, -0.5]))
    LayerPruningContext({layer: MagnitudeCriterion(amount=3)}).prune()
    assert pruned_indices(layer.weight_mask) == [0, 1, 2]


# ------------------------------------------------------------ PercentileCriterion


def test_percentile_example():
    mask = keep(PercentileCriterion(0.2, 0.8), torch.arange(10.0))
    assert pruned_indices(mask) == [0, 1, 8, 9]


@pytest.mark.parametrize("n", [1, 2, 9, 10, 57])
@pytest.mark.parametrize(
    ("lower", "upper"),
    [(0.0, 1.0), (0.1, 0.9), (0.2, 0.7), (0.05, 0.5), (0.0, 0.0), (1.0, 1.0), (0.3, 0.3)],
)
def test_percentile_prunes_both_tails_exactly(n: int, lower: float, upper: float):
    scores = distinct_scores(n, seed=n)
    mask = keep(PercentileCriterion(lower, upper), scores)
    low = round(lower * n)
    high = min(round((1 - upper) * n), n - low)
    order = stable_order(scores).tolist()
    assert n_pruned(mask) == low + high
    assert set(pruned_indices(mask)) == set(order[:low]) | set(order[n - high :])


def test_percentile_ties_go_low_index_first_at_bottom_and_high_index_first_at_top():
    mask = keep(PercentileCriterion(0.2, 0.7), torch.ones(10))
    assert pruned_indices(mask) == [0, 1, 7, 8, 9]


def test_percentile_lower_above_upper_names_both_values():
    with pytest.raises(InvalidArgumentError, match=r"lower=0\.9, upper=0\.1"):
        PercentileCriterion(0.9, 0.1)


@pytest.mark.parametrize(
    ("lower", "upper", "pattern"),
    [
        (20, 90, r"lower=20\b.*fraction in \[0, 1\]"),
        (0.2, 90, r"upper=90\b.*fraction"),
        (-0.1, 0.5, r"lower=-0\.1\b"),
        (0.1, 1.01, r"upper=1\.01\b"),
        (float("nan"), 0.5, r"lower=nan\b"),
        (0.1, float("inf"), r"upper=inf\b"),
    ],
)
def test_percentile_bad_values(lower: float, upper: float, pattern: str):
    with pytest.raises(InvalidArgumentError, match=pattern):
        PercentileCriterion(lower, upper)


@pytest.mark.parametrize(
    ("lower", "upper", "pattern"),
    [
        ("0.1", 0.9, r"lower='0\.1'.*str"),
        (0.1, None, r"upper=None.*NoneType"),
        (True, 1.0, r"lower=True.*bool"),
    ],
)
def test_percentile_bad_types(lower: Any, upper: Any, pattern: str):
    with pytest.raises(InvalidTypeError, match=pattern):
        PercentileCriterion(lower, upper)


def test_percentile_beyond_quantile_limit_matches_sort_reference():
    n = 2**24 + 1001
    with pytest.raises(RuntimeError, match="too large"):
        torch.quantile(torch.zeros(n), 0.5)
    # Distinct float32 values: consecutive bit patterns above 1.0 are increasing floats.
    gen = torch.Generator().manual_seed(0)
    bits = torch.randperm(n, generator=gen, dtype=torch.int32) + 0x3F800000
    scores = bits.view(torch.float32)
    lower, upper = 0.1, 0.93
    mask = keep(PercentileCriterion(lower, upper), scores)
    low, high = round(lower * n), round((1 - upper) * n)
    reference = np.sort(scores.numpy())
    lo_kept, hi_kept = reference[low], reference[n - high - 1]
    expected = (scores >= float(lo_kept)) & (scores <= float(hi_kept))
    assert int(expected.sum()) == n - low - high
    assert n_pruned(mask) == low + high
    assert torch.equal(mask, expected)


# --------------------------------------------------------------- RandomCriterion


@pytest.mark.parametrize("n", [1, 3, 10, 333])
@pytest.mark.parametrize("ratio", [0.0, 0.15, 0.5, 0.7, 1.0])
def test_random_prunes_exact_count(n: int, ratio: float):
    mask = keep(RandomCriterion(ratio, seed=n), torch.rand(n))
    assert mask.dtype == torch.bool
    assert n_pruned(mask) == round(ratio * n)


def test_random_ignores_scores():
    a = keep(RandomCriterion(0.5, seed=4), torch.zeros(50))
    b = keep(RandomCriterion(0.5, seed=4), torch.arange(50.0))
    assert torch.equal(a, b)


def test_random_same_seed_same_sequence_of_masks():
    first, second = RandomCriterion(0.5, seed=7), RandomCriterion(0.5, seed=7)
    shapes = [(100,), (100,), (8, 9), (100,)]
    masks1 = [keep(first, torch.ones(s)) for s in shapes]
    masks2 = [keep(second, torch.ones(s)) for s in shapes]
    assert all(torch.equal(a, b) for a, b in zip(masks1, masks2, strict=True))
    # The generator advances: two tensors of the same shape get different patterns.
    assert not torch.equal(masks1[0], masks1[1])


def test_random_numpy_int_seed_is_an_int_seed():
    a = keep(RandomCriterion(0.5, seed=np.int64(11)), torch.ones(64))
    b = keep(RandomCriterion(0.5, seed=11), torch.ones(64))
    assert torch.equal(a, b)
    assert RandomCriterion(0.5, seed=np.int64(11)).config()["seed"] == 11


def test_random_different_seeds_differ():
    masks = [keep(RandomCriterion(0.5, seed=s), torch.ones(200)) for s in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.equal(masks[i], masks[j])


def test_random_unseeded_criteria_differ():
    a = keep(RandomCriterion(0.5), torch.ones(200))
    b = keep(RandomCriterion(0.5), torch.ones(200))
    assert not torch.equal(a, b)


def test_random_same_seed_same_model_masks_in_contexts():
    base = nn.Sequential(linear(6, 5), nn.ReLU(), linear(5, 4, seed=1))
    one, two = copy.deepcopy(base), copy.deepcopy(base)
    GlobalPruningContext(one, [RandomCriterion(0.4, seed=3)]).prune()
    GlobalPruningContext(two, [RandomCriterion(0.4, seed=3)]).prune()
    for a, b in ((one[0], two[0]), (one[2], two[2])):
        assert torch.equal(a.weight_mask, b.weight_mask)
    assert n_pruned(one[0].weight_mask) + n_pruned(one[2].weight_mask) == round(0.4 * 50)


def test_random_does_not_touch_global_rng():
    model = nn.Sequential(linear(6, 5), nn.ReLU(), linear(5, 4, seed=1))
    layer = linear(4, 4, seed=2)
    torch.manual_seed(1234)
    expected = torch.rand(8)

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    for crit in (RandomCriterion(0.3), RandomCriterion(0.6, seed=5)):
        keep(crit, torch.ones(10, 10))
    GlobalPruningContext(model, [RandomCriterion(0.5), RandomCriterion(0.5, seed=1)]).prune()
    LayerPruningContext({layer: [RandomCriterion(0.25, seed=2), RandomCriterion(0.5)]}).prune()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(8), expected)


@pytest.mark.parametrize(
    ("ratio", "pattern"),
    [
        (1.5, r"prune_ratio=1\.5\b"),
        (-0.2, r"prune_ratio=-0\.2\b"),
        (2, r"prune_ratio=2\b"),
        (float("nan"), r"prune_ratio=nan\b"),
    ],
)
def test_random_ratio_out_of_range(ratio: float, pattern: str):
    with pytest.raises(InvalidArgumentError, match=pattern):
        RandomCriterion(ratio)


@pytest.mark.parametrize(
    ("seed", "pattern"),
    [(1.5, r"seed=1\.5\b.*float"), ("1", r"seed='1'.*str"), (True, r"seed=True.*bool")],
)
def test_random_seed_must_be_int(seed: Any, pattern: str):
    with pytest.raises(InvalidTypeError, match=pattern):
        RandomCriterion(0.5, seed=seed)


def test_random_ratio_type():
    with pytest.raises(InvalidTypeError, match=r"prune_ratio='0\.5'"):
        RandomCriterion("0.5")


# ------------------------------------------------------------ sequential semantics


def test_two_twenty_percent_criteria_prune_thirty_six_percent_in_layer_context():
    layer = linear(10, 10)
    magnitudes = layer.weight.detach().abs().reshape(-1).clone()
    LayerPruningContext(
        {layer: [MagnitudeCriterion(amount=0.2), MagnitudeCriterion(amount=0.2)]}
    ).prune()
    assert n_pruned(layer.weight_mask) == 36
    # Pruning the 20 smallest, then the 16 smallest of the rest: the 36 smallest.
    assert set(pruned_indices(layer.weight_mask)) == set(stable_order(magnitudes)[:36].tolist())


def test_two_prune_calls_compose_like_two_criteria():
    layer = linear(10, 10)
    other = copy.deepcopy(layer)
    LayerPruningContext(
        {layer: [MagnitudeCriterion(amount=0.2), MagnitudeCriterion(amount=0.2)]}
    ).prune()
    LayerPruningContext({other: MagnitudeCriterion(amount=0.2)}).prune()
    LayerPruningContext({other: MagnitudeCriterion(amount=0.2)}).prune()
    assert torch.equal(layer.weight_mask, other.weight_mask)
    assert torch.equal(layer.weight_orig, other.weight_orig)


def test_two_twenty_percent_criteria_prune_thirty_six_percent_globally():
    model = nn.Sequential(linear(5, 10), nn.ReLU(), linear(10, 5, seed=1))
    GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.2), MagnitudeCriterion(amount=0.2)]
    ).prune()
    assert n_pruned(model[0].weight_mask) + n_pruned(model[2].weight_mask) == 36


def test_random_then_percentile_fractions_of_what_remains():
    layer = linear(10, 10)
    LayerPruningContext(
        {layer: [RandomCriterion(0.5, seed=0), PercentileCriterion(0.1, 0.9)]}
    ).prune()
    assert n_pruned(layer.weight_mask) == 50 + 5 + 5


class KeepAll(PruningCriterion):
    """Returns an all-True mask: asks to keep (and so to un-prune) everything."""

    name = "test_keep_all"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        self.seen.append(scores.numel())
        return torch.ones_like(scores, dtype=torch.bool)


class KeepAllFloatWholeTensor(PruningCriterion):
    """Sees the whole tensor (``"global"`` type) and returns a float all-ones mask."""

    name = "test_keep_all_whole"
    PRUNING_TYPE: ClassVar[str] = "global"

    def __init__(self) -> None:
        self.default_masks: list[torch.Tensor] = []

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        self.default_masks.append(default_mask.clone())
        return torch.ones_like(scores)


def test_criterion_never_unprunes_in_one_context():
    layer = linear(10, 10)
    reference = copy.deepcopy(layer)
    LayerPruningContext({reference: MagnitudeCriterion(amount=30)}).prune()
    keep_all, whole = KeepAll(), KeepAllFloatWholeTensor()
    LayerPruningContext({layer: [MagnitudeCriterion(amount=30), keep_all, whole]}).prune()
    assert keep_all.seen == [70]  # only the unpruned entries are shown
    assert n_pruned(whole.default_masks[0]) == 30  # the whole tensor, with its mask
    assert torch.equal(layer.weight_mask, reference.weight_mask)
    assert n_pruned(layer.weight_mask) == 30
    assert bool((layer.weight[layer.weight_mask == 0] == 0).all())


def test_criterion_never_unprunes_across_contexts():
    model = nn.Sequential(linear(8, 8), nn.ReLU(), linear(8, 4, seed=1))
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    masks = [model[0].weight_mask.clone(), model[2].weight_mask.clone()]
    keep_all = KeepAll()
    GlobalPruningContext(model, keep_all).prune()
    assert keep_all.seen == [48]
    LayerPruningContext({model[0]: KeepAllFloatWholeTensor(), model[2]: KeepAll()}).prune()
    assert torch.equal(model[0].weight_mask, masks[0])
    assert torch.equal(model[2].weight_mask, masks[1])


def test_criterion_never_unprunes_torch_pruned_layer():
    layer = linear(6, 6)
    prune.random_unstructured(layer, "weight", amount=0.5)
    before = layer.weight_mask.clone()
    LayerPruningContext({layer: [KeepAll(), KeepAllFloatWholeTensor()]}).prune()
    assert torch.equal(layer.weight_mask, before)


# --------------------------------------------------------------- repr and config

CRITERIA = [
    MagnitudeCriterion(min_threshold=0.5),
    MagnitudeCriterion(min_threshold=0),
    MagnitudeCriterion(amount=0.3),
    MagnitudeCriterion(amount=7),
    PercentileCriterion(0.1, 0.9),
    PercentileCriterion(0, 1),
    RandomCriterion(0.25, seed=3),
    RandomCriterion(0.25),
]


@pytest.mark.parametrize("crit", CRITERIA, ids=repr)
def test_config_round_trip(crit: PruningCriterion):
    rebuilt = type(crit)(**crit.config())
    assert type(rebuilt) is type(crit)
    assert rebuilt.config() == crit.config()
    assert repr(rebuilt) == repr(crit)
    for key, value in crit.config().items():
        assert type(rebuilt.config()[key]) is type(value)
    # repr is the constructor call.
    namespace = {type(crit).__name__: type(crit)}
    assert eval(repr(crit), namespace).config() == crit.config()


@pytest.mark.parametrize("crit", CRITERIA, ids=repr)
def test_config_round_trip_gives_same_masks(crit: PruningCriterion):
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.7, 0.2, 0.8, 0.6], [0.05, 0.4, 1.0, 0.0]])
    fresh = type(crit)(**crit.config())
    rebuilt = type(fresh)(**fresh.config())
    a, b = keep(fresh, scores), keep(rebuilt, scores)
    if isinstance(crit, RandomCriterion) and crit.seed is None:
        assert n_pruned(a) == n_pruned(b) == 3
    else:
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("crit", "text"),
    [
        (MagnitudeCriterion(min_threshold=1), "MagnitudeCriterion(min_threshold=1.0)"),
        (MagnitudeCriterion(amount=0.2), "MagnitudeCriterion(amount=0.2)"),
        (MagnitudeCriterion(amount=5), "MagnitudeCriterion(amount=5)"),
        (PercentileCriterion(0.1, 0.9), "PercentileCriterion(lower=0.1, upper=0.9)"),
        (RandomCriterion(0.5, seed=3), "RandomCriterion(prune_ratio=0.5, seed=3)"),
        (RandomCriterion(1), "RandomCriterion(prune_ratio=1.0, seed=None)"),
    ],
)
def test_repr(crit: PruningCriterion, text: str):
    assert repr(crit) == text


def test_config_of_magnitude_has_only_the_given_argument():
    assert MagnitudeCriterion(min_threshold=0.5).config() == {"min_threshold": 0.5}
    assert MagnitudeCriterion(amount=0.5).config() == {"amount": 0.5}
