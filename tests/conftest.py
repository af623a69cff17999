"""Shared fixtures and helpers for the prunefw test suite."""

from __future__ import annotations

import copy
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunefw.cli.demo import DemoNet

# The seed README's global-pruning example network is also the demo's.
SeedModel = DemoNet


def make_mlp(seed: int = 0) -> nn.Sequential:
    """A small MLP with tie-free random weights."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 3)
    )


def pruned_counts(model: nn.Module) -> list[tuple[int, int]]:
    """``(pruned entries, entries)`` of every Linear weight, in module order, from the masks."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            mask = getattr(module, "weight_mask", None)
            out.append((0 if mask is None else int((mask == 0).sum()), module.weight.numel()))
    return out


@pytest.fixture
def mlp() -> nn.Sequential:
    return make_mlp()


@pytest.fixture
def seed_model() -> SeedModel:
    torch.manual_seed(0)
    return SeedModel()


def model_state(model: nn.Module) -> dict[str, Any]:
    """Everything pruning can change, in a form that compares bit for bit.

    Parameters and buffers by identity and by value (as raw bytes), hooks (objects
    and order), the plain attributes of every module, and the state_dict.
    """
    state: dict[str, Any] = {}
    for name, module in model.named_modules():
        state[f"{name}/params"] = [(k, id(v), _bits(v)) for k, v in module._parameters.items()]
        state[f"{name}/buffers"] = [(k, id(v), _bits(v)) for k, v in module._buffers.items()]
        state[f"{name}/hooks"] = [(k, id(h)) for k, h in module._forward_pre_hooks.items()]
        state[f"{name}/hook_attrs"] = [
            (k, sorted((a, id(v)) for a, v in vars(h).items()))
            for k, h in module._forward_pre_hooks.items()
        ]
        state[f"{name}/attrs"] = sorted(
            (k, id(v)) for k, v in vars(module).items() if not k.startswith("_")
        )
        state[f"{name}/dict_keys"] = sorted(vars(module))
    state["state_dict"] = [(k, _bits(v)) for k, v in model.state_dict().items()]
    return state


def _bits(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        return (str(t.dtype), tuple(value.shape), t.view(torch.uint8).numpy().tobytes())
    return value


def clone_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def fresh_venv_with_wheels(base: Path, wheels: list[Path]) -> tuple[Path, str]:
    """A new venv that sees this environment's packages (torch, prunefw) and has ``wheels``.

    The new venv's own site-packages come first on its ``sys.path``, so what the
    wheels install shadows anything of the same name here.

    Returns:
        The venv's python executable and its site-packages directory.
    """
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", *map(str, wheels)],
        check=True,
    )  # fmt: skip
    # Only now, so pip above saw an empty environment (and never touches this one).
    outer = sysconfig.get_paths()["purelib"]
    Path(purelib, "outer_env.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    return python, purelib


def build_wheel(project: Path, out: Path) -> Path:
    """Build ``project``'s wheel with this environment's setuptools; return its path."""
    before = set(out.glob("*.whl")) if out.exists() else set()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(project)],
        check=True,
    )  # fmt: skip
    (wheel,) = set(out.glob("*.whl")) - before
    return wheel
