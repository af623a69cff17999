"""The streaming global strategy: same masks as the default strategy, without concatenation."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import model_state
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
)
from prunefw.errors import InvalidArgumentError
from prunefw.selection import select_kth


def make_model(seed: int = 0, quantum: float | None = None, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(17, 23), nn.ReLU(), nn.Conv1d(3, 5, 4), nn.Linear(23, 7))
    model = model.to(dtype)
    if quantum is not None:  # many ties
        with torch.no_grad():
            for p in model.parameters():
                p.copy_((p / quantum).round() * quantum)
    return model


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight_mask for m in model.modules() if hasattr(m, "weight_mask")]


def both(criteria_factory, model_factory):
    default, streaming = model_factory(), model_factory()
    GlobalPruningContext(default, criteria_factory()).prune()
    GlobalPruningContext(streaming, criteria_factory(), strategy="streaming").prune()
    return default, streaming


CASES = [
    lambda: [MagnitudeCriterion(amount=0.5)],
    lambda: [MagnitudeCriterion(amount=0.0)],
    lambda: [MagnitudeCriterion(amount=1.0)],
    lambda: [MagnitudeCriterion(amount=37)],
    lambda: [MagnitudeCriterion(min_threshold=0.05)],
    lambda: [PercentileCriterion(0.1, 0.9)],
    lambda: [PercentileCriterion(0.0, 0.4)],
    lambda: [PercentileCriterion(0.5, 0.5)],
    lambda: [MagnitudeCriterion(amount=0.3), PercentileCriterion(0.2, 0.7)],
]


@pytest.mark.parametrize("criteria", CASES)
@pytest.mark.parametrize("quantum", [None, 0.05, 1.0])
def test_same_masks_as_the_default_strategy_ties_included(criteria, quantum):
    default, streaming = both(criteria, lambda: make_model(quantum=quantum))
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_same_masks_in_other_dtypes(dtype):
    default, streaming = both(
        lambda: [MagnitudeCriterion(amount=0.45)], lambda: make_model(dtype=dtype)
    )
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
    amount=st.floats(0, 1),
    lower=st.floats(0, 1),
    width=st.floats(0, 1),
    quantum=st.sampled_from([None, 0.1, 0.02]),
    seed=st.integers(0, 3),
)
def test_property_same_masks_on_top_of_earlier_pruning(amount, lower, width, quantum, seed):
    upper = min(1.0, lower + width)

    def model_factory():
        model = make_model(seed, quantum)
        GlobalPruningContext(model, RandomCriterion(0.3, seed=seed)).prune()
        return model

    default, streaming = both(
        lambda: [MagnitudeCriterion(amount=amount), PercentileCriterion(lower, upper)],
        model_factory,
    )
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


class SignedScores(PruningCriterion):
    """Custom scores with negative values and both signs of zero."""

    name = "signed"

    def __init__(self, amount: float) -> None:
        self.inner = MagnitudeCriterion(amount=amount)

    def importance_scores(self, module, name):
        w = getattr(module, name).detach()
        return torch.where(w.abs() < 0.05, -0.0 * torch.sign(w), w)

    def compute_mask(self, scores, default_mask):
        return self.inner.compute_mask(scores, default_mask)

    def rank_selection(self, n):
        return self.inner.rank_selection(n)


def test_custom_signed_scores_match():
    default, streaming = both(lambda: [SignedScores(0.4)], lambda: make_model(quantum=0.01))
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


def test_random_exact_count_and_seeded():
    model_a, model_b, model_c = make_model(), make_model(), make_model()
    GlobalPruningContext(model_a, RandomCriterion(0.37, seed=5), strategy="streaming").prune()
    GlobalPruningContext(model_b, RandomCriterion(0.37, seed=5), strategy="streaming").prune()
    GlobalPruningContext(model_c, RandomCriterion(0.37, seed=6), strategy="streaming").prune()
    total = sum(m.numel() for m in masks(model_a))
    assert sum(int((m == 0).sum()) for m in masks(model_a)) == round(0.37 * total)
    assert all(torch.equal(a, b) for a, b in zip(masks(model_a), masks(model_b), strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(masks(model_a), masks(model_c), strict=True))


def test_random_is_uniform_over_positions():
    hits = torch.zeros(200)
    for seed in range(300):
        layer = nn.Linear(20, 10)
        GlobalPruningContext(
            nn.Sequential(layer), RandomCriterion(0.5, seed=seed), strategy="streaming"
        ).prune()
        hits += (layer.weight_mask == 0).flatten().float()
    freq = hits / 300
    assert abs(float(freq.mean()) - 0.5) < 1e-6
    assert float(freq.min()) > 0.35
    assert float(freq.max()) < 0.65


def test_torch_reparametrization_and_no_leaked_masks():
    model = make_model()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy="streaming").prune()
    assert prune.is_pruned(model)
    for module in (model[0], model[2], model[3]):
        assert isinstance(module.weight_orig, nn.Parameter)
        hook = next(iter(module._forward_pre_hooks.values()))
        assert hook.mask is module.weight_mask
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
    clone = copy.deepcopy(model)
    x = torch.randn(2, 17)
    assert torch.equal(clone[0](x), model[0](x))
    prune.remove(model[0], "weight")


def test_unsupported_criterion_and_bad_strategy_are_refused():
    class NoRank(PruningCriterion):
        name = "no-rank"

        def compute_mask(self, scores, default_mask):
            return torch.ones_like(scores, dtype=torch.bool)

    model = make_model()
    with pytest.raises(InvalidArgumentError, match="does not support strategy='streaming'"):
        GlobalPruningContext(model, NoRank(), strategy="streaming")
    with pytest.raises(InvalidArgumentError, match="strategy='fast'"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy="fast")


def test_failure_in_second_criterion_leaves_model_untouched():
    class Fails(SignedScores):
        name = "fails"

        def importance_scores(self, module, name):
            raise RuntimeError("plugin exploded")

    model = make_model()
    before = model_state(model)
    ctx = GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.5), Fails(0.2)], strategy="streaming"
    )
    with pytest.raises(RuntimeError, match="plugin exploded"):
        ctx.prune()
    assert model_state(model) == before


def test_select_kth_matches_sorting_on_signed_keys():
    gen = torch.Generator().manual_seed(0)
    chunks = [
        torch.randint(-(2**31), 2**31, (n,), generator=gen, dtype=torch.int32) for n in (5, 300, 77)
    ]
    flat = torch.cat(chunks).to(torch.int64).sort().values
    for k in (1, 2, 100, 381, 382):
        key, less = select_kth(lambda: iter([(c, None) for c in chunks]), k, 32)
        assert key == int(flat[k - 1])
        assert less == int((flat < key).sum())


# --- chunks, the sampled window, its fallback, reduce (issue 13) ----------------------------

from prunefw.contexts import streaming as _streaming  # noqa: E402
from prunefw.selection import select_ranks  # noqa: E402


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 64 entries and a sample of 16 keys, so small models take every path."""
    from prunefw import _radix

    monkeypatch.setattr(_radix, "CHUNK", 64)
    monkeypatch.setattr(_radix, "SAMPLE", 16)


def big_model(seed: int = 0, quantum: float | None = None, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(61, 37), nn.Conv1d(3, 5, 4), nn.Linear(37, 29)).to(dtype)
    if quantum is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_((p / quantum).round() * quantum)
    return model


@pytest.mark.parametrize("criteria", CASES)
@pytest.mark.parametrize("quantum", [None, 0.02, 1.0])
def test_chunked_and_sampled_selection_gives_the_default_masks(tiny_chunks, criteria, quantum):
    default, streaming = both(criteria, lambda: big_model(quantum=quantum))
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_chunked_selection_in_other_dtypes_on_top_of_earlier_pruning(tiny_chunks, dtype):
    def model_factory():
        model = big_model(1, quantum=0.01, dtype=dtype)
        GlobalPruningContext(model, RandomCriterion(0.3, seed=1), strategy="streaming").prune()
        return model

    default, streaming = both(
        lambda: [MagnitudeCriterion(amount=0.4), PercentileCriterion(0.1, 0.8), SignedScores(0.3)],
        model_factory,
    )
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


def test_a_misleading_sample_falls_back_to_the_radix_select(tiny_chunks, monkeypatch):
    calls = []

    def wrong_window(sample, rank, n):
        calls.append(rank)
        return int(sample.max()) + 1, None  # above every key: the k-th is below it

    monkeypatch.setattr(_streaming, "sample_window", wrong_window)
    default, streaming = both(
        lambda: [MagnitudeCriterion(amount=0.5), PercentileCriterion(0.2, 0.7)],
        lambda: big_model(quantum=0.02),
    )
    assert calls  # the window was used, missed, and the radix select took over
    for a, b in zip(masks(default), masks(streaming), strict=True):
        assert torch.equal(a, b)


def test_reduce_hook_sees_the_count_and_every_histogram(tiny_chunks):
    from prunefw.contexts.base import PruningContext

    seen = []

    def reduce(t: torch.Tensor) -> torch.Tensor:
        seen.append((t.dtype, tuple(t.shape)))
        return t

    model, reference = big_model(quantum=0.05), big_model(quantum=0.05)
    ctx = GlobalPruningContext(model, PercentileCriterion(0.1, 0.9), strategy="streaming")

    class Reducing(PruningContext):  # the context's prune(), streaming with a reduce hook
        targets, model, steps = ctx.targets, ctx.model, ctx.steps

        def _prune(self, step_done):
            _streaming.prune_streaming(ctx._criteria[0], self.targets, reduce=reduce)

    Reducing().prune()
    GlobalPruningContext(reference, PercentileCriterion(0.1, 0.9)).prune()
    assert seen[0] == (torch.int64, (1,))  # the survivor count
    # then the radix select: 2 passes (32-bit keys), each one call with both ranks' rows
    assert [s for _, s in seen[1:]] in ([(1, 65536), (2, 65536)], [(1, 65536), (1, 65536)])
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b)


def test_select_kth_reduce_makes_ranks_global():
    """Two processes holding the same keys: a SUM reduce doubles every count."""
    gen = torch.Generator().manual_seed(2)
    keys = torch.randint(-1000, 1000, (5000,), generator=gen, dtype=torch.int32)
    doubled = torch.cat([keys, keys]).to(torch.int64).sort().values
    calls = []

    def reduce(h):
        calls.append(h.shape)
        return 2 * h

    for k in (1, 2, 3, 4999, 5000, 10_000):
        key, less = select_kth(lambda: iter([(keys, None)]), k, 32, reduce=reduce)
        assert key == int(doubled[k - 1])
        assert less == int((doubled < key).sum())
    assert len(calls) == 6 * 2  # one call per pass, two passes per select


def test_select_ranks_shares_passes_and_respects_survivors():
    gen = torch.Generator().manual_seed(3)
    keys = torch.randint(-(2**31), 2**31, (3000,), generator=gen, dtype=torch.int64)
    alive = torch.rand(3000, generator=gen) < 0.6
    chunks = [(keys[:1000], alive[:1000]), (keys[1000:], alive[1000:])]
    survivors = keys[alive].sort().values
    ranks = [1, 17, survivors.numel() // 2, survivors.numel()]
    got = select_ranks(lambda: iter(chunks), ranks, 64)
    for (key, less), k in zip(got, ranks, strict=True):
        assert key == int(survivors[k - 1]) and less == int((survivors < key).sum())
    with pytest.raises(ValueError, match="out of range"):
        select_ranks(lambda: iter(chunks), [survivors.numel() + 1], 64)


def test_masks_are_written_once_in_place_no_custom_from_mask(monkeypatch):
    """Streaming builds torch's reparametrization with its final mask directly."""
    calls = []
    monkeypatch.setattr(prune, "custom_from_mask", lambda *a, **k: calls.append(a))
    model, reference = make_model(), make_model()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy="streaming").prune()
    GlobalPruningContext(reference, MagnitudeCriterion(amount=0.3), strategy="streaming").prune()
    assert calls == []
    for module in (model[0], model[2], model[3]):
        assert module.weight_mask.dtype == torch.float32
        assert isinstance(next(iter(module._forward_pre_hooks.values())), prune.CustomFromMask)
    # On top of earlier pruning: a PruningContainer, exactly as custom_from_mask makes it.
    GlobalPruningContext(reference, MagnitudeCriterion(amount=0.3), strategy="streaming").prune()
    hook = next(iter(reference[0]._forward_pre_hooks.values()))
    assert isinstance(hook, prune.PruningContainer) and len(hook._pruning_methods) == 2
    assert all(m.mask is reference[0].weight_mask for m in hook._pruning_methods)
    assert reference[0].weight.grad_fn is not None  # recomputed with autograd, like torch's


def test_failure_after_masks_were_installed_leaves_model_untouched(monkeypatch):
    installed = []
    real = _streaming.install_mask

    def spy(module, name, mask):
        installed.append(module)
        real(module, name, mask)

    monkeypatch.setattr(_streaming, "install_mask", spy)

    class FailsLate(SignedScores):
        name = "fails-late"

        def importance_scores(self, module, name):
            if len(installed) >= 2:
                raise RuntimeError("scores failed after two masks")
            return super().importance_scores(module, name)

    for prior in (False, True):
        model = make_model()
        if prior:
            GlobalPruningContext(
                model, MagnitudeCriterion(amount=0.2), strategy="streaming"
            ).prune()
        before = model_state(model)
        installed.clear()
        ctx = GlobalPruningContext(
            model, [MagnitudeCriterion(amount=0.3), FailsLate(0.2)], strategy="streaming"
        )
        with pytest.raises(RuntimeError, match="after two masks"):
            ctx.prune()
        assert len(installed) >= 2
        assert model_state(model) == before


def test_threads_setting_of_the_caller_is_kept():
    before = torch.get_num_threads()
    GlobalPruningContext(make_model(), MagnitudeCriterion(amount=0.5), strategy="streaming").prune()
    assert torch.get_num_threads() == before


def test_the_sampled_window_usually_decides_alone(tiny_chunks, monkeypatch):
    radix = []
    monkeypatch.setattr(
        _streaming, "select_ranks", lambda *a, **k: radix.append(a) or select_ranks(*a, **k)
    )
    for seed in range(5):
        default, streaming = both(
            lambda: [MagnitudeCriterion(amount=0.5)], lambda s=seed: big_model(s)
        )
        for a, b in zip(masks(default), masks(streaming), strict=True):
            assert torch.equal(a, b)
    assert len(radix) <= 1  # a 6-sigma window: the fallback is for rare misses
