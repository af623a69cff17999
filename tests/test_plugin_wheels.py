"""The plugins under plugins/ as users get them: built wheels in a fresh environment."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import build_wheel, fresh_venv_with_wheels

ROOT = Path(__file__).resolve().parent.parent

# plugin directory -> (import package, criterion name, kwargs, entry-point name)
PLUGINS = {
    "prunefw-nm": ("prunefw_nm", "nm", {"n": 2, "m": 4}, "nm"),
    "prunefw-wanda": ("prunefw_wanda", "wanda", {"sparsity": 0.5}, "wanda"),
}

CHECK = """
import json, sys
import torch
from torch import nn
import prunefw
from prunefw import LayerPruningContext, available_criteria, criterion

package, name, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
names = sorted(available_criteria())
result = {"names": names}
if name in names:
    module = __import__(package)
    result["plugin_file"] = module.__file__
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    crit = criterion(name, **kwargs)
    batches = [torch.randn(4, 16) for _ in range(2)] if crit.requires_calibration else None
    LayerPruningContext({"0": crit}, model=model).prune(calibration_data=batches)
    result["pruned"] = int((model[0].weight_mask == 0).sum())
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh venv with both plugin wheels installed; it sees torch and prunefw from here."""
    base = tmp_path_factory.mktemp("wheels")
    wheels = [build_wheel(ROOT / "plugins" / directory, base / "dist") for directory in PLUGINS]
    python, purelib = fresh_venv_with_wheels(base, wheels)
    return python.parent.parent, purelib


def run_check(venv: Path, directory: str, env: dict[str, str] | None = None) -> dict:
    package, name, kwargs, _ = PLUGINS[directory]
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK, package, name, json.dumps(kwargs)],
        capture_output=True, text=True, timeout=120, cwd=venv,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("directory", sorted(PLUGINS))
def test_wheel_in_fresh_env_is_discovered_and_usable_by_name(wheel_env, directory):
    venv, purelib = wheel_env
    _, name, _, _ = PLUGINS[directory]
    result = run_check(venv, directory)
    assert name in result["names"]
    assert {"magnitude", "percentile", "random"} <= set(result["names"])
    assert result["plugin_file"].startswith(purelib), "the plugin must come from the wheel"
    assert result["pruned"] > 0


@pytest.mark.parametrize("directory", sorted(PLUGINS))
def test_disabled_plugins_hides_the_wheel(wheel_env, directory):
    venv, _ = wheel_env
    _, name, _, entry_point = PLUGINS[directory]
    result = run_check(venv, directory, {"PRUNEFW_DISABLED_PLUGINS": f"other,{entry_point}"})
    assert name not in result["names"]
    assert "magnitude" in result["names"]
    result = run_check(venv, directory, {"PRUNEFW_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert name not in result["names"]
