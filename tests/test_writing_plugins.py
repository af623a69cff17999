"""docs/writing-plugins.md, for real: its files become a project that is built, installed,
listed, used and tested with the contract kit in a fresh environment."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import build_wheel, fresh_venv_with_wheels

DOC = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"


def doc_files() -> dict[str, str]:
    """Every code block of the page that starts with ``# file: <path>``."""
    files = {}
    for body in re.findall(r"```(?:python|toml)\n(.*?)```", DOC.read_text(), re.S):
        first, _, rest = body.partition("\n")
        match = re.fullmatch(r"# file: (\S+)", first)
        assert match, f"a code block of {DOC.name} does not say which file it is: {first!r}"
        files[match.group(1)] = rest if match.group(1).endswith(".toml") else body
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("writing-plugins")
    project = base / "prunefw-keeppositive"
    for name, text in doc_files().items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (project / "src" / "prunefw_keeppositive" / "py.typed").write_text("")
    wheel = build_wheel(project, base / "dist")
    python, _ = fresh_venv_with_wheels(base, [wheel])
    return project, python


def test_the_page_covers_the_whole_layout():
    assert set(doc_files()) == {
        "pyproject.toml",
        "src/prunefw_keeppositive/__init__.py",
        "src/prunefw_keeppositive/plugin.py",
        "tests/conftest.py",
        "tests/test_contract.py",
        "use.py",
    }


def test_use_example_runs_against_the_installed_wheel(installed):
    project, python = installed
    result = subprocess.run(
        [str(python), "use.py"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned ")


def test_prunefw_plugins_lists_it(installed):
    project, python = installed
    result = subprocess.run(
        [str(python), "-m", "prunefw", "plugins", "--json"],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    entry = plugins["keep-positive"]
    assert entry["distribution"] == "prunefw-keeppositive"
    assert entry["version"] == "0.1.0"
    assert entry["status"] == "active"
    assert entry["criteria"] == ["keep-positive"]
    assert entry["entry_point"] == "prunefw_keeppositive.plugin"


def test_contract_kit_passes_in_the_plugin_project(installed):
    project, python = installed
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project),
         "tests"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b8 passed\b", result.stdout), result.stdout
