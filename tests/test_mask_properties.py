"""Property tests of the masks the built-in criteria produce, on random shapes and values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
)
from prunefw.selection import largest_k, smallest_k

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Values from a small set give many ties; arbitrary finite floats give few.
TIED = st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, 2.0, -2.0, 3.0])
ANY = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
ELEMENTS = st.one_of(TIED, ANY)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7)
FRACTIONS = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def score_tensors(draw: st.DrawFn) -> torch.Tensor:
    """A float32 tensor of random shape: values from a small set, arbitrary, or a mix."""
    values = draw(st.sampled_from([TIED, ANY, ELEMENTS]))
    array = draw(hnp.arrays(np.float32, SHAPES, elements=values))
    return torch.from_numpy(array.copy())


def order(scores: torch.Tensor) -> list[int]:
    """Flat indices in the order of the tie rule: by score, then by flat index."""
    return np.argsort(scores.reshape(-1).numpy(), kind="stable").tolist()


def keep(crit: PruningCriterion, scores: torch.Tensor) -> torch.Tensor:
    mask = crit.compute_mask(scores, torch.ones_like(scores))
    assert isinstance(mask, torch.Tensor)
    assert mask.dtype == torch.bool
    assert mask.shape == scores.shape
    return mask


def pruned_set(mask: torch.Tensor) -> set[int]:
    return set((mask.reshape(-1) == 0).nonzero().squeeze(1).tolist())


def percentile_counts(lower: float, upper: float, n: int) -> tuple[int, int]:
    """How many entries a percentile criterion prunes at the bottom and at the top."""
    low = round(lower * n)
    return low, min(round((1 - upper) * n), n - low)


# ------------------------------------------------------------------ selection


@SETTINGS
@given(scores=score_tensors(), data=st.data())
def test_smallest_k_is_exactly_the_first_k_in_tie_order(scores: torch.Tensor, data: st.DataObject):
    n = scores.numel()
    k = data.draw(st.integers(0, n), label="k")
    selected = smallest_k(scores, k)
    assert selected.dtype == torch.bool
    assert selected.shape == scores.shape
    assert int(selected.sum()) == k
    assert set(selected.reshape(-1).nonzero().squeeze(1).tolist()) == set(order(scores)[:k])


@SETTINGS
@given(scores=score_tensors(), data=st.data())
def test_largest_k_is_exactly_the_last_k_in_tie_order(scores: torch.Tensor, data: st.DataObject):
    n = scores.numel()
    k = data.draw(st.integers(0, n), label="k")
    selected = largest_k(scores, k)
    assert selected.dtype == torch.bool
    assert selected.shape == scores.shape
    assert int(selected.sum()) == k
    assert set(selected.reshape(-1).nonzero().squeeze(1).tolist()) == set(order(scores)[n - k :])


@SETTINGS
@given(scores=score_tensors(), data=st.data())
def test_selection_is_nested_and_deterministic(scores: torch.Tensor, data: st.DataObject):
    n = scores.numel()
    k1 = data.draw(st.integers(0, n), label="k1")
    k2 = data.draw(st.integers(k1, n), label="k2")
    small, bigger = smallest_k(scores, k1), smallest_k(scores, k2)
    assert bool((bigger | ~small).all())  # small is a subset of bigger
    assert torch.equal(small, smallest_k(scores.clone(), k1))
    assert torch.equal(largest_k(scores, n - k1), ~small)


@SETTINGS
@given(scores=score_tensors(), extra=st.integers(1, 5))
def test_selection_refuses_k_out_of_range(scores: torch.Tensor, extra: int):
    n = scores.numel()
    with pytest.raises(ValueError, match=rf"k={n + extra}\b"):
        smallest_k(scores, n + extra)
    with pytest.raises(ValueError, match=rf"k=-{extra}\b"):
        smallest_k(scores, -extra)


# ------------------------------------------------------------------ magnitude


@SETTINGS
@given(scores=score_tensors(), amount=FRACTIONS)
def test_magnitude_fraction_mask(scores: torch.Tensor, amount: float):
    scores = scores.abs()
    n = scores.numel()
    mask = keep(MagnitudeCriterion(amount=amount), scores)
    k = round(amount * n)
    assert int((~mask).sum()) == k
    if 0 < k < n:
        assert float(scores[~mask].max()) <= float(scores[mask].min())
    assert pruned_set(mask) == set(order(scores)[:k])


@SETTINGS
@given(scores=score_tensors(), data=st.data())
def test_magnitude_count_mask(scores: torch.Tensor, data: st.DataObject):
    scores = scores.abs()
    n = scores.numel()
    k = data.draw(st.integers(0, n), label="amount")
    mask = keep(MagnitudeCriterion(amount=k), scores)
    assert int((~mask).sum()) == k
    if 0 < k < n:
        assert float(scores[~mask].max()) <= float(scores[mask].min())
    assert pruned_set(mask) == set(order(scores)[:k])


@SETTINGS
@given(scores=score_tensors(), threshold=st.one_of(TIED.map(abs), st.floats(0, 4, width=32)))
def test_magnitude_threshold_mask(scores: torch.Tensor, threshold: float):
    scores = scores.abs()
    mask = keep(MagnitudeCriterion(min_threshold=threshold), scores)
    # Exact comparison, in float64 (the threshold is a float32 value here).
    assert torch.equal(mask, scores.to(torch.float64) >= threshold)
    # Equal to the threshold is kept.
    if scores.numel():
        boundary = float(scores.reshape(-1)[0])
        assert bool(keep(MagnitudeCriterion(min_threshold=boundary), scores).reshape(-1)[0])


# ------------------------------------------------------------------ percentile


@SETTINGS
@given(scores=score_tensors(), bounds=st.tuples(FRACTIONS, FRACTIONS).map(sorted))
def test_percentile_keeps_a_contiguous_band(scores: torch.Tensor, bounds: list[float]):
    lower, upper = bounds
    n = scores.numel()
    mask = keep(PercentileCriterion(lower, upper), scores)
    low, high = percentile_counts(lower, upper, n)
    assert int((~mask).sum()) == low + high
    ranks = order(scores)
    kept_ranks = [r for r, index in enumerate(ranks) if bool(mask.reshape(-1)[index])]
    assert kept_ranks == list(range(low, n - high))
    if kept_ranks and low:
        assert float(scores[~mask].min()) <= float(scores[mask].min())
    if kept_ranks and high:
        assert float(scores[~mask].max()) >= float(scores[mask].max())


@SETTINGS
@given(scores=score_tensors(), lower=FRACTIONS, upper=FRACTIONS)
def test_percentile_counts_follow_the_formula(scores: torch.Tensor, lower: float, upper: float):
    lower, upper = min(lower, upper), max(lower, upper)
    n = scores.numel()
    pruned = int((~keep(PercentileCriterion(lower, upper), scores)).sum())
    formula = round(lower * n) + round((1 - upper) * n)
    # The two tails never overlap; only rounding both up can ask for one more than n.
    assert pruned == min(formula, n)
    assert formula <= n + 1


# ------------------------------------------------------------------ random


@SETTINGS
@given(scores=score_tensors(), ratio=FRACTIONS, seed=st.integers(0, 2**32))
def test_random_mask_count_and_reproducibility(scores: torch.Tensor, ratio: float, seed: int):
    mask = keep(RandomCriterion(ratio, seed=seed), scores)
    assert int((~mask).sum()) == round(ratio * scores.numel())
    assert torch.equal(mask, keep(RandomCriterion(ratio, seed=seed), scores))


# ------------------------------------------------------------------ on top of a mask

CRITERIA = st.one_of(
    FRACTIONS.map(lambda a: MagnitudeCriterion(amount=a)),
    st.floats(0, 3, allow_nan=False).map(lambda t: MagnitudeCriterion(min_threshold=t)),
    st.tuples(FRACTIONS, FRACTIONS).map(lambda b: PercentileCriterion(min(b), max(b))),
    st.tuples(FRACTIONS, st.integers(0, 1000)).map(lambda r: RandomCriterion(r[0], seed=r[1])),
)


@st.composite
def pruned_layers(draw: st.DrawFn) -> tuple[nn.Linear, torch.Tensor]:
    """A Linear layer of random shape and weights, already pruned with a random mask."""
    out_features, in_features = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    shape = (out_features, in_features)
    values = draw(st.sampled_from([TIED, ANY, ELEMENTS]))
    weights = draw(hnp.arrays(np.float32, shape, elements=values))
    mask = draw(hnp.arrays(np.bool_, shape))
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights))
    prune.custom_from_mask(layer, "weight", torch.from_numpy(mask.copy()))
    return layer, layer.weight_mask.clone()


def expected_new_prunes(crit: PruningCriterion, remaining: torch.Tensor) -> int | None:
    """How many of the ``remaining`` magnitudes ``crit`` prunes, if it is a count rule."""
    n = remaining.numel()
    if isinstance(crit, MagnitudeCriterion) and crit.amount is not None:
        return round(crit.amount * n)
    if isinstance(crit, MagnitudeCriterion):
        return int((remaining.double() < crit.min_threshold).sum())  # exact, not rounded
    if isinstance(crit, PercentileCriterion):
        return sum(percentile_counts(crit.lower, crit.upper, n))
    if isinstance(crit, RandomCriterion):
        return round(crit.prune_ratio * n)
    return None


@SETTINGS
@given(layer_and_mask=pruned_layers(), crits=st.lists(CRITERIA, min_size=1, max_size=3))
def test_layer_context_never_unprunes(
    layer_and_mask: tuple[nn.Linear, torch.Tensor], crits: list[PruningCriterion]
):
    layer, mask = layer_and_mask
    for crit in crits:
        before = layer.weight_mask.clone()
        remaining = layer.weight_orig.detach().abs()[before == 1]
        expected = expected_new_prunes(crit, remaining)
        LayerPruningContext({layer: crit}).prune()
        after = layer.weight_mask
        assert after.shape == before.shape
        assert bool(((after == 0) | (after == 1)).all())
        assert bool((after <= before).all()), "an entry pruned before was un-pruned"
        assert int((before - after).sum()) == expected
    assert bool((layer.weight_mask <= mask).all())
    assert bool((layer.weight[layer.weight_mask == 0] == 0).all())
    assert prune.is_pruned(layer)


@SETTINGS
@given(layer_and_mask=pruned_layers(), amount=FRACTIONS)
def test_magnitude_on_top_of_mask_prunes_smallest_remaining(
    layer_and_mask: tuple[nn.Linear, torch.Tensor], amount: float
):
    layer, mask = layer_and_mask
    LayerPruningContext({layer: MagnitudeCriterion(amount=amount)}).prune()
    remaining = (mask.reshape(-1) == 1).nonzero().squeeze(1)
    magnitudes = layer.weight_orig.detach().abs().reshape(-1)[remaining]
    k = round(amount * remaining.numel())
    expected = set(remaining[order(magnitudes)[:k]].tolist()) | pruned_set(mask)
    assert pruned_set(layer.weight_mask) == expected
