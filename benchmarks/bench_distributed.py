"""Global pruning of an FSDP2-sharded model on N processes vs single-process streaming.

Run from the repository root::

    python benchmarks/bench_distributed.py                        # small, 2 ranks
    python benchmarks/bench_distributed.py --size medium --json out.json
    python benchmarks/bench_distributed.py --size small --world 3 --criteria magnitude

Methodology
-----------
*Same weights.* ``nn.Sequential`` of ``layers`` square fp32 ``Linear(width, width,
bias=False)`` (``small`` 4 x 1024 = 4.2M weights, ``medium`` 3 x 4096 = 50.3M). Row
``r`` of layer ``l`` is ``normal_`` from a generator seeded with ``(l, r)``, so a rank
fills exactly its rows of the full model and every layout holds the same weights.
The sharded model is built on the meta device, ``fully_shard``-ed (each Linear a unit,
then the root), ``to_empty(device="cpu")`` and filled: no rank ever holds a full layer.

*Cases, each in fresh processes.* ``single``: one process,
``GlobalPruningContext(model, [criterion], strategy="streaming").prune()``.
``sharded``: ``python -m torch.distributed.run --nproc_per_node N`` (gloo, 127.0.0.1),
every rank calls ``GlobalPruningContext(model, [criterion]).prune()``; ranks meet at a
barrier before and after, the time is each rank's own call.

*Memory.* Before the call a process reads its RSS (``/proc/self/statm``); after it,
``ru_maxrss``. "peak above model" is the difference: what pruning costs on top of the
model, including what the pruned model keeps (the mask buffer and the recomputed
``weight``, 2 x the weights -- a rank's share of them when sharded). Page faults:
``ru_minflt`` during the call.

*Collectives.* ``prunefw.distributed.collective_stats()`` during the call: calls (votes
included), payload bytes (what this rank handed to collectives) and wire bytes (what
it sends with ring algorithms: ``2 (N-1)/N B`` per all-reduce of ``B`` bytes,
``(N-1) B`` per all-gather).

*Correctness.* After the measurement every case fingerprints each layer's full mask
(blake2b of ``mask != 0`` as bytes; the sharded case all-gathers the masks first) and
counts pruned entries; the driver requires the sharded fingerprints to equal the
single-process ones.

Theory for N ranks
------------------
One rank selection (a k-th smallest over all weights) is a radix select over 32-bit
keys: 2 passes, each one all-reduce of a 65536-bucket int64 histogram (512 KiB),
whatever the model size: ``2 (N-1)/N * 512 KiB`` < 1 MiB sent per rank per pass. A
percentile band needs two selections (4 passes). Besides: one all-reduce of the
survivor count (8 B), one all-gather of per-target tie counts (``8 (1 + selections)``
bytes per target per rank), an all-gather of the plan fingerprint (~100 B) and an 8 B
vote before each collective. Gathering the weights instead would send ``4 n (N-1)/N``
bytes per rank (201 MB per rank for the medium model). Each rank reads its ``n/N``
weights once per pass plus twice more (tie counts, masks), so the local work shrinks
as ``1/N`` while the collective cost per pass stays ~constant (latency-bound).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

SIZES = {"small": (4, 1024), "medium": (3, 4096)}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _criterion(name: str) -> Any:
    from prunefw import MagnitudeCriterion, PercentileCriterion, RandomCriterion

    if name == "magnitude":
        return MagnitudeCriterion(amount=0.5)
    if name == "percentile":
        return PercentileCriterion(0.25, 0.75)
    if name == "random":
        return RandomCriterion(0.5, seed=0)
    raise SystemExit(f"unknown criterion {name!r}")


def _fill_rows(weight: Any, layer: int, first: int) -> None:
    """Fill ``weight`` (rows ``first ..``) from per-row seeded generators."""
    import torch

    with torch.no_grad():
        for i in range(weight.shape[0]):
            generator = torch.Generator().manual_seed(layer * 1_000_003 + first + i)
            weight[i].normal_(generator=generator)


def _fingerprints(masks: list[Any]) -> list[str]:
    return [
        hashlib.blake2b((m != 0).to("cpu").numpy().tobytes(), digest_size=16).hexdigest()
        for m in masks
    ]


def run_single(size: str, criterion: str) -> dict[str, Any]:
    import torch
    from torch import nn

    from prunefw import GlobalPruningContext

    layers, width = SIZES[size]
    model = nn.Sequential(
        *[nn.utils.skip_init(nn.Linear, width, width, bias=False) for _ in range(layers)]
    )
    for layer, module in enumerate(model):
        _fill_rows(module.weight, layer, 0)
    crit = _criterion(criterion)
    rss, before, faults = _rss(), _maxrss(), _minflt()
    start = time.perf_counter()
    GlobalPruningContext(model, [crit], strategy="streaming").prune()
    seconds = time.perf_counter() - start
    peak, faults = _maxrss(), _minflt() - faults
    masks = [m.weight_mask for m in model]
    return {
        "case": "single",
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "rss_model": rss,
        "peak_above_model": peak - rss,
        "peak_is_lower_bound": before > rss + (64 << 20),
        "minflt": faults,
        "pruned": sum(int((m == 0).sum()) for m in masks),
        "numel": sum(m.numel() for m in masks),
        "fingerprints": _fingerprints(masks),
        "load": os.getloadavg()[0],
    }


def run_sharded(size: str, criterion: str) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from prunefw import GlobalPruningContext
    from prunefw.distributed import collective_stats, reset_collective_stats
    from prunefw.distributed._shards import _block_rows

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    layers, width = SIZES[size]
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])
    mesh = init_device_mesh("cpu", (world,))
    for module in model:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    for layer, module in enumerate(model):
        first, _, _ = _block_rows(module.weight)
        _fill_rows(module.weight.to_local(), layer, first)
    crit = _criterion(criterion)
    dist.barrier()
    rss, before, faults = _rss(), _maxrss(), _minflt()
    reset_collective_stats()
    wall = time.perf_counter()
    start = time.perf_counter()
    GlobalPruningContext(model, [crit]).prune()
    seconds = time.perf_counter() - start
    stats = collective_stats()
    peak, faults = _maxrss(), _minflt() - faults
    dist.barrier()
    wall = time.perf_counter() - wall
    result: dict[str, Any] = {
        "case": "sharded",
        "rank": rank,
        "world": world,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "wall_between_barriers": wall,
        "rss_model": rss,
        "peak_above_model": peak - rss,
        "peak_is_lower_bound": before > rss + (64 << 20),
        "minflt": faults,
        "collective_calls": stats.calls,
        "votes": stats.votes,
        "payload_bytes": stats.payload_bytes,
        "wire_bytes": stats.wire_bytes,
        "load": os.getloadavg()[0],
    }
    masks = [m.weight_mask.full_tensor() for m in model]  # verification, after measuring
    if rank == 0:
        result["pruned"] = sum(int((m == 0).sum()) for m in masks)
        result["numel"] = sum(m.numel() for m in masks)
        result["fingerprints"] = _fingerprints(masks)
    dist.destroy_process_group()
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _results(output: str) -> list[dict[str, Any]]:
    return [json.loads(line[7:]) for line in output.splitlines() if line.startswith("RESULT ")]


def _child(args: list[str], timeout: float) -> list[dict[str, Any]]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    results = _results(done.stdout)
    if done.returncode or not results:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"FAILED ({done.returncode}): {' '.join(args[-6:])}: {tail}")
    return results


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def drive(size: str, world: int, criteria: list[str], timeout: float) -> dict[str, Any]:
    me = os.path.abspath(__file__)
    report: dict[str, Any] = {"size": size, "world": world, "cases": {}}
    for criterion in criteria:
        single = _child(
            [sys.executable, me, "--case", "single", "--size", size, "--criteria", criterion],
            timeout,
        )[0]
        sharded = _child(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "1",
                "--nproc_per_node",
                str(world),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(_free_port()),
                me,
                "--case",
                "sharded",
                "--size",
                size,
                "--criteria",
                criterion,
            ],
            timeout,
        )
        sharded.sort(key=lambda r: r["rank"])
        same = sharded[0]["fingerprints"] == single["fingerprints"]
        report["cases"][criterion] = {"single": single, "sharded": sharded, "masks_equal": same}
        layers, width = SIZES[size]
        n = layers * width * width
        print(f"\n{criterion}, {size} ({layers} x {width}x{width} = {n / 1e6:.1f}M fp32 weights)")
        print(
            f"  masks identical to single-process streaming: {same} "
            f"({single['pruned']:,} of {single['numel']:,} pruned)"
        )
        print(
            f"  {'':<22}{'time':>9}{'peak above model':>19}{'minflt':>9}"
            f"{'collectives':>13}{'payload':>12}{'wire':>12}"
        )
        print(
            f"  {'single (streaming)':<22}{single['seconds']:>8.3f}s"
            f"{_mib(single['peak_above_model']):>19}{single['minflt']:>9}{'-':>13}{'-':>12}{'-':>12}"
        )
        for r in sharded:
            print(
                f"  {'sharded rank ' + str(r['rank']) + '/' + str(world):<22}{r['seconds']:>8.3f}s"
                f"{_mib(r['peak_above_model']):>19}{r['minflt']:>9}{r['collective_calls']:>13}"
                f"{_mib(r['payload_bytes']):>12}{_mib(r['wire_bytes']):>12}"
            )
        loads = [single["load"], *(r["load"] for r in sharded)]
        print(
            f"  threads: single {single['threads']}, per rank {sharded[0]['threads']}; "
            f"1-min load {min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} CPUs; "
            f"gathering the weights instead: {_mib(4 * n * (world - 1) / world)} per rank"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--criteria", default="magnitude,percentile")
    parser.add_argument("--case", choices=["single", "sharded"], help="(internal) one child run")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", metavar="PATH", help="write every measurement as JSON")
    args = parser.parse_args()
    if args.case == "single":
        print("RESULT " + json.dumps(run_single(args.size, args.criteria)), flush=True)
        return
    if args.case == "sharded":
        print("RESULT " + json.dumps(run_sharded(args.size, args.criteria)), flush=True)
        return
    report = drive(args.size, args.world, args.criteria.split(","), args.timeout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not all(case["masks_equal"] for case in report["cases"].values()):
        raise SystemExit("masks differ from single-process streaming")


if __name__ == "__main__":
    main()
