"""The docs are part of the contract: hooks documented, API listed, code blocks run."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

import prunefw
from prunefw import hookspecs
from prunefw.plugin_manager import PluginManager
from prunefw.registry import CriterionRegistry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def code_blocks(path: Path, language: str = "python") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("prunefw_"))


def test_there_are_hooks_to_document():
    assert hook_names() == ["prunefw_register_criteria", "prunefw_register_linear_layers"]


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_documented_with_its_signature(name):
    text = (DOCS / "hooks.md").read_text()
    assert re.search(rf"^## {name}$", text, re.M), f"docs/hooks.md has no section for {name}"
    assert f"def {name}(" in text, f"docs/hooks.md does not show the signature of {name}"


@pytest.mark.parametrize("name", sorted(prunefw.__all__))
def test_every_public_name_is_in_the_api_overview(name):
    assert f"`{name}" in (DOCS / "api.md").read_text(), f"docs/api.md does not mention {name}"


def test_every_public_name_has_a_docstring():
    for name in prunefw.__all__:
        obj = getattr(prunefw, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"prunefw.{name} has no docstring"


def test_package_ships_py_typed():
    assert (Path(prunefw.__file__).parent / "py.typed").is_file()


def test_readme_code_blocks_run_in_order(monkeypatch):
    blocks = code_blocks(ROOT / "README.md")
    assert len(blocks) == 7
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README-layer", "exec"), namespace)
    layer_model = namespace["model"]
    assert prune.is_pruned(layer_model)
    assert hasattr(layer_model.conv1, "weight_mask") and hasattr(layer_model.conv2, "weight_mask")
    for block in blocks[1:4]:
        exec(compile(block, "README", "exec"), namespace)
    model = namespace["model"]
    fresh = namespace["fresh"]
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), fresh(x))
    assert not prune.is_pruned(model)
    assert prune.is_pruned(fresh)
    # the streaming example, on the (now permanent) model
    exec(compile(blocks[4], "README-streaming", "exec"), namespace)
    weights = [model.conv1.weight_mask, model.conv2.weight_mask, model.fc1.weight_mask]
    pruned = sum(int((m == 0).sum()) for m in weights)
    assert pruned == round(0.5 * sum(m.numel() for m in weights))
    # the gradual recipe, from the repository root as the README's paths say
    monkeypatch.chdir(ROOT)
    exec(compile(blocks[5], "README-gradual", "exec"), namespace)
    assert namespace["pruner"].step_count == 1 and namespace["pruner"].end_step == 276
    # transformers in one call: the blocks' linear layers, not the embeddings or lm_head
    exec(compile(blocks[6], "README-transformers", "exec"), namespace)
    llm = namespace["llm"]
    assert prunefw.sparsity_report(llm, pruned_only=True).sparsity == 0.5
    assert not prune.is_pruned(llm.lm_head) and not prune.is_pruned(llm.model.embed_tokens)


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    setup = code_blocks(ROOT / "README.md", "bash")[0]
    assert "make demo" in setup and "make test" in setup
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert "constraints.txt" in readme


def test_api_overview_examples_run():
    for block in code_blocks(DOCS / "api.md"):
        exec(compile(block, "docs/api.md", "exec"), {})


def hooks_example(marker: str) -> str:
    """The last code block of docs/hooks.md that contains ``marker``."""
    return [block for block in code_blocks(DOCS / "hooks.md") if marker in block][-1]


def test_hooks_example_is_a_working_plugin():
    plugin = types.ModuleType("docs_hooks_example")
    example = hooks_example("def prunefw_register_criteria():")
    exec(compile(example, "docs/hooks.md", "exec"), vars(plugin))
    pm = PluginManager(autoload=False)
    pm.register(plugin, name="docs-example")
    registry = CriterionRegistry.from_plugin_manager(pm)
    crit = registry.create("keep-positive")
    layer = torch.nn.Linear(6, 6)
    prunefw.LayerPruningContext({layer: crit}).prune()
    assert torch.equal(layer.weight_mask.bool(), layer.weight_orig > 0)


def test_linear_layers_hook_example_registers_a_layer_type():
    from prunefw.layouts import LinearLayers

    plugin = types.ModuleType("docs_linear_layers_example")
    example = hooks_example("def prunefw_register_linear_layers():")
    exec(compile(example, "docs/hooks.md", "exec"), vars(plugin))
    pm = PluginManager(autoload=False)
    pm.register(plugin, name="docs-layers")
    layers = LinearLayers.from_plugin_manager(pm)
    assert "bitsandbytes.nn.Linear8bitLt" in layers.module_types()
    assert torch.nn.Linear in layers.module_types()  # the built-in plugin's


def test_transformers_guide_code_blocks_run_in_order():
    pytest.importorskip("transformers")
    namespace: dict[str, object] = {}
    for block in code_blocks(DOCS / "transformers.md"):
        exec(compile(block, "docs/transformers.md", "exec"), namespace)


def test_scale_guide_code_blocks_run_in_order():
    namespace: dict[str, object] = {}
    blocks = code_blocks(DOCS / "scale.md")
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "docs/scale.md", "exec"), namespace)
