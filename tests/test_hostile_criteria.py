"""The hostile pass as a property: random misbehaving criteria through every context.

Whatever a criterion does (mutate the tensors it is handed, raise at any call, return
malformed masks or scores), a prune either prunes exactly what a well-behaved
criterion would, or raises and leaves the model bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from prunefw import GlobalPruningContext, LayerPruningContext, PruningCriterion, RankSelection
from prunefw.errors import PrunefwError
from prunefw.selection import smallest_k
from prunefw.testing import ModelSnapshot


class Injected(RuntimeError):
    """The failure a hostile criterion raises on purpose."""


BAD_MASKS = ("half", "nan", "shape", "list", "two")


@dataclass
class Behaviour:
    mutate: bool  # write into the scores and default mask it is handed
    raise_at: int | None  # raise on this call of compute_mask / importance_scores
    bad_mask: str | None  # return a malformed mask on the first call
    bad_scores: bool  # importance_scores of the wrong shape
    count: int  # how many entries to prune (of each tensor, or globally)


class Hostile(PruningCriterion):
    """Prunes the ``count`` smallest magnitudes, misbehaving as told."""

    name = "hostile"

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.calls = 0

    def _tick(self) -> None:
        self.calls += 1
        if self.behaviour.raise_at == self.calls:
            raise Injected(f"call {self.calls}")

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor | None:
        self._tick()
        if self.behaviour.bad_scores:
            return torch.ones(3)
        return None

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        self._tick()
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[smallest_k(scores, min(self.behaviour.count, scores.numel()))] = False
        if self.behaviour.mutate:
            scores.zero_()
            default_mask.zero_()
        bad = self.behaviour.bad_mask
        if bad == "half":
            return keep.float() * 0.5
        if bad == "nan":
            return keep.float() * float("nan")
        if bad == "shape":
            return keep[:-1]
        if bad == "list":
            return keep.tolist()  # type: ignore[return-value]
        if bad == "two":
            return keep.float() * 2
        return keep

    def rank_selection(self, n: int) -> RankSelection:
        self._tick()
        return RankSelection(smallest=min(self.behaviour.count, n))


behaviours = st.builds(
    Behaviour,
    mutate=st.booleans(),
    raise_at=st.one_of(st.none(), st.integers(1, 6)),
    bad_mask=st.one_of(st.none(), st.none(), st.sampled_from(BAD_MASKS)),
    bad_scores=st.sampled_from([False, False, False, True]),
    count=st.integers(0, 40),
)


def model_with_history(seed: int, earlier: int) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    if earlier:
        good = Hostile(Behaviour(False, None, None, False, earlier))
        LayerPruningContext({model[0]: good, model[2]: good}, model=model).prune()
    return model


def pruned(model: nn.Sequential) -> int:
    return sum(int((m.weight_mask == 0).sum()) for m in (model[0], model[2]))


def check(model: nn.Sequential, ctx_factory, behaviour: Behaviour, expected: int) -> None:
    before = ModelSnapshot.take(model)
    try:
        ctx_factory(model, Hostile(behaviour)).prune()
    except (PrunefwError, Injected):
        assert before.diff(ModelSnapshot.take(model)) == []
        return
    assert pruned(model) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(behaviour=behaviours, seed=st.integers(0, 3), earlier=st.integers(0, 4))
def test_layer_context_exact_or_unchanged(behaviour, seed, earlier):
    model = model_with_history(seed, earlier)
    already = 2 * earlier
    sizes = [30 - earlier, 20 - earlier]
    expected = already + sum(min(behaviour.count, n) for n in sizes)
    check(
        model,
        lambda m, c: LayerPruningContext({m[0]: c, m[2]: c}, model=m),
        behaviour,
        expected,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    behaviour=behaviours,
    seed=st.integers(0, 3),
    earlier=st.integers(0, 4),
    strategy=st.sampled_from(["global_unstructured", "streaming"]),
)
def test_global_context_exact_or_unchanged(behaviour, seed, earlier, strategy):
    model = model_with_history(seed, earlier)
    already = 2 * earlier
    remaining = 50 - already
    expected = already + min(behaviour.count, remaining)
    check(
        model,
        lambda m, c: GlobalPruningContext(m, c, strategy=strategy),
        behaviour,
        expected,
    )
