"""The distribution: installed package, entry point, registry, docs and README examples."""

from __future__ import annotations

import ast
import doctest
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

import prunefw
import prunefw_wanda
import prunefw_wanda.criterion
import prunefw_wanda.plugin
from prunefw.plugin_manager import PluginManager
from prunefw.registry import CriterionRegistry
from prunefw_wanda import WandaCriterion

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "prunefw-wanda"


def test_tests_import_the_installed_package():
    """The package under test is the installed one, not the source tree."""
    package_dir = Path(prunefw_wanda.__file__).resolve().parent
    assert not package_dir.is_relative_to(PLUGIN_ROOT)
    assert (package_dir / "py.typed").is_file()
    files = {str(f) for f in importlib.metadata.distribution(DISTRIBUTION).files or []}
    assert "prunefw_wanda/py.typed" in files


def test_installed_package_matches_the_source_tree():
    """The installed modules are the current sources (reinstall after editing src/)."""
    installed = Path(prunefw_wanda.__file__).resolve().parent
    for source in sorted((PLUGIN_ROOT / "src" / "prunefw_wanda").glob("*.py")):
        assert (installed / source.name).read_text() == source.read_text(), (
            f"{source.name} differs from the installed copy: "
            "pip install --no-deps plugins/prunefw-wanda"
        )


def test_metadata_version_and_dependencies():
    """One version (pyproject, metadata, __version__) and the declared requirements."""
    pyproject = (PLUGIN_ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert match is not None
    assert prunefw_wanda.__version__ == importlib.metadata.version(DISTRIBUTION) == match[1]
    assert match[1] == "0.1.0"
    requires = importlib.metadata.requires(DISTRIBUTION) or []
    assert "prunefw" in requires
    assert "torch>=2.3" in requires


def test_registered_only_through_the_entry_point_group():
    """One prunefw entry point, wanda -> prunefw_wanda.plugin, returning the class."""
    dist = importlib.metadata.distribution(DISTRIBUTION)
    points = dist.entry_points.select(group="prunefw")
    assert [(ep.name, ep.value) for ep in points] == [("wanda", "prunefw_wanda.plugin")]
    assert points["wanda"].load() is prunefw_wanda.plugin
    assert prunefw_wanda.plugin.prunefw_register_criteria() == [WandaCriterion]


def test_registry_attributes_wanda_to_the_distribution():
    """A fresh plugin manager finds the plugin and names its distribution."""
    registry = CriterionRegistry.from_plugin_manager(PluginManager(autoload=True, disabled=[]))
    entry = registry.entry("wanda")
    assert entry.cls is WandaCriterion
    assert entry.plugin.name == "wanda"
    assert entry.plugin.distribution == DISTRIBUTION
    assert entry.plugin.version == prunefw_wanda.__version__
    assert entry.plugin.entry_point == "prunefw_wanda.plugin"
    assert {"magnitude", "percentile", "random", "wanda"} <= set(registry.names())


def test_blocking_the_entry_point_removes_the_criterion():
    """PRUNEFW_DISABLED_PLUGINS=wanda (here: disabled=["wanda"]) hides it."""
    registry = CriterionRegistry.from_plugin_manager(
        PluginManager(autoload=True, disabled=["wanda"])
    )
    assert "wanda" not in registry
    assert "magnitude" in registry


def test_default_registry_builds_it_by_name():
    """prunefw.criterion and available_criteria see the installed plugin."""
    assert prunefw.available_criteria()["wanda"] is WandaCriterion
    crit = prunefw.criterion("wanda", sparsity=0.5)
    assert repr(crit) == "WandaCriterion(sparsity=0.5)"
    assert crit.config() == {"sparsity": 0.5}
    two_four = prunefw.criterion("wanda", sparsity=0.5, pattern="2:4")
    assert repr(two_four) == "WandaCriterion(sparsity=0.5, pattern='2:4')"
    assert two_four.config() == {"sparsity": 0.5, "pattern": "2:4"}


def test_core_does_not_import_the_plugin():
    """`import prunefw` leaves prunefw_wanda alone; the registry loads it on first use."""
    code = textwrap.dedent(
        """
        import sys
        import prunefw
        assert "prunefw_wanda" not in sys.modules, "imported by import prunefw"
        assert "wanda" in prunefw.available_criteria()
        assert "prunefw_wanda.plugin" in sys.modules
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRUNEFW_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    core = Path(prunefw.__file__).resolve().parent
    assert not [path for path in core.rglob("*.py") if "prunefw_wanda" in imported_modules(path)]


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module a Python file imports."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize(
    "module",
    [prunefw_wanda, prunefw_wanda.criterion, prunefw_wanda.plugin],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module):
    """Every docstring example of the installed package passes as a doctest."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the README, in order."""
    readme = (PLUGIN_ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL)


def test_readme_covers_the_required_topics():
    """Citation, install, calibration usage, Conv1D, N:M, the global refusal, prior masks."""
    readme = (PLUGIN_ROOT / "README.md").read_text()
    for text in (
        "arXiv:2306.11695",
        "## Install",
        "## Usage with calibration data",
        "## Linear-like layers: `nn.Linear` and GPT-2's `Conv1D`",
        "## N:M: 2:4 Wanda in one call",
        "### Why `[wanda(0.5), nm(2, 4)]` is not 2:4 Wanda",
        "58.9 to 59.1% sparsity",  # measured by test_wanda_conv1d.py's stacking test
        "## Why the global context refuses it",
        "## Already-pruned entries",
    ):
        assert text in readme
    assert len(readme_python_blocks()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_examples_run(index):
    """Each README example runs as written (the GPT-2 one needs transformers)."""
    block = readme_python_blocks()[index]
    if "import transformers" in block:
        pytest.importorskip("transformers")
    exec(compile(block, f"README.md block {index}", "exec"), {})


def test_readme_layer_by_layer_snippet_runs_after_the_usage_example():
    """The indented layer-by-layer snippet continues the usage example."""
    readme = (PLUGIN_ROOT / "README.md").read_text()
    snippets = re.findall(r"^  ```python\n(.*?)^  ```$", readme, re.MULTILINE | re.DOTALL)
    assert len(snippets) == 1
    namespace: dict[str, object] = {}
    exec(compile(readme_python_blocks()[0], "README.md block 0", "exec"), namespace)
    exec(compile(textwrap.dedent(snippets[0]), "README.md layer by layer", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, nn.Sequential)
    assert (model[2].weight_mask == 0).sum(dim=1).tolist() == [64] * 32
