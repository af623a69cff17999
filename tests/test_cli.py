"""The ``prunefw`` command: the README's main job (``prunefw demo``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from prunefw.cli import main
from prunefw.cli.demo import DemoNet


def test_demo_in_process_prunes_reports_and_makes_permanent(capsys, tmp_path):
    out = tmp_path / "pruned.pt"
    assert main(["demo", "--sparsity", "0.6", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "global magnitude pruning, amount=0.6" in text
    assert "deep copy and checkpoint round trip give the same outputs: True" in text
    assert "fc1.weight" in text and "total" in text
    state = torch.load(out, weights_only=True)
    assert sorted(state) == sorted(DemoNet().state_dict())
    weights = [state[k] for k in ("conv1.weight", "conv2.weight", "fc1.weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert zeros == round(0.6 * total)


def test_demo_as_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "prunefw", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "after make_permanent" in result.stdout


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_prunefw_error_is_one_line_and_exit_1(capsys):
    assert main(["demo", "--sparsity", "1.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("prunefw: error:") and "amount=1.5" in err[0]
