"""LLM-scale benchmark: a TinyLlama-shaped 1.1B Llama, built from its config (no download).

Run from the repository root::

    python benchmarks/bench_llm.py                       # every case, 1.1B (~10 min, ~16 GiB)
    python benchmarks/bench_llm.py --size tiny --smoke   # CI: a 4-layer toy, checks only
    python benchmarks/bench_llm.py --cases default_call,streaming_bool --json out.json

Methodology
-----------
*One fresh process per case* (``--case NAME`` runs one in this process): pruning
mutates the model and ``ru_maxrss`` is a process-lifetime peak.

*Model.* ``LlamaForCausalLM`` with TinyLlama-1.1B's shape (hidden 2048, intermediate
5632, 22 layers, 32 heads, 4 key/value heads, vocabulary 32000, untied head), fp32,
built on the meta device and materialised with ``to_empty``, then filled in place
from a seeded generator (normal, std 0.02; norms 1): no temporaries, no download.
The "block weights" are what the cases prune: the 7 projections of every decoder
layer (968M weights, 3.6 GiB); the embeddings and the output head stay dense.

*Calibration data.* 128 sequences of 128 random token ids (seeded), one batch.

*Measured.* Wall time of the call (``perf_counter``), user and system CPU time and
minor page faults of the process during it (``getrusage``), peak RSS above the model
(``ru_maxrss`` minus the RSS once the model and data exist) and RSS retained after it
(after ``gc.collect`` and ``malloc_trim``), both also as multiples of the block
weights. Timings on a shared machine are noisy: the 1-minute load average each case
saw is printed with the table.

Cases:

* ``torch_l1``: torch's own path, ``prune.global_unstructured(block weights,
  prune.L1Unstructured, amount=0.5)``, the baseline of ``docs/benchmarks.md``. Its
  peak at 403M is 11.75x the weights, so at 1.1B it cannot fit this machine; the case
  runs under an address-space cap (``RLIMIT_AS``: the process's current size plus
  ``MemAvailable`` less 3 GiB), so it fails with torch's allocation error instead of
  driving the machine out of memory, and the table says how far it got.
* ``default_call``: ``GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()``,
  the plain call (``strategy="auto"``; the table says what it chose).
* ``streaming_bool``: the same with ``strategy="streaming", mask_dtype=torch.bool``.
* ``plain_forward``: ``model(tokens)`` under ``no_grad``: the forward pass over the
  calibration data that sequential calibration is compared with.
* ``oneshot_wanda``: ``LayerPruningContext({"model.layers.*.*.*_proj": WandaCriterion(0.5)},
  model=model).prune(calibration_data=tokens)``: calibration with the whole model.
* ``sequential_wanda``: the same context through
  :func:`prunefw.sequential.prune_sequential`, block by block. Its "calibration"
  time is everything but computing and applying masks: the capture of the first
  block's inputs plus every block forward (the observing pass and the pruned pass),
  reported apart.

*Checkpoint size.* After the global cases, ``torch.save(model.state_dict())`` to a
temporary file: its size (the masks are part of a pruned model's state_dict).

Masks are checked: exact counts (50% of the block weights for the global cases,
``round(0.5 * in_features)`` per row for Wanda), and ``streaming_bool`` must equal
``default_call``'s masks (fingerprints).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GIB = 1024**3
SEED = 0
SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent
TOKENS = (128, 128)
TARGETS = "model.layers.*.*.*_proj"
#: name: (hidden, intermediate, layers, heads, kv heads, vocabulary)
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "1.1b": (2048, 5632, 22, 32, 4, 32000),
    "tiny": (64, 176, 4, 4, 2, 512),
}
CASES = (
    "plain_forward",
    "torch_l1",
    "default_call",
    "streaming_bool",
    "oneshot_wanda",
    "sequential_wanda",
)
#: Memory kept free for the rest of the machine when ``torch_l1`` gets its address-space cap.
RESERVE = 3 * GIB


def build_model(size: str) -> Any:
    """The Llama of ``size``, materialised from the meta device and filled from a seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, intermediate, layers, heads, kv_heads, vocab = SIZES[size]
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
        for module in model.modules():  # non-persistent buffers (rotary inv_freq): rebuild
            if hasattr(module, "inv_freq") and hasattr(module, "config"):
                fresh = type(module)(module.config)
                for key, buffer in fresh.named_buffers(recurse=False):
                    getattr(module, key).copy_(buffer)
    model.eval()
    return model


def tokens(size: str) -> Any:
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    batch, length = TOKENS if size == "1.1b" else (4, 16)
    return torch.randint(0, SIZES[size][5], (batch, length), generator=generator)


def _statm(field: int) -> int:
    """Bytes of ``/proc/self/statm``'s field: 0 the address space, 1 the resident set."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[field]) * os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    return _statm(1)


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _masks(model: Any) -> list[Any]:
    return [module.weight_mask for module in model.modules() if hasattr(module, "weight_mask")]


def _fingerprint(masks: Sequence[Any]) -> str:
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for mask in masks:
        digest.update(mask.detach().to(torch.uint8).contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_case(name: str, size: str) -> dict[str, Any]:
    """Build the model, run one case, measure it, check its masks."""
    import torch

    import prunefw
    from prunefw import sequential
    from prunefw.contexts import base

    model = build_model(size)
    data = tokens(size)
    ctx = prunefw.LayerPruningContext(
        {TARGETS: prunefw.MagnitudeCriterion(amount=0.5)}, model=model
    )
    block_weights = sum(t.module.weight.numel() for t in ctx.targets)
    pairs = [(t.module, t.name) for t in ctx.targets]
    del ctx
    timers: dict[str, float] = {"calibration_s": 0.0}
    phase = ["capture"]

    def timed(function: Callable[..., Any], label: str | None = None) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                timers["calibration_s"] += spent
                key = f"{label or phase[0]}_s"
                timers[key] = timers.get(key, 0.0) + spent

        return wrapper

    def observing(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            phase[0] = "observing"
            try:
                return function(*args, **kwargs)
            finally:
                phase[0] = "pruned_pass"

        return wrapper

    result: dict[str, Any] = {"case": name, "size": size}
    if name == "plain_forward":

        def run() -> None:
            with torch.no_grad():
                model(data)

    elif name == "torch_l1":
        from torch.nn.utils import prune

        from prunefw.contexts.global_context import available_memory

        def run() -> None:
            available = available_memory()  # the figure strategy="auto" decides with
            if available is None:
                raise OSError("the available memory is unknown: no cap for torch_l1")
            cap = _statm(0) + max(available - RESERVE, GIB)
            resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
            result["cap_above_model_bytes"] = cap - _statm(0)
            try:
                prune.global_unstructured(pairs, prune.L1Unstructured, amount=0.5)
            except RuntimeError as exc:  # torch's "DefaultCPUAllocator: can't allocate memory"
                if "alloc" not in str(exc):
                    raise
                result["out_of_memory"] = str(exc).splitlines()[0][:160]
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)

    elif name in ("default_call", "streaming_bool"):
        options: dict[str, Any] = {}
        if name == "streaming_bool":
            options = {"strategy": "streaming", "mask_dtype": torch.bool}

        def run() -> None:
            ctx = prunefw.GlobalPruningContext(
                model, prunefw.MagnitudeCriterion(amount=0.5), **options
            )
            ctx.prune()
            result["strategy_used"] = ctx.strategy_used

    else:
        from prunefw_wanda import WandaCriterion

        ctx = prunefw.LayerPruningContext({TARGETS: WandaCriterion(0.5)}, model=model)
        if name == "oneshot_wanda":
            base.calibrate = timed(base.calibrate)  # type: ignore[assignment]

            def run() -> None:
                ctx.prune(calibration_data=data)

        else:
            sequential._call_block = timed(sequential._call_block)  # type: ignore[assignment]
            sequential._capture = timed(sequential._capture, "capture")  # type: ignore[assignment]
            layer = type(ctx)
            layer._prune_all = observing(layer._prune_all)  # type: ignore[method-assign]
            blocks: list[int] = []

            def run() -> None:
                sequential.prune_sequential(
                    ctx, data, progress=lambda event: blocks.append(event.done)
                )
                result["progress_events"] = len(blocks)

    gc.collect()
    rss_model = _rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = after.ru_maxrss * 1024 - rss_model
    gc.collect()
    _trim()
    result.update(
        time_s=elapsed,
        user_s=after.ru_utime - usage.ru_utime,
        system_s=after.ru_stime - usage.ru_stime,
        minor_faults=after.ru_minflt - usage.ru_minflt,
        rss_model_bytes=rss_model,
        peak_above_model_bytes=peak,
        retained_bytes=_rss() - rss_model,
        block_weight_bytes=block_weights * 4,
        loadavg_1min=load,
        torch_threads=torch.get_num_threads(),
    )
    if name.endswith("wanda"):
        result.update(timers)
    masks = _masks(model)
    if masks:
        pruned = sum(int((mask == 0).sum()) for mask in masks)
        result.update(
            pruned=pruned, fingerprint=_fingerprint(masks), mask_dtype=str(masks[0].dtype)
        )
        if name.endswith("wanda"):
            rows_ok = all(
                bool(((mask == 0).sum(dim=1) == round(0.5 * mask.shape[1])).all()) for mask in masks
            )
            result["check"] = "ok" if rows_ok and len(masks) == 7 * SIZES[size][2] else "FAIL"
        else:
            result["check"] = "ok" if pruned == round(0.5 * block_weights) else "FAIL"
            result.update(_checkpoint_sizes(model))
    return result


def _checkpoint_sizes(model: Any) -> dict[str, int]:
    """Bytes of ``torch.save(model.state_dict())`` and of its masks."""
    import tempfile

    import torch

    state = model.state_dict()
    masks = sum(t.numel() * t.element_size() for k, t in state.items() if k.endswith("_mask"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(state, path)
        return {"checkpoint_bytes": path.stat().st_size, "mask_bytes": masks}


# --------------------------------------------------------------------------- driver


def spawn(name: str, size: str, timeout: float | None) -> dict[str, Any]:
    cmd = [sys.executable, str(SCRIPT), "--case", name, "--size", size]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"case": name, "error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    tail = [line for line in proc.stderr.splitlines() if line.strip()]
    return {"case": name, "error": tail[-1] if tail else f"exit status {proc.returncode}"}


def table(results: Sequence[dict[str, Any]]) -> str:
    forward = next((r for r in results if r["case"] == "plain_forward" and "error" not in r), None)
    headers = (
        "case",
        "time (s)",
        "user + sys (s)",
        "minor faults",
        "peak above model (GiB)",
        "peak / block weights",
        "retained (GiB)",
        "notes",
    )
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["case"], "FAILED: " + r["error"], "", "", "", "", "", ""])
            continue
        weights = r["block_weight_bytes"]
        notes = []
        if "check" in r:
            notes.append(f"masks {r['check']} ({r['pruned']:,} pruned, {r['mask_dtype']})")
        if r.get("strategy_used"):
            notes.append(f"ran {r['strategy_used']}")
        if "out_of_memory" in r:
            notes.append(
                f"did not fit: out of memory after {r['time_s']:.1f} s with a cap of "
                f"{r['cap_above_model_bytes'] / GIB:.1f} GiB above the model "
                f"({r['out_of_memory']})"
            )
        if "checkpoint_bytes" in r:
            notes.append(
                f"state_dict file {r['checkpoint_bytes'] / GIB:.2f} GiB "
                f"(masks {r['mask_bytes'] / GIB:.2f} GiB)"
            )
        if "calibration_s" in r:
            ratio = (
                f" = {r['calibration_s'] / forward['time_s']:.2f}x plain_forward" if forward else ""
            )
            notes.append(f"calibration {r['calibration_s']:.1f} s{ratio}")
            if "observing_s" in r:
                notes.append(
                    f"of which capture {r.get('capture_s', 0.0):.1f} s, observing passes "
                    f"{r['observing_s']:.1f} s, pruned passes {r.get('pruned_pass_s', 0.0):.1f} s"
                )
        if "progress_events" in r:
            notes.append(f"{r['progress_events']} progress events")
        rows.append(
            [
                r["case"],
                f"{r['time_s']:.1f}",
                f"{r['user_s']:.1f} + {r['system_s']:.1f}",
                f"{r['minor_faults']:,}",
                f"{r['peak_above_model_bytes'] / GIB:.2f}",
                f"{r['peak_above_model_bytes'] / weights:.2f}",
                f"{r['retained_bytes'] / GIB:.2f}",
                "; ".join(notes),
            ]
        )
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [line(row) for row in rows]
    loads = [r["loadavg_1min"] for r in results if "loadavg_1min" in r]
    if loads:
        lines.append(
            f"\n1-min load average seen by the cases: {min(loads):.1f} to {max(loads):.1f} "
            f"({os.cpu_count()} CPUs)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LLM-scale benchmark (see the module docstring)")
    parser.add_argument("--size", choices=list(SIZES), default="1.1b")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--case", choices=CASES, help="run one case in this process")
    parser.add_argument("--json", metavar="PATH", help="write every result as JSON")
    parser.add_argument("--smoke", action="store_true", help="exit 1 unless every case is ok")
    parser.add_argument("--timeout", type=float, help="seconds per case")
    args = parser.parse_args(argv)
    if importlib_missing("prunefw"):
        sys.path.insert(0, str(REPO_ROOT))
    if args.case:
        print(json.dumps(run_case(args.case, args.size)), flush=True)
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {', '.join(unknown)}; choose from {', '.join(CASES)}")
    results = []
    for name in names:
        result = spawn(name, args.size, args.timeout)
        print(f"  {name}: {result.get('time_s', result.get('error'))}", file=sys.stderr, flush=True)
        results.append(result)
    by_name = {r["case"]: r for r in results}
    lean, default = by_name.get("streaming_bool"), by_name.get("default_call")
    if lean and default and "fingerprint" in lean and "fingerprint" in default:
        same = lean["fingerprint"] == default["fingerprint"]
        lean["check"] = lean["check"] + "; == default_call" if same else "FAIL: != default_call"
    hidden, intermediate, layers, *_ = SIZES[args.size]
    print(
        f"size {args.size}: Llama, hidden {hidden}, intermediate {intermediate}, {layers} layers; "
        f"calibration {TOKENS[0]} x {TOKENS[1]} tokens"
        if args.size == "1.1b"
        else f"size {args.size}"
    )
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    failed = [
        r["case"] for r in results if "error" in r or ("check" in r and "ok" not in r["check"])
    ]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed and (args.smoke or any("check" in r for r in results)) else 0


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


if __name__ == "__main__":
    sys.exit(main())
