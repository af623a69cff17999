"""GradualPruner: the curve, exact cumulative sparsity, resume, arguments, a digits run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import make_mlp, pruned_counts
from torch import nn

from prunefw import (
    GlobalPruningContext,
    GradualPruner,
    LayerPruningContext,
    MagnitudeCriterion,
    RandomCriterion,
    load_pruned_state_dict,
)
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.examples import accuracy, digits_mlp, load_digits_data, train


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def global_factory(model: nn.Module):
    return lambda amount: GlobalPruningContext(model, MagnitudeCriterion(amount=amount))


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight_mask.clone() for m in linears(model)]


# --- the curve ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("si", "sf", "t0", "end", "dt"), [(0.0, 0.9, 0, 100, 10), (0.2, 0.8, 5, 35, 3)]
)
def test_cubic_curve_matches_zhu_gupta_at_every_step(mlp, si, sf, t0, end, dt):
    pruner = GradualPruner(
        global_factory(mlp),
        initial_sparsity=si,
        final_sparsity=sf,
        start_step=t0,
        end_step=end,
        frequency=dt,
    )
    for t in range(end + 10):
        if t < t0:
            expected = si
        elif t <= end:
            expected = sf + (si - sf) * (1 - (t - t0) / (end - t0)) ** 3
        else:
            expected = sf
        assert pruner.sparsity_at(t) == pytest.approx(expected, abs=1e-12)


def test_linear_constant_and_callable_curves(mlp):
    f = global_factory(mlp)
    linear = GradualPruner(f, initial_sparsity=0.1, final_sparsity=0.5, end_step=10, curve="linear")
    const = GradualPruner(f, final_sparsity=0.5, start_step=2, end_step=10, curve="constant")
    custom = GradualPruner(f, final_sparsity=0.5, end_step=10, curve=lambda p: p**2)
    for t in range(12):
        p = min(t, 10) / 10
        assert linear.sparsity_at(t) == pytest.approx(0.1 + 0.4 * p)
        assert const.sparsity_at(t) == (0.0 if t < 2 else 0.5)
        assert custom.sparsity_at(t) == pytest.approx(0.5 * p**2)


def test_pruning_events_follow_frequency_and_include_end(mlp):
    pruner = GradualPruner(
        global_factory(mlp), final_sparsity=0.5, start_step=3, end_step=10, frequency=3
    )
    assert [t for t in range(15) if pruner.is_pruning_step(t)] == [3, 6, 9, 10]


# --- exact cumulative sparsity -----------------------------------------------------------


@pytest.mark.parametrize("amount_type", ["fraction", "count"])
@pytest.mark.parametrize("curve", ["cubic", "linear"])
def test_global_context_lands_exactly_at_every_event(amount_type, curve):
    model = make_mlp()
    pruner = GradualPruner(
        global_factory(model),
        initial_sparsity=0.05,
        final_sparsity=0.93,
        end_step=40,
        frequency=3,
        curve=curve,
        amount_type=amount_type,
    )
    total = sum(n for _, n in pruned_counts(model))
    previous = [torch.ones_like(m.weight) for m in linears(model)]
    events = 0
    for t in range(45):
        pruner.step()
        if pruner.is_pruning_step(t):
            events += 1
            assert sum(p for p, _ in pruned_counts(model)) == round(pruner.sparsity_at(t) * total)
        # never un-prunes: every pruned entry stays pruned
        current = masks(model) if pruner.sparsity() else previous
        for before, after in zip(previous, current, strict=True):
            assert not bool(((before == 0) & (after != 0)).any())
        previous = current
    assert events == 15
    assert pruner.sparsity() == pytest.approx(0.93, abs=0.5 / total)


def test_random_criterion_fraction_lands_exactly():
    model = make_mlp()
    crit_seed = iter(range(1000))
    pruner = GradualPruner(
        lambda a: GlobalPruningContext(model, RandomCriterion(a, seed=next(crit_seed))),
        final_sparsity=0.77,
        end_step=20,
        frequency=2,
    )
    total = sum(n for _, n in pruned_counts(model))
    for t in range(21):
        pruner.step()
        if pruner.is_pruning_step(t):
            assert sum(p for p, _ in pruned_counts(model)) == round(pruner.sparsity_at(t) * total)


@pytest.mark.parametrize("amount_type", ["fraction", "count"])
def test_layer_context_per_tensor_lands_exactly_per_tensor(amount_type):
    model = make_mlp()
    keys = [(m, "weight") for m in linears(model)]
    pruner = GradualPruner(
        lambda amounts: LayerPruningContext(
            {key: MagnitudeCriterion(amount=amounts[key]) for key in keys}, model=model
        ),
        final_sparsity=0.85,
        end_step=30,
        frequency=4,
        amount_type=amount_type,
        per_tensor=True,
    )
    for t in range(31):
        pruner.step()
        if pruner.is_pruning_step(t):
            for pruned, n in pruned_counts(model):
                assert pruned == round(pruner.sparsity_at(t) * n)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_sparsity_amounts_pass_the_target_itself(per_tensor):
    """``amount_type="sparsity"`` is for criteria whose parameter is the sparsity to reach."""
    model = make_mlp()
    keys = [(m, "weight") for m in linears(model)]
    received = []

    def factory(amount):
        received.append(amount)
        amounts = amount if per_tensor else dict.fromkeys(keys, amount)
        # A criterion that takes a target: prune up to round(target * n) in every tensor.
        return LayerPruningContext(
            {
                key: MagnitudeCriterion(
                    amount=max(0, round(amounts[key] * key[0].weight.numel()) - pruned)
                )
                for key, (pruned, _) in zip(keys, pruned_counts(model), strict=True)
            },
            model=model,
        )

    pruner = GradualPruner(
        factory,
        final_sparsity=0.7,
        end_step=10,
        frequency=5,
        curve="linear",
        amount_type="sparsity",
        per_tensor=per_tensor,
    )
    for _ in range(12):
        pruner.step()
    expected = [0.35, 0.7]  # the events at 5 and 10; at 0 nothing is missing
    if per_tensor:
        assert received[1:] == [dict.fromkeys(keys, s) for s in expected]
        assert received[0] == dict.fromkeys(keys, 0.0)  # the probe at construction
    else:
        assert received == [0.0, *expected]
    for pruned, n in pruned_counts(model):
        assert pruned == round(0.7 * n)


def test_layer_context_single_tensor_scalar_lands_exactly():
    model = make_mlp()
    pruner = GradualPruner(
        lambda a: LayerPruningContext({"0": MagnitudeCriterion(amount=a)}, model=model),
        final_sparsity=0.6,
        end_step=12,
        frequency=1,
    )
    for t in range(13):
        pruner.step()
        assert pruned_counts(model)[0][0] == round(pruner.sparsity_at(t) * 600)


def test_never_unprunes_when_the_curve_goes_down(mlp):
    pruner = GradualPruner(
        global_factory(mlp), final_sparsity=0.8, end_step=4, curve=lambda p: 1.0 - p
    )
    assert pruner.step() is True  # t=0: 0.8
    before = masks(mlp)
    for _ in range(4):
        assert pruner.step() is False
    for a, b in zip(before, masks(mlp), strict=True):
        assert torch.equal(a, b)
    assert pruner.sparsity() == pytest.approx(0.8, abs=1e-3)


# --- training and resume ---------------------------------------------------------------


def train_steps(model, pruner, optimizer, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=generator)
    y = torch.randint(0, 3, (256,), generator=generator)
    for i in range(steps):
        batch = slice((i % 8) * 32, (i % 8 + 1) * 32)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
        pruner.step()


def test_same_parameters_and_optimizer_keeps_training():
    model = make_mlp()
    params = {id(p) for p in model.parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = GradualPruner(global_factory(model), final_sparsity=0.7, end_step=20, frequency=5)
    first = linears(model)[0]
    train_steps(model, pruner, optimizer, 10)
    orig_before = first.weight_orig.detach().clone()
    train_steps(model, pruner, optimizer, 15)
    assert {id(p) for p in model.parameters()} == params
    assert not torch.equal(first.weight_orig.detach(), orig_before)  # still being updated
    assert bool((first.weight[first.weight_mask == 0] == 0).all())
    assert pruner.sparsity() == pytest.approx(0.7, abs=1e-3)


def test_resume_from_state_dict_continues_the_same_curve():
    def fresh():
        model = make_mlp(seed=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return model, opt

    def make_pruner(model):
        return GradualPruner(global_factory(model), final_sparsity=0.9, end_step=30, frequency=4)

    model_a, opt_a = fresh()
    pruner_a = make_pruner(model_a)
    train_steps(model_a, pruner_a, opt_a, 13)
    state = {k: v.clone() for k, v in model_a.state_dict().items()}  # a checkpoint
    pruner_state = pruner_a.state_dict()
    train_steps(model_a, pruner_a, opt_a, 27, seed=1)

    model_b, _ = fresh()
    load_pruned_state_dict(model_b, state)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1)
    pruner_b = make_pruner(model_b)
    pruner_b.load_state_dict(pruner_state)
    assert pruner_b.step_count == 13
    train_steps(model_b, pruner_b, opt_b, 27, seed=1)

    model_c, opt_c = fresh()  # uninterrupted
    pruner_c = make_pruner(model_c)
    train_steps(model_c, pruner_c, opt_c, 13)
    train_steps(model_c, pruner_c, opt_c, 27, seed=1)

    for a, b, c in zip(masks(model_a), masks(model_b), masks(model_c), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert pruner_b.state_dict() == pruner_c.state_dict()


def test_a_checkpoint_of_model_optimizer_and_pruner_resumes_bit_for_bit(tmp_path):
    """Model, Adam and pruner saved mid-run: the resumed run equals the uninterrupted one."""

    def fresh():
        model = make_mlp(seed=7)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # built before pruning
        pruner = GradualPruner(global_factory(model), final_sparsity=0.8, end_step=24, frequency=3)
        return model, optimizer, pruner

    model_a, opt_a, pruner_a = fresh()
    train_steps(model_a, pruner_a, opt_a, 10)
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "model": model_a.state_dict(),
            "optimizer": opt_a.state_dict(),
            "pruner": pruner_a.state_dict(),
        },
        path,
    )

    model_b, opt_b, pruner_b = fresh()
    saved = torch.load(path, weights_only=True)
    load_pruned_state_dict(model_b, saved["model"])
    opt_b.load_state_dict(saved["optimizer"])
    pruner_b.load_state_dict(saved["pruner"])
    train_steps(model_b, pruner_b, opt_b, 20, seed=1)

    model_c, opt_c, pruner_c = fresh()  # uninterrupted
    train_steps(model_c, pruner_c, opt_c, 10)
    train_steps(model_c, pruner_c, opt_c, 20, seed=1)

    state_b, state_c = model_b.state_dict(), model_c.state_dict()
    assert list(state_b) == list(state_c)
    for key in state_c:
        assert torch.equal(state_b[key], state_c[key]), key
    assert pruner_b.sparsity() == pruner_c.sparsity() == pytest.approx(0.8, abs=1e-3)
    # the optimizer state went on from the checkpoint (Adam's step counts)
    steps = {int(v["step"]) for v in opt_b.state_dict()["state"].values()}
    assert steps == {30}


def test_load_state_dict_refuses_other_settings(mlp):
    saved = GradualPruner(global_factory(mlp), final_sparsity=0.9, end_step=30).state_dict()
    other = GradualPruner(global_factory(mlp), final_sparsity=0.8, end_step=30)
    with pytest.raises(InvalidArgumentError, match="final_sparsity"):
        other.load_state_dict(saved)
    with pytest.raises(InvalidArgumentError, match="step_count"):
        other.load_state_dict({})


# --- bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"initial_sparsity": 0.5, "final_sparsity": 0.4},
            InvalidArgumentError,
            "final_sparsity=0.4",
        ),
        ({"start_step": 10, "end_step": 10}, InvalidArgumentError, "zero pruning steps"),
        ({"start_step": 10, "end_step": 5}, InvalidArgumentError, "end_step=5"),
        ({"frequency": 0}, InvalidArgumentError, "frequency=0"),
        ({"final_sparsity": 1.5}, InvalidArgumentError, "final_sparsity=1.5"),
        ({"start_step": -1}, InvalidArgumentError, "start_step=-1"),
        ({"curve": "quadratic"}, InvalidArgumentError, "curve='quadratic'"),
        ({"amount_type": "percent"}, InvalidArgumentError, "amount_type='percent'"),
        ({"frequency": 2.0}, InvalidTypeError, "frequency=2.0"),
        ({"final_sparsity": "0.9"}, InvalidTypeError, "final_sparsity='0.9'"),
        ({"curve": 3}, InvalidTypeError, "curve=3"),
        ({"per_tensor": 1}, InvalidTypeError, "per_tensor=1"),
    ],
)
def test_bad_arguments_are_rejected(mlp, kwargs, error, match):
    settings = {"final_sparsity": 0.9, "end_step": 100} | kwargs
    with pytest.raises(error, match=match):
        GradualPruner(global_factory(mlp), **settings)


def test_bad_factory_and_curve_values(mlp):
    with pytest.raises(InvalidTypeError, match="context_factory"):
        GradualPruner("magnitude", final_sparsity=0.5, end_step=10)
    with pytest.raises(InvalidTypeError, match="returned dict"):
        GradualPruner(lambda a: {}, final_sparsity=0.5, end_step=10)
    pruner = GradualPruner(
        global_factory(mlp), final_sparsity=0.5, end_step=10, curve=lambda p: 2.0
    )
    with pytest.raises(InvalidArgumentError, match=r"returned 2\.0"):
        pruner.step()
    first = linears(mlp)[0]
    built = []

    def shifting_factory(amount):  # one tensor at construction, all of them afterwards
        built.append(amount)
        if len(built) == 1:
            return LayerPruningContext({first: MagnitudeCriterion(amount=amount)})
        return GlobalPruningContext(mlp, MagnitudeCriterion(amount=amount))

    shifting = GradualPruner(shifting_factory, final_sparsity=0.5, end_step=10)
    assert shifting.step() is False  # t=0: target 0, nothing to build
    with pytest.raises(InvalidArgumentError, match="targets differ"):
        shifting.step()
    assert not hasattr(first, "weight_mask")


# --- a short digits run -----------------------------------------------------------------


def test_digits_gradual_pruning_recovers_accuracy():
    data = load_digits_data()
    batches_per_epoch = -(-len(data.train_x) // 64)

    def run(pruner_for=None, epochs=20):
        model = digits_mlp(seed=0)
        pruner = pruner_for(model) if pruner_for else None
        history = []

        def on_step():
            pruner.step()
            if pruner.step_count % batches_per_epoch == 0:
                history.append(pruner.sparsity())  # at the end of every epoch

        train(model, data, epochs=epochs, lr=3e-3, seed=0, on_step=on_step if pruner else None)
        return accuracy(model, data.test_x, data.test_y), history

    dense, _ = run()
    end = 12 * batches_per_epoch
    sparse, history = run(
        lambda model: GradualPruner(
            global_factory(model),
            final_sparsity=0.9,
            end_step=end,
            frequency=batches_per_epoch // 2,
        )
    )
    assert dense > 0.9
    assert len(history) == 20
    assert history == sorted(history)  # rising, never un-pruned
    assert history[0] > 0.0 and history[-1] == pytest.approx(0.9, abs=1e-4)
    assert sparse >= dense - 0.03, (dense, sparse)


# --- the docs ---------------------------------------------------------------------------


def test_gradual_docs_examples_run():
    text = (Path(__file__).resolve().parent.parent / "docs" / "gradual.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/gradual.md", "exec"), {})
