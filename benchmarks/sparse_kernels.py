"""What torch's own sparse layouts give on this machine: dense vs CSR vs BSR matmul.

Run from the repository root::

    python benchmarks/sparse_kernels.py                 # 4096 x 4096, the full table (minutes)
    python benchmarks/sparse_kernels.py --smoke         # CI: 256 x 256, checks the results
    python benchmarks/sparse_kernels.py --json out.json

Methodology
-----------
*Weights.* One fp32 ``out x in`` weight (default 4096 x 4096) from a seeded generator.
``unstructured`` sparsity zeroes the smallest ``|w|`` (what magnitude pruning leaves):
this is what CSR stores. ``block`` sparsity zeroes whole ``B x B`` blocks (default
32 x 32) with the smallest L2 norms, the pattern BSR needs (with unstructured zeros
almost no block is empty, so BSR would store the matrix dense). Sparsities 50, 70, 90
and 95%.

*Operation.* ``y = x @ W.T`` for ``x`` of ``batch`` rows (1, 8 and 128 tokens), i.e.
``nn.Linear`` without bias. Dense: ``torch.nn.functional.linear(x, W)``. Sparse:
``torch.sparse.mm(W_sparse, x.T).T`` with ``W_sparse = W.to_sparse_csr()`` or
``W.to_sparse_bsr((B, B))`` (the layout conversion is done once, outside the timing).
Every sparse result is checked against the dense one (``torch.testing.assert_close``,
rtol 1e-3, atol 1e-3: the summation order differs).

*Time.* All variants of one (sparsity, batch) cell are timed in the same process, one
after the other, interleaved over ``--rounds`` rounds of ``--repeat`` calls each after a
warm-up; the table shows the fastest call of each variant (on a shared machine the
minimum is the measurement least inflated by other processes) and the ratio ``dense
time / sparse time`` (> 1: the sparse kernel is faster). Read ratios, not milliseconds.
``torch.get_num_threads()`` (``--threads`` sets it) and the 1-minute load average are
printed with the table.

*2:4 semi-structured.* ``torch.sparse.to_sparse_semi_structured`` needs a CUDA GPU with
compute capability >= 8.0 (CUTLASS / cuSPARSELt kernels); on such a machine the script
also times a 2:4 fp16 weight against dense fp16. On CPU it says why it skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

SPARSITIES = (0.5, 0.7, 0.9, 0.95)
BATCHES = (1, 8, 128)


def unstructured(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = round(sparsity * weight.numel())
    threshold = weight.abs().flatten().kthvalue(k).values
    return torch.where(weight.abs() > threshold, weight, torch.zeros_like(weight))


def block_sparse(weight: torch.Tensor, sparsity: float, block: int) -> torch.Tensor:
    rows, cols = weight.shape
    blocks = weight.reshape(rows // block, block, cols // block, block)
    norms = blocks.pow(2).sum(dim=(1, 3))
    k = round(sparsity * norms.numel())
    drop = norms.flatten().argsort()[:k]
    keep = torch.ones(norms.numel(), dtype=torch.bool)
    keep[drop] = False
    keep = keep.reshape(norms.shape)[:, None, :, None]
    return (blocks * keep).reshape(rows, cols)


def time_call(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` calls after a warm-up (the least disturbed by other load)."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cuda_semi_structured(size: int, repeat: int) -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: to_sparse_semi_structured has CUDA kernels only"}
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return {"skipped": f"CUDA capability {major}.{minor} < 8.0 has no 2:4 sparse kernels"}
    from torch.sparse import to_sparse_semi_structured

    gen = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(size, size, device="cuda", dtype=torch.float16, generator=gen)
    groups = weight.abs().reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(2, dim=1).indices, True)
    weight = weight * keep.reshape(weight.shape)
    sparse = to_sparse_semi_structured(weight)
    rows = []
    for batch in BATCHES:
        x = torch.randn(max(batch, 32), size, device="cuda", dtype=torch.float16, generator=gen)

        def dense(x: torch.Tensor = x) -> None:
            F.linear(x, weight)
            torch.cuda.synchronize()

        def semi(x: torch.Tensor = x) -> None:
            F.linear(x, sparse)
            torch.cuda.synchronize()

        d, s = time_call(dense, repeat), time_call(semi, repeat)
        rows.append({"batch": batch, "dense_ms": d * 1e3, "semi_ms": s * 1e3, "speedup": d / s})
    return {"rows": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(args.size, args.size, generator=gen)
    results = []
    for sparsity in args.sparsities:
        weights = {
            "csr": unstructured(base, sparsity),
            "bsr": block_sparse(base, sparsity, args.block),
        }
        layouts = {
            "csr": weights["csr"].to_sparse_csr(),
            "bsr": weights["bsr"].to_sparse_bsr((args.block, args.block)),
        }
        for batch in args.batches:
            x = torch.randn(batch, args.size, generator=gen)
            w, lay = weights, layouts
            variants: dict[str, Callable[[], Any]] = {
                "dense": lambda x=x, w=w: F.linear(x, w["csr"]),
                "csr": lambda x=x, lay=lay: torch.sparse.mm(lay["csr"], x.T).T,
                "dense_block": lambda x=x, w=w: F.linear(x, w["bsr"]),
                "bsr": lambda x=x, lay=lay: torch.sparse.mm(lay["bsr"], x.T).T,
            }
            expected = {"csr": F.linear(x, weights["csr"]), "bsr": F.linear(x, weights["bsr"])}
            for name in ("csr", "bsr"):
                torch.testing.assert_close(variants[name](), expected[name], rtol=1e-3, atol=1e-3)
            rounds: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    rounds[name].append(time_call(fn, args.repeat))
            ms = {name: min(t) * 1e3 for name, t in rounds.items()}
            row = {
                "sparsity": sparsity,
                "batch": batch,
                **{f"{name}_ms": value for name, value in ms.items()},
                "csr_speedup": ms["dense"] / ms["csr"],
                "bsr_speedup": ms["dense_block"] / ms["bsr"],
            }
            results.append(row)
            print(
                f"  {sparsity:.0%} batch {batch:>3}: dense {ms['dense']:8.3f} ms  csr "
                f"{ms['csr']:8.3f} ms ({row['csr_speedup']:.2f}x)  bsr {ms['bsr']:8.3f} ms "
                f"({row['bsr_speedup']:.2f}x)",
                file=sys.stderr,
                flush=True,
            )
    return {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg()[0],
        },
        "settings": {
            "size": args.size,
            "block": args.block,
            "repeat": args.repeat,
            "rounds": args.rounds,
        },
        "rows": results,
        "cuda_semi_structured": cuda_semi_structured(args.size, args.repeat),
    }


def table(data: dict[str, Any]) -> str:
    size = data["settings"]["size"]
    block = data["settings"]["block"]
    lines = [
        f"fp32 {size}x{size} weight, y = x @ W.T; speedup = dense time / sparse time (>1: faster)",
        "",
        "| sparsity | batch | dense ms | CSR ms | CSR speedup | dense ms (block) | "
        f"BSR {block}x{block} ms | BSR speedup |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['sparsity']:.0%} | {r['batch']} | {r['dense_ms']:.3f} | {r['csr_ms']:.3f} | "
            f"{r['csr_speedup']:.2f}x | {r['dense_block_ms']:.3f} | {r['bsr_ms']:.3f} | "
            f"{r['bsr_speedup']:.2f}x |"
        )
    m = data["machine"]
    lines += [
        "",
        f"torch {m['torch']}, {m['threads']} threads, {m['cpus']} CPUs, load average "
        f"{m['loadavg']:.2f}",
    ]
    semi = data["cuda_semi_structured"]
    if "skipped" in semi:
        lines.append(f"2:4 to_sparse_semi_structured: skipped ({semi['skipped']})")
    else:
        for r in semi["rows"]:
            lines.append(
                f"2:4 fp16 batch {r['batch']}: dense {r['dense_ms']:.3f} ms, semi-structured "
                f"{r['semi_ms']:.3f} ms ({r['speedup']:.2f}x)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="calls per round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--smoke", action="store_true", help="256 x 256, 1 round: CI")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.sparsities = SPARSITIES
    args.batches = BATCHES
    if args.smoke:
        args.size, args.block, args.repeat, args.rounds = 256, 16, 2, 1
    data = run(args)
    print(table(data))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(data, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
