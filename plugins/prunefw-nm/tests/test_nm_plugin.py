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

import prunefw
import prunefw_nm
import prunefw_nm.criterion
import prunefw_nm.plugin
from prunefw.plugin_manager import PluginManager
from prunefw.registry import CriterionRegistry
from prunefw_nm import NMCriterion

PLUGIN_ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "prunefw-nm"


def test_tests_import_the_installed_package():
    """The package under test is the installed one, not the source tree."""
    package_dir = Path(prunefw_nm.__file__).resolve().parent
    assert not package_dir.is_relative_to(PLUGIN_ROOT)
    assert (package_dir / "py.typed").is_file()
    files = {str(f) for f in importlib.metadata.distribution(DISTRIBUTION).files or []}
    assert "prunefw_nm/py.typed" in files


def test_version_matches_metadata_and_pyproject():
    """One version: pyproject.toml, the installed metadata and __version__."""
    pyproject = (PLUGIN_ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert match is not None
    assert prunefw_nm.__version__ == importlib.metadata.version(DISTRIBUTION) == match[1]


def test_registered_only_through_the_entry_point_group():
    """The distribution declares exactly one prunefw entry point, nm -> prunefw_nm.plugin."""
    dist = importlib.metadata.distribution(DISTRIBUTION)
    points = dist.entry_points.select(group="prunefw")
    assert [(ep.name, ep.value) for ep in points] == [("nm", "prunefw_nm.plugin")]
    assert points["nm"].load() is prunefw_nm.plugin
    assert prunefw_nm.plugin.prunefw_register_criteria() == [NMCriterion]


def test_registry_attributes_nm_to_the_distribution():
    """A fresh plugin manager finds the plugin and names its distribution."""
    registry = CriterionRegistry.from_plugin_manager(PluginManager(autoload=True, disabled=[]))
    entry = registry.entry("nm")
    assert entry.cls is NMCriterion
    assert entry.plugin.name == "nm"
    assert entry.plugin.distribution == DISTRIBUTION
    assert entry.plugin.version == prunefw_nm.__version__
    assert entry.plugin.entry_point == "prunefw_nm.plugin"
    assert {"magnitude", "percentile", "random", "nm"} <= set(registry.names())


def test_blocking_the_entry_point_removes_the_criterion():
    """PRUNEFW_DISABLED_PLUGINS=nm (here: disabled=["nm"]) hides it."""
    registry = CriterionRegistry.from_plugin_manager(PluginManager(autoload=True, disabled=["nm"]))
    assert "nm" not in registry
    assert "magnitude" in registry


def test_default_registry_builds_it_by_name():
    """prunefw.criterion and available_criteria see the installed plugin."""
    assert prunefw.available_criteria()["nm"] is NMCriterion
    assert repr(prunefw.criterion("nm")) == "NMCriterion(n=2, m=4)"
    assert prunefw.criterion("nm", n=4, m=8).config() == {"n": 4, "m": 8}


def test_core_does_not_import_the_plugin():
    """`import prunefw` leaves prunefw_nm alone; the registry loads it on first use."""
    code = textwrap.dedent(
        """
        import sys
        import prunefw
        assert "prunefw_nm" not in sys.modules, "imported by import prunefw"
        assert "nm" in prunefw.available_criteria()
        assert "prunefw_nm.plugin" in sys.modules
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRUNEFW_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    core = Path(prunefw.__file__).resolve().parent
    assert not [path for path in core.rglob("*.py") if "prunefw_nm" in imported_modules(path)]


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
    "module", [prunefw_nm, prunefw_nm.criterion, prunefw_nm.plugin], ids=lambda m: m.__name__
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


def test_readme_has_examples():
    """The README shows usage, the global refusal and the conversion."""
    assert len(readme_python_blocks()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_examples_run(index):
    """Each README example runs as written (the CUDA part only on CUDA)."""
    exec(compile(readme_python_blocks()[index], f"README.md block {index}", "exec"), {})
