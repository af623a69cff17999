"""Recipes with a ``[schedule]``: parsing, validation, ``gradual_pruner``, refusals, the CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import make_mlp, model_state, pruned_counts
from torch import nn

from prunefw import GlobalPruningContext, GradualPruner, MagnitudeCriterion, load_pruned_state_dict
from prunefw.cli import main
from prunefw.errors import InvalidTypeError, NonFiniteWeightsError, RecipeError
from prunefw.examples import DIGITS_GRADUAL_RECIPE, digits_mlp
from prunefw.recipes import (
    SCHEDULE_KEYS,
    Recipe,
    ScheduleSection,
    apply_recipe,
    gradual_pruner,
    load_recipe,
)

ROOT = Path(__file__).resolve().parent.parent

GLOBAL = """\
[global]
criteria = ["magnitude"]
module_types = ["Linear"]
{schedule}"""

SCHEDULE = """
[schedule]
final_sparsity = 0.8
end_step = 12
frequency = 3
"""


def recipe(text: str = GLOBAL.format(schedule=SCHEDULE)) -> Recipe:
    return Recipe.from_toml(text, source="r.toml")


def assert_same_masks(model: nn.Module, other: nn.Module) -> None:
    """The two models have the same Linear weight masks (and unpruned tensors alike)."""
    assert pruned_counts(model) == pruned_counts(other)
    for a, b in zip(model.modules(), other.modules(), strict=True):
        if isinstance(a, nn.Linear) and hasattr(a, "weight_mask"):
            assert torch.equal(a.weight_mask, b.weight_mask)


def run(pruner: GradualPruner, steps: int) -> list[float]:
    """Call ``step()`` ``steps`` times; return the sparsity after each call."""
    history = []
    for _ in range(steps):
        pruner.step()
        history.append(pruner.sparsity())
    return history


# --- parsing -----------------------------------------------------------------------------


def test_every_schedule_key_is_parsed_and_round_trips():
    text = GLOBAL.format(
        schedule="""
[schedule]
final_sparsity = 0.9
end_step = 40
initial_sparsity = 0.1
start_step = 4
frequency = 2
curve = "linear"
parameter = "amount"
amount_type = "count"
"""
    )
    parsed = recipe(text)
    assert parsed.schedule == ScheduleSection(
        final_sparsity=0.9,
        end_step=40,
        initial_sparsity=0.1,
        start_step=4,
        frequency=2,
        curve="linear",
        parameter="amount",
        amount_type="count",
    )
    assert set(parsed.to_dict()["schedule"]) == set(SCHEDULE_KEYS) - {"parameter"}  # default
    assert Recipe.from_dict(parsed.to_dict(), source="r.toml") == parsed


def test_defaults_and_int_sparsities():
    parsed = recipe(GLOBAL.format(schedule="[schedule]\nfinal_sparsity = 1\nend_step = 5\n"))
    assert parsed.schedule == ScheduleSection(final_sparsity=1.0, end_step=5)
    assert isinstance(parsed.schedule.final_sparsity, float)
    assert parsed.schedule.to_dict() == {"final_sparsity": 1.0, "end_step": 5}


BAD_SCHEDULES = [
    ("final_sparsity = 0.5\nend_step = 3\nfrequency = 0", "[schedule] frequency = 0: must be >= 1"),
    ("final_sparsity = 0.5\nend_step = 0", "[schedule] end_step = 0: must be > start_step=0"),
    ("final_sparsity = 0.5\nend_step = 5\nstart_step = 5", "end_step = 5: must be > start_step"),
    ("final_sparsity = 0.5\nend_step = 3\ninitial_sparsity = 0.7", "final_sparsity = 0.5: must "),
    ("final_sparsity = 1.5\nend_step = 3", "final_sparsity = 1.5: must be a fraction in [0, 1]"),
    ("final_sparsity = 0.5\nend_step = 2.5", "end_step = 2.5: expected an int"),
    ("final_sparsity = 0.5\nend_step = 3\ncurve = 'cubik'", "curve = 'cubik': expected one of"),
    ("final_sparsity = 0.5\nend_step = 3\ncurve = 3", "curve must be a non-empty string"),
    ("final_sparsity = 0.5\nend_step = 3\namount_type = 'percent'", "amount_type = 'percent'"),
    ("final_sparsity = 0.5\nend_step = 3\nparameter = ''", "parameter must be a non-empty"),
    ("final_sparsity = 0.5\nend_step = 3\nfrequncy = 2", "unknown key 'frequncy'"),
    ("final_sparsity = 0.5", "[schedule] no end_step"),
    ("end_step = 3", "[schedule] no final_sparsity"),
]


@pytest.mark.parametrize(("body", "message"), BAD_SCHEDULES, ids=[m for _, m in BAD_SCHEDULES])
def test_bad_schedules_are_refused_naming_the_value_and_the_fix(body, message):
    with pytest.raises(RecipeError) as info:
        recipe(GLOBAL.format(schedule=f"[schedule]\n{body}\n"))
    text = str(info.value)
    assert text.startswith("r.toml: ")
    assert message in text
    assert "Fix: " in text


def test_misspelled_key_suggests_the_right_one():
    with pytest.raises(RecipeError, match="did you mean 'frequency'"):
        recipe(GLOBAL.format(schedule="[schedule]\nfinal_sparsity=0.5\nend_step=3\nfrequncy=2"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[global]\ncriteria = [{ name = "magnitude", amount = 0.3 }]' + SCHEDULE,
            "'magnitude' sets amount = 0.3, but the [schedule] sets amount",
        ),
        (
            '[global]\ncriteria = [{ name = "percentile", lower = 0.1, upper = 0.9 }]' + SCHEDULE,
            "'percentile' has no parameter 'amount' for the [schedule] to set",
        ),
        (
            '[global]\ncriteria = [{ name = "random", seed = 0 }]' + SCHEDULE,
            "Fix: set parameter in [schedule] to the keyword of the criterion's amount: "
            "random(prune_ratio, seed=None)",
        ),
        (
            '[global]\ncriteria = ["magnitude", "magnitude"]' + SCHEDULE,
            "[global] 2 criteria in a scheduled recipe",
        ),
        (
            '[global]\ncriteria = ["magnitude"]\n[[layer]]\nmatch = "0"\ncriteria = ["magnitude"]'
            + SCHEDULE,
            "[schedule] a scheduled recipe has both a [global] section and [[layer]] rules",
        ),
        (
            '[global]\ncriteria = [{ name = "magnitude", min_threshold = 0.1 }]' + SCHEDULE,
            "'magnitude': bad parameters",  # amount and min_threshold are exclusive
        ),
    ],
)
def test_criteria_the_schedule_cannot_steer_are_refused(text, message):
    with pytest.raises(RecipeError) as info:
        recipe(text)
    assert message in str(info.value)


# --- gradual_pruner ------------------------------------------------------------------------


def test_global_schedule_follows_the_curve_exactly_and_equals_a_hand_built_pruner():
    model = make_mlp(seed=1)
    twin = copy.deepcopy(model)
    pruner = gradual_pruner(model, recipe())
    assert isinstance(pruner, GradualPruner)
    assert (pruner.final_sparsity, pruner.end_step, pruner.frequency) == (0.8, 12, 3)
    assert not pruner.per_tensor
    hand = GradualPruner(
        lambda amount: GlobalPruningContext(twin, MagnitudeCriterion(amount=amount)),
        final_sparsity=0.8,
        end_step=12,
        frequency=3,
    )
    total = sum(n for _, n in pruned_counts(model))
    for t in range(15):
        assert pruner.step() == hand.step()
        if pruner.is_pruning_step(t):
            assert sum(p for p, _ in pruned_counts(model)) == round(pruner.sparsity_at(t) * total)
        assert_same_masks(model, twin)
    assert pruner.sparsity() == round(0.8 * total) / total


def test_a_streaming_global_section_lands_on_the_same_masks():
    streaming = GLOBAL.replace('module_types = ["Linear"]', 'strategy = "streaming"')
    model_a, model_b = make_mlp(seed=8), make_mlp(seed=8)
    pruner_a = gradual_pruner(model_a, recipe(GLOBAL.format(schedule=SCHEDULE)))
    pruner_b = gradual_pruner(model_b, recipe(streaming.format(schedule=SCHEDULE)))
    run(pruner_a, 13)
    run(pruner_b, 13)
    assert_same_masks(model_a, model_b)


def test_global_schedule_prunes_only_the_selected_tensors():
    text = """
[global]
criteria = ["magnitude"]
include = ["features.*"]
[schedule]
final_sparsity = 0.9
end_step = 4
"""
    model = digits_mlp()
    pruner = gradual_pruner(model, recipe(text))
    run(pruner, 5)
    assert [key[0] for key in pruner.targets] == [model.features[0], model.features[2]]
    assert not hasattr(model.classifier, "weight_mask")
    pruned = sum(int((m.weight_mask == 0).sum()) for m in (model.features[0], model.features[2]))
    assert pruned == round(0.9 * (64 * 128 + 128 * 64))


def test_layer_rules_make_every_tensor_follow_the_curve_on_its_own():
    text = """
[[layer]]
match = "features.*"
criteria = ["magnitude"]
[[layer]]
match = "classifier"
criteria = [{ name = "random", seed = 3 }]
[schedule]
final_sparsity = 0.5
end_step = 6
frequency = 2
curve = "linear"
parameter = "prune_ratio"
"""
    with pytest.raises(RecipeError, match="'magnitude' has no parameter 'prune_ratio'"):
        recipe(text)
    text = text.replace('criteria = ["magnitude"]', 'criteria = [{ name = "random", seed = 1 }]')
    model = digits_mlp()
    pruner = gradual_pruner(model, recipe(text))
    assert pruner.per_tensor
    for t in range(8):
        pruner.step()
        target = pruner.sparsity_at(min(t - t % 2, 6))
        for pruned, n in pruned_counts(model):
            assert pruned == round(target * n)
    assert [p for p, _ in pruned_counts(model)] == [4096, 4096, 320]


def test_count_amounts_and_a_constant_curve():
    text = GLOBAL.format(
        schedule="""
[schedule]
final_sparsity = 0.6
start_step = 2
end_step = 5
curve = "constant"
amount_type = "count"
"""
    )
    model = make_mlp(seed=2)
    total = sum(n for _, n in pruned_counts(model))
    history = run(gradual_pruner(model, recipe(text)), 7)
    assert history[:2] == [0.0, 0.0]
    assert history[2:] == [round(0.6 * total) / total] * 5


def test_resume_continues_the_same_curve():
    model_a, model_b = make_mlp(seed=4), make_mlp(seed=4)
    pruner_a = gradual_pruner(model_a, recipe())
    run(pruner_a, 5)
    state = {k: v.clone() for k, v in model_a.state_dict().items()}
    pruner_state = pruner_a.state_dict()
    run(pruner_a, 10)

    load_pruned_state_dict(model_b, state)
    pruner_b = gradual_pruner(model_b, recipe())
    pruner_b.load_state_dict(pruner_state)
    run(pruner_b, 10)
    assert_same_masks(model_a, model_b)


def test_training_with_a_recipe_schedule_keeps_the_optimizer_working():
    model = make_mlp(seed=5)
    params = {id(p) for p in model.parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = gradual_pruner(model, recipe())
    x, y = torch.randn(32, 20), torch.randint(0, 3, (32,))
    for _ in range(15):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        pruner.step()
    assert {id(p) for p in model.parameters()} == params  # the same objects
    assert pruner.sparsity() == pytest.approx(0.8, abs=1e-3)


# --- what refuses what ---------------------------------------------------------------------


def test_apply_recipe_refuses_a_schedule_and_leaves_the_model_alone():
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(RecipeError, match=r"\[schedule\] the recipe prunes gradually") as info:
        apply_recipe(model, recipe())
    assert "gradual_pruner(model, recipe)" in str(info.value)
    assert model_state(model) == before


def test_gradual_pruner_refuses_a_recipe_without_schedule():
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(RecipeError, match="no \\[schedule\\] section: it prunes at once"):
        gradual_pruner(model, recipe('[global]\ncriteria = [{ name = "magnitude", amount = 0.5 }]'))
    with pytest.raises(InvalidTypeError, match="expects a Recipe"):
        gradual_pruner(model, {"global": {}})  # type: ignore[arg-type]
    assert model_state(model) == before


def test_gradual_pruner_checks_the_model_before_any_step():
    text = '[[layer]]\nmatch = "fc*"\ncriteria = ["magnitude"]' + SCHEDULE
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(RecipeError, match="matches no module"):
        gradual_pruner(model, recipe(text))
    assert model_state(model) == before


def test_a_failing_event_leaves_the_model_as_it_was_before_the_event():
    model = make_mlp(seed=6)
    pruner = gradual_pruner(model, recipe())
    run(pruner, 4)  # events at 0 and 3
    with torch.no_grad():  # as a diverging optimizer step would, without a forward pass
        model[0].weight_orig[0, 0] = float("nan")
    run(pruner, 2)  # no event at 4 and 5
    before = model_state(model)
    with pytest.raises(NonFiniteWeightsError, match=r"0\.weight has 1 NaN"):
        pruner.step()  # the event at 6 refuses the NaN weight
    assert model_state(model) == before
    assert pruner.step_count == 7  # the failed event still counts as a step


def test_the_command_line_refuses_a_scheduled_recipe(tmp_path, capsys):
    path = tmp_path / "gradual.toml"
    path.write_text(GLOBAL.format(schedule=SCHEDULE))
    out = tmp_path / "out.pt"
    argv = ["prune", "--model", "prunefw.examples:digits_mlp", "--recipe", str(path)]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "[schedule] the recipe prunes gradually" in err
    assert not out.exists()


def test_the_demo_runs_the_documented_gradual_recipe():
    text = (ROOT / "docs" / "recipes" / "gradual-mlp.toml").read_text()
    assert text == DIGITS_GRADUAL_RECIPE


def test_the_example_recipe_prunes_the_digits_mlp_to_90_percent():
    model = digits_mlp()
    pruner = gradual_pruner(model, load_recipe(ROOT / "docs" / "recipes" / "gradual-mlp.toml"))
    assert (pruner.end_step, pruner.frequency, pruner.curve) == (276, 12, "cubic")
    history = run(pruner, 300)
    assert history == sorted(history)
    assert history[-1] == round(0.9 * 16384) / 16384
