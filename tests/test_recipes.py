"""Recipes: parsing, validation before anything is touched, application, docs/recipes examples."""

from __future__ import annotations

import io
import re
import types
from pathlib import Path

import pytest
import torch
from conftest import make_mlp, model_state
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import LayerPruningContext, PruningCriterion, RandomCriterion, sparsity_report
from prunefw.cli._model import build_model
from prunefw.errors import CheckpointError, PrunefwError, RecipeError
from prunefw.examples import DIGITS_RECIPE, digits_mlp
from prunefw.history import METADATA_KEY, HistoryEntry, PruningHistory
from prunefw.plugin_manager import PluginManager
from prunefw.recipes import (
    GLOBAL_KEYS,
    LAYER_KEYS,
    SCHEDULE_KEYS,
    TOP_KEYS,
    CriterionSpec,
    GlobalSection,
    LayerRule,
    Recipe,
    apply_recipe,
    gradual_pruner,
    load_recipe,
)
from prunefw.registry import CriterionRegistry

ROOT = Path(__file__).resolve().parent.parent
DOC_RECIPES = sorted((ROOT / "docs" / "recipes").glob("*.toml"))

FULL = """\
description = "example"

[global]
criteria = [{ name = "magnitude", amount = 0.5 }]
module_types = ["Linear", "Conv2d"]
include = ["features.*"]
exclude = []
strategy = "global_unstructured"

[[layer]]
match = "classifier.*"
module_type = "Linear"
tensor = "weight"
criteria = [{ name = "percentile", lower = 0.1, upper = 0.9 }]
"""


def layer(match=None, module_type=None, **criterion) -> dict:
    """One [[layer]] rule with one criterion, e.g. layer("0", name="magnitude", amount=0.5)."""
    rule: dict = {"criteria": [criterion]}
    if match is not None:
        rule["match"] = match
    if module_type is not None:
        rule["module_type"] = module_type
    return rule


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- parsing -----------------------------------------------------------------------------


def test_parses_every_key_of_the_documented_format(tmp_path):
    path = write(tmp_path, FULL)
    recipe = load_recipe(path)
    assert recipe.source == str(path)
    assert recipe.description == "example"
    assert recipe.global_section == GlobalSection(
        criteria=(CriterionSpec("magnitude", {"amount": 0.5}),),
        module_types=("Linear", "Conv2d"),
        include=("features.*",),
        exclude=(),
        tensor="weight",
        strategy="global_unstructured",
    )
    assert recipe.layers == (
        LayerRule(
            index=1,
            criteria=(CriterionSpec("percentile", {"lower": 0.1, "upper": 0.9}),),
            match=("classifier.*",),
            module_type=("Linear",),
            tensor="weight",
        ),
    )


def test_to_dict_round_trips_and_strings_are_shorthands():
    recipe = Recipe.from_toml(FULL, source="x.toml")
    assert Recipe.from_dict(recipe.to_dict(), source="x.toml") == recipe
    # a bare name is { name = ... } without parameters
    short = Recipe.from_dict(
        {"layer": [{"match": ["a", "b"], "criteria": ["keep-positive"]}]},
        registry=registry_with(KeepPositive),
    )
    rule = short.layers[0]
    assert rule.match == ("a", "b") and rule.label == "layer #1"
    assert rule.criteria == (CriterionSpec("keep-positive", {}),)
    with pytest.raises(RecipeError, match="exactly one of"):  # magnitude needs a parameter
        Recipe.from_dict({"layer": [{"match": "a", "criteria": ["magnitude"]}]})


def test_a_recipe_is_frozen():
    recipe = Recipe.from_toml(FULL)
    with pytest.raises(AttributeError):
        recipe.layers = ()  # type: ignore[misc]


# --- validation errors: file, rule, fix ---------------------------------------------------

GOOD = '[{ name = "magnitude", amount = 0.5 }]'

ERRORS = [
    # (recipe text, where, phrases in the message)
    (f"globl = 1\n[global]\ncriteria = {GOOD}", "recipe", ["unknown top-level key 'globl'"]),
    (f"criteria = {GOOD}", "recipe", ["'criteria'", "inside a [global] section"]),
    ("description = 3\n[global]\ncriteria = []", "recipe", ["description must be a string"]),
    ("", "recipe", ["nothing to prune", "add a [global] section"]),
    (f"[global]\ncriteria = {GOOD}\nmodule_type = ['Linear']", "global",
     ["unknown key 'module_type'", "did you mean 'module_types'?"]),
    ("[global]\nmodule_types = ['Linear']", "global", ["no criteria", "criteria = [{"]),
    ("[global]\ncriteria = []", "global", ["non-empty list"]),
    ("[global]\ncriteria = [3]", "global", ["criterion #1 is 3", 'name = "magnitude"']),
    ('[global]\ncriteria = [{ name = "magnitud", amount = 0.5 }]', "global",
     ["unknown criterion 'magnitud'", "did you mean 'magnitude'?", "known criteria:"]),
    ('[global]\ncriteria = [{ name = "magnitude", amout = 0.5 }]', "global",
     ["criterion #1 'magnitude': unknown parameter 'amout'", "did you mean 'amount'?",
      "magnitude(min_threshold=None, amount=None)"]),
    ('[global]\ncriteria = [{ name = "magnitude", amount = 1.5 }]', "global",
     ["bad parameters", "amount=1.5", "fraction in [0, 1]"]),
    ('[global]\ncriteria = [{ name = "percentile", lower = 0.1 }]', "global",
     ["missing a required argument: 'upper'", "write percentile(lower, upper)"]),
    ('[global]\ncriteria = [{ name = "percentile", lower = 0.9, upper = 0.1 }]', "global",
     ["lower must be <= upper"]),
    ('[global]\ncriteria = [{ name = "random", prune_ratio = "half" }]', "global",
     ["bad parameters", "expected a float"]),
    (f"[global]\ncriteria = {GOOD}\nstrategy = 'fast'", "global",
     ["unknown strategy 'fast'", "'global_unstructured', 'streaming'"]),
    (f"[global]\ncriteria = {GOOD}\nmodule_types = ['Linaer']", "global",
     ["torch.nn has no module class 'Linaer'", "did you mean 'Linear'?"]),
    (f"[global]\ncriteria = {GOOD}\nmodule_types = ['torch.nn.functional.relu']", "global",
     ["not an nn.Module subclass"]),
    (f"[global]\ncriteria = {GOOD}\nmodule_types = ['no_such_pkg.Block']", "global",
     ["cannot import 'no_such_pkg'"]),
    (f"[global]\ncriteria = {GOOD}\nmodule_types = []", "global", ["module_types is empty"]),
    (f"[global]\ncriteria = {GOOD}\ninclude = 3", "global",
     ["include must be a string or a list of strings"]),
    (f"[global]\ncriteria = {GOOD}\ntensor = ''", "global", ["tensor must be a parameter name"]),
    (f"[layer]\nmatch = 'a'\ncriteria = {GOOD}", "layer", ["single table", "[[layer]]"]),
    (f"layer = 3\n[global]\ncriteria = {GOOD}", "layer", ["expected [[layer]] rules"]),
    (f"[[layer]]\nmatch = 'a'\ncriteria = {GOOD}\n[[layer]]\nmtch = 'b'\ncriteria = {GOOD}",
     "layer #2", ["unknown key 'mtch'", "did you mean 'match'?"]),
    (f"[[layer]]\ncriteria = {GOOD}", "layer #1", ["neither match nor module_type"]),
    ("[[layer]]\nmatch = 'a'", "layer #1", ["no criteria"]),
    ("[[layer]]\nmatch = 'a'\ncriteria = [{ name = 'nope' }]", "layer #1",
     ["unknown criterion 'nope'"]),
    ("[global]\ncriteria = [", "toml", ["not valid TOML"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "where", "phrases"), ERRORS)
def test_invalid_recipes_name_the_file_the_rule_and_the_fix(tmp_path, text, where, phrases):
    path = write(tmp_path, text, "bad-recipe.toml")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: [{where}] "), message
    assert ". Fix: " in message, message
    for phrase in phrases:
        assert phrase in message, message
    assert "\n" not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, PrunefwError)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match=r"missing\.toml: \[file\] cannot read the recipe"):
        load_recipe(tmp_path / "missing.toml")


def test_structured_criteria_are_refused_in_the_global_section():
    class Rows(PruningCriterion):
        name = "rows"
        PRUNING_TYPE = "structured"
        dim = 0

        def compute_mask(self, scores, default_mask):
            return torch.ones_like(scores, dtype=torch.bool)

    registry = registry_with(Rows)
    with pytest.raises(RecipeError, match=r"\[global\] criterion #1 'rows' has PRUNING_TYPE"):
        Recipe.from_dict({"global": {"criteria": ["rows"]}}, source="r", registry=registry)
    # ... and fine in a layer rule
    Recipe.from_dict({"layer": [{"match": "0", "criteria": ["rows"]}]}, registry=registry)


def test_streaming_needs_rank_selection():
    registry = registry_with(KeepPositive)
    data = {"global": {"criteria": ["keep-positive"], "strategy": "streaming"}}
    with pytest.raises(RecipeError, match="does not support strategy = 'streaming'"):
        Recipe.from_dict(data, registry=registry)


# --- errors that need the model, all before anything is touched ----------------------------


def test_a_rule_that_matches_no_module_is_an_error_and_nothing_is_pruned(tmp_path):
    path = write(
        tmp_path,
        f"[[layer]]\nmatch = '0'\ncriteria = {GOOD}\n\n[[layer]]\nmatch = 'fc*'\ncriteria = {GOOD}",
    )
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(RecipeError) as info:
        apply_recipe(model, load_recipe(path))
    message = str(info.value)
    assert message.startswith(f"{path}: [layer #2] match='fc*' matches no module of Sequential")
    assert "0 (Linear), 2 (Linear), 4 (Linear)" in message and "Fix:" in message
    assert model_state(model) == before


def test_a_rule_matching_modules_without_the_tensor():
    recipe = Recipe.from_dict({"layer": [layer("1", name="magnitude", amount=0.5)]})
    with pytest.raises(RecipeError, match=r"matches 1 \(ReLU\), but none has a parameter 'weight'"):
        apply_recipe(make_mlp(), recipe)


def test_a_tensor_matched_by_two_rules_names_both():
    recipe = Recipe.from_dict(
        {
            "layer": [
                {"match": "0", "criteria": [{"name": "magnitude", "amount": 0.5}]},
                {"module_type": "Linear", "criteria": [{"name": "random", "prune_ratio": 0.1}]},
            ]
        },
        source="two.toml",
    )
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(RecipeError) as info:
        apply_recipe(model, recipe)
    message = str(info.value)
    assert message.startswith("two.toml: [layer #2] 0.weight is also matched by [layer #1]")
    assert "one rule" in message and "Fix:" in message
    assert model_state(model) == before


def test_global_section_selecting_nothing():
    recipe = Recipe.from_dict(
        {"global": {"criteria": [{"name": "magnitude", "amount": 0.5}], "include": "conv*"}},
        source="g.toml",
    )
    with pytest.raises(RecipeError, match=r"^g\.toml: \[global\] selects no tensor"):
        apply_recipe(make_mlp(), recipe)


def test_failure_while_pruning_leaves_the_whole_model_untouched():
    # The global section succeeds, then a layer rule asks for more entries than exist.
    recipe = Recipe.from_dict(
        {
            "global": {"criteria": [{"name": "magnitude", "amount": 0.5}]},
            "layer": [{"match": "4", "criteria": [{"name": "magnitude", "amount": 10_000}]}],
        },
        source="late.toml",
    )
    model = make_mlp()
    before = model_state(model)
    with pytest.raises(PrunefwError) as info:
        apply_recipe(model, recipe)
    assert "in late.toml [layer #1]" in getattr(info.value, "__notes__", [])
    assert model_state(model) == before
    assert not prune.is_pruned(model)


# --- application ---------------------------------------------------------------------------


def test_global_then_layer_criteria_stack_in_order():
    global_only = {"global": {"criteria": [{"name": "magnitude", "amount": 0.5}]}}
    both = {
        **global_only,
        "layer": [{"match": "0", "criteria": [{"name": "magnitude", "amount": 0.5}]}],
    }
    reference = make_mlp()
    apply_recipe(reference, Recipe.from_dict(global_only))
    expected = sparsity_report(reference, pruned_only=True)
    model = make_mlp()
    contexts = apply_recipe(model, Recipe.from_dict(both))
    assert [type(c).__name__ for c in contexts] == ["GlobalPruningContext", "LayerPruningContext"]
    report = sparsity_report(model, pruned_only=True)
    assert expected.zeros == round(0.5 * 930)
    # the layer rule prunes half of what the global pass left in layer 0
    left = 600 - expected["0.weight"].zeros
    assert report["0.weight"].zeros == expected["0.weight"].zeros + round(0.5 * left)
    assert report["2.weight"].zeros == expected["2.weight"].zeros
    history = PruningHistory.from_contexts(contexts)
    assert history.describe("0.weight") == (
        "global magnitude(amount=0.5) then layer magnitude(amount=0.5)"
    )
    assert history.describe("2.weight") == "global magnitude(amount=0.5)"


def test_layer_rule_counts_are_exact_and_module_type_matches_subclasses():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(10, 10), nn.ReLU(), nn.Linear(10, 4))
    recipe = Recipe.from_dict(
        {
            "layer": [
                {"module_type": "Linear", "criteria": [{"name": "magnitude", "amount": 0.3}]},
                {
                    "module_type": "Linear",
                    "tensor": "bias",
                    "criteria": [{"name": "magnitude", "amount": 2}],
                },
            ]
        }
    )
    apply_recipe(model, recipe)
    report = sparsity_report(model, pruned_only=True)
    assert report["0.weight"].zeros == 30 and report["2.weight"].zeros == 12
    assert report["0.bias"].zeros == 2 and report["2.bias"].zeros == 2


def test_custom_module_types_by_dotted_path():
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(2, 2, 1))
    recipe = Recipe.from_dict(
        {"layer": [layer(module_type="torch.nn.Conv1d", name="magnitude", amount=2)]}
    )
    resolved = recipe.resolve(model)
    assert resolved.labels() == {"layer #1": ["1.weight"]}


def test_masks_equal_a_hand_built_layer_context():
    # apply_recipe runs one context per tensor; a seeded random criterion shared by a
    # rule's tensors must give exactly what one LayerPruningContext gives.
    recipe = Recipe.from_dict(
        {"layer": [layer(module_type="Linear", name="random", prune_ratio=0.4, seed=3)]}
    )
    a, b = make_mlp(), make_mlp()
    apply_recipe(a, recipe)
    crit = RandomCriterion(0.4, seed=3)
    LayerPruningContext({b[0]: crit, b[2]: crit, b[4]: crit}, model=b).prune()
    for i in (0, 2, 4):
        assert torch.equal(a[i].weight_mask, b[i].weight_mask)


def test_apply_recipe_reports_progress_per_context():
    calls = []

    def track(items, description, total=None):
        calls.append((description, total))
        return items

    recipe = Recipe.from_dict(
        {
            "global": {"criteria": [{"name": "magnitude", "amount": 0.2}]},
            "layer": [layer(module_type="Linear", name="magnitude", amount=0.1)],
        }
    )
    contexts = apply_recipe(make_mlp(), recipe, track=track)
    assert calls == [("pruning", 4)] and len(contexts) == 4


# --- third-party criteria by name ------------------------------------------------------------


class KeepPositive(PruningCriterion):
    """Prune negative weights (a third-party criterion without rank_selection)."""

    name = "keep-positive"

    def importance_scores(self, module, name):
        return getattr(module, name).detach()

    def compute_mask(self, scores, default_mask):
        return scores > 0


class ObservedInputs(PruningCriterion):
    """Needs calibration; prunes inputs never active in the calibration batches' first layer."""

    name = "observed"
    requires_calibration = True

    def __init__(self, amount: float = 0.5) -> None:
        self.amount = amount
        self.calls = 0

    def reset_calibration(self):
        self.calls = 0

    def observe(self, module, name, inputs, output):
        self.calls += 1

    def compute_mask(self, scores, default_mask):
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[: round(self.amount * scores.numel())] = False
        return keep

    def config(self):
        return {"amount": self.amount}


def registry_with(*classes: type[PruningCriterion]) -> CriterionRegistry:
    plugin = types.SimpleNamespace(prunefw_register_criteria=prunefw.hookimpl(lambda: classes))
    pm = PluginManager(autoload=False)
    pm.register(plugin, name="third-party")
    return CriterionRegistry.from_plugin_manager(pm)


def test_third_party_criterion_by_name_through_an_in_process_registry(tmp_path):
    path = write(tmp_path, "[[layer]]\nmodule_type = 'Linear'\ncriteria = ['keep-positive']\n")
    with pytest.raises(RecipeError, match="unknown criterion 'keep-positive'"):
        load_recipe(path)  # not in the default registry
    recipe = load_recipe(path, registry=registry_with(KeepPositive))
    model = make_mlp()
    contexts = apply_recipe(model, recipe)  # criteria come from the recipe's registry
    for i in (0, 2, 4):
        assert torch.equal(model[i].weight_mask.bool(), model[i].weight_orig > 0)
    history = PruningHistory.from_contexts(contexts)
    assert history.get("4.weight") == (HistoryEntry("keep-positive", {}, "layer"),)


def test_calibration_criteria_get_the_batches_once_and_need_them():
    registry = registry_with(ObservedInputs)
    recipe = Recipe.from_dict(
        {
            "layer": [
                {"match": "0", "criteria": ["observed"]},
                {"match": "2", "criteria": [{"name": "observed", "amount": 0.25}]},
            ]
        },
        source="cal.toml",
        registry=registry,
    )
    model = make_mlp()
    with pytest.raises(RecipeError, match=r"^cal\.toml: \[layer #1\] criterion 'observed' needs "):
        apply_recipe(model, recipe)
    assert not prune.is_pruned(model)
    seen = []

    def track(items, description, total=None):
        seen.append((description, total))
        return items

    batches = (torch.randn(4, 20) for _ in range(3))  # a one-shot generator
    contexts = apply_recipe(model, recipe, calibration_data=batches, track=track)
    assert len(contexts) == 1  # one context, so the batches run through the model once
    crit = contexts[0].plan[0][1][0]
    assert crit.calls == 3
    assert ("calibration", 3) in seen
    assert int((model[2].weight_mask == 0).sum()) == round(0.25 * 300)


# --- history ---------------------------------------------------------------------------------


def test_history_survives_torch_save_and_weights_only_load():
    model = make_mlp()
    contexts = apply_recipe(model, Recipe.from_toml(f"[global]\ncriteria = {GOOD}"))
    history = PruningHistory.from_contexts(contexts)
    buffer = io.BytesIO()
    torch.save(history.attach(model.state_dict()), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert PruningHistory.from_state_dict(loaded) == history
    fresh = make_mlp(seed=1)
    prunefw.load_pruned_state_dict(fresh, loaded)  # still a plain state_dict
    assert (history + history).describe("0.weight").count("then") == 1
    assert PruningHistory.from_state_dict(model.state_dict()) == PruningHistory()


def test_corrupt_history_is_a_checkpoint_error():
    state = PruningHistory().attach({"w": torch.ones(1)})
    state._metadata[""][METADATA_KEY] = "{not json"
    with pytest.raises(CheckpointError, match="not valid JSON"):
        PruningHistory.from_state_dict(state)
    state._metadata[""][METADATA_KEY] = '{"w": [{"criterion": 1}]}'
    with pytest.raises(CheckpointError, match="invalid prunefw history entry"):
        PruningHistory.from_state_dict(state)


# --- the examples in docs/recipes --------------------------------------------------------------


def test_there_are_example_recipes():
    assert len(DOC_RECIPES) >= 4


@pytest.mark.parametrize("path", DOC_RECIPES, ids=lambda p: p.name)
def test_every_example_recipe_runs_on_the_model_it_targets(path):
    header = re.match(r"# model: (\S+)", path.read_text())
    assert header, f"{path.name} must start with '# model: package.module:factory'"
    model = build_model(header.group(1))
    recipe = load_recipe(path)
    batches = [torch.rand(16, 64) for _ in range(2)]  # the digits' input size
    resolved_labels = {
        label for labels in recipe.resolve(model).labels().values() for label in labels
    }
    if recipe.schedule is None:
        contexts = apply_recipe(model, recipe, calibration_data=batches)
        history = PruningHistory.from_contexts(contexts)
        assert set(history.tensors) == resolved_labels
    else:
        pruner = gradual_pruner(model, recipe)
        for _ in range(recipe.schedule.end_step + 1):
            pruner.step(batches)
        assert pruner.sparsity() == pytest.approx(recipe.schedule.final_sparsity, abs=1e-3)
    report = sparsity_report(model, pruned_only=True)
    assert {t.label for t in report.tensors} == resolved_labels
    assert report.zeros > 0


def test_the_demo_recipe_is_the_documented_one():
    assert (ROOT / "docs" / "recipes" / "digits-mlp.toml").read_text() == DIGITS_RECIPE
    recipe = Recipe.from_toml(DIGITS_RECIPE)
    assert recipe.resolve(digits_mlp()).labels() == {
        "global": ["features.0.weight", "features.2.weight"],
        "layer #1": ["classifier.weight"],
    }


def test_docs_describe_every_recipe_key():
    text = (ROOT / "docs" / "recipes.md").read_text()
    for key in (*TOP_KEYS, *GLOBAL_KEYS, *LAYER_KEYS, *SCHEDULE_KEYS):
        assert f"`{key}`" in text, f"docs/recipes.md does not describe {key}"
    for path in DOC_RECIPES:
        assert path.name in text, f"docs/recipes.md does not list {path.name}"


def test_docs_recipe_blocks_are_valid(monkeypatch, capsys):
    text = (ROOT / "docs" / "recipes.md").read_text()
    tomls = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(tomls) == 3
    full = Recipe.from_toml(tomls[0], source="docs/recipes.md")
    assert full.global_section is not None and len(full.layers) == 1
    scheduled = Recipe.from_toml(tomls[1], source="docs/recipes.md")
    assert scheduled.schedule is not None and scheduled.schedule.final_sparsity == 0.9
    criteria = tomls[2].replace("criteria =", "[[layer]]\nmatch = '0'\ncriteria =", 1)
    assert len(Recipe.from_toml(criteria).layers[0].criteria) == 2
    monkeypatch.chdir(ROOT)  # the examples name files relative to the repository
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "docs/recipes.md", "exec"), {})
    assert "0.9000" in capsys.readouterr().out


def test_readme_recipe_is_valid_and_equals_the_demo_recipe():
    (block,) = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    readme = Recipe.from_toml(block)
    demo = Recipe.from_toml(DIGITS_RECIPE)
    assert readme.global_section == demo.global_section and readme.layers == demo.layers


def test_history_keeps_the_order_of_criteria_and_of_their_parameters():
    history = PruningHistory(
        {"w": (HistoryEntry("x", {"b": 1, "a": 2}, "layer"), HistoryEntry("y", {}, "global"))}
    )
    again = PruningHistory.from_json(history.to_json())
    assert again == history
    assert list(again.get("w")[0].config) == ["b", "a"]
    assert again.describe("w") == "layer x(b=1, a=2) then global y()"
