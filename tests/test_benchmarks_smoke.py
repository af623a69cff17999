"""The benchmark's small size as a correctness smoke test (masks, not time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_checks_every_mask():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_prune.py"), "--smoke"],
        capture_output=True, text=True, timeout=1200, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = result.stdout
    for case in ("prunefw_magnitude", "prunefw_percentile_streaming", "layer_prunefw"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {case} "))
        assert "| ok" in row, row
    assert "== torch_l1" in table
    assert "== prunefw_magnitude" in table
    assert "== prunefw_percentile" in table
