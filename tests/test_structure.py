"""The tree reads as docs/index.md says: small modules, all listed, private modules private."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "prunefw"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500


def dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_is_under_the_size_limit(path):
    lines = len(path.read_text().splitlines())
    name = path.relative_to(ROOT).as_posix()
    assert lines < MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES - 1}); split it"


def test_the_architecture_table_lists_every_module_and_package():
    table = (ROOT / "docs" / "index.md").read_text()
    listed = set(re.findall(r"^\| `(prunefw/[^`]*)`", table, re.M))
    expected = {
        f"prunefw/{entry.name}/" if entry.is_dir() else f"prunefw/{entry.name}"
        for entry in PACKAGE.iterdir()
        if (entry.suffix == ".py" or (entry / "__init__.py").exists())
        and entry.name not in {"__init__.py", "__main__.py", "_version.py", "_table.py"}
    }
    assert expected <= listed, f"missing from docs/index.md: {sorted(expected - listed)}"
    assert listed <= expected, f"listed but not in the tree: {sorted(listed - expected)}"


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return [name for name in names if name.startswith("prunefw.")]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_packages_private_module(path):
    here = dotted(path)
    package_of_here = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for name in imported_modules(path):
        parts = name.split(".")
        for index, part in enumerate(parts[1:], start=1):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:index])
                assert package_of_here == owner or package_of_here.startswith(owner + "."), (
                    f"{here} imports {name}, a private module of {owner}"
                )
                break
