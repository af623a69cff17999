"""Structured pruning that pays off: parameters and CPU latency of shrunk models.

Run from the repository root::

    python benchmarks/shrink_latency.py              # the digits CNN and two Llamas (minutes)
    python benchmarks/shrink_latency.py --smoke      # CI: tiny models, checks the outputs
    python benchmarks/shrink_latency.py --json out.json

Methodology
-----------
*Models.* ``cnn``: ``prunefw.examples.DigitsCNN`` (16 and 32 conv channels), half the
output channels of both convolutions pruned with ``LnStructuredCriterion(0.5)``, their
biases pruned with them (``prune_channel_biases``), a batch of 64 digits.
``llama-58m``: the 58M-parameter Llama of issue 14 (hidden 512, MLP 1376, 8 layers,
8 heads, vocabulary 32000, untied head), and ``llama-gqa``: a Llama with Llama-3's
proportions (MLP 3.5x hidden, 4 query heads per key/value head) at hidden 1024, 8
layers, vocabulary 8192. In every block ``gate_proj`` loses half its rows
(``LnStructuredCriterion(0.5)``); ``shrink`` removes them with the coupled rows of
``up_proj`` and columns of ``down_proj``. Input: 1 x 128 token ids. Weights are random
(seeded): latency does not depend on their values.

*Variants.* ``dense``: a copy taken before pruning. ``masked``: the pruned model
(torch's forward pre-hooks recompute ``weight = weight_orig * weight_mask`` every call).
``permanent``: ``make_permanent`` of a copy (dense shapes, zeros). ``shrunk``:
``prunefw.shrink`` of a copy. Outputs of the shrunk model are compared with the masked
model's (largest absolute difference; ``shrink`` itself checks them with
``torch.testing.assert_close``'s default tolerance).

*Time.* ``torch.inference_mode()``, all variants of a model in the same process,
interleaved over ``--rounds`` rounds of ``--repeat`` forwards after a warm-up; the table
shows the fastest forward of each variant (the measurement least inflated by other
processes on a shared machine) and ``dense / variant`` (> 1: faster than dense), for wall
time and for CPU time (``time.process_time``, all threads: with ``--threads 1`` it is the
forward's own compute, whatever else runs on the machine). Read the ratios;
``torch.get_num_threads()`` and the load average are printed with the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunefw import LayerPruningContext, LnStructuredCriterion, make_permanent
from prunefw.examples import DigitsCNN
from prunefw.shrink import prune_channel_biases, shrink_model

LLAMAS = {
    "llama-58m": {
        "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
        "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000,
    },
    "llama-gqa": {
        "hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 8,
        "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 8192,
    },
    "llama-tiny": {  # --smoke
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96,
    },
}  # fmt: skip


def cnn_case(smoke: bool) -> tuple[nn.Module, nn.Module, Any, Callable[[nn.Module, Any], Any]]:
    torch.manual_seed(0)
    model = DigitsCNN()
    dense = copy.deepcopy(model)
    criteria = {"features.0": LnStructuredCriterion(0.5), "features.2": LnStructuredCriterion(0.5)}
    LayerPruningContext(criteria, model=model).prune()
    prune_channel_biases(model)
    x = torch.randn(8 if smoke else 64, 64)
    return dense, model, x, lambda m, inputs: m(inputs)


def llama_case(name: str) -> tuple[nn.Module, nn.Module, Any, Callable[[nn.Module, Any], Any]]:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**LLAMAS[name], tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    dense = copy.deepcopy(model)
    rule = {"model.layers.*.mlp.gate_proj": LnStructuredCriterion(0.5)}
    LayerPruningContext(rule, model=model).prune()
    tokens = 16 if name == "llama-tiny" else 128
    ids = torch.randint(0, config.vocab_size, (1, tokens))
    return dense, model, {"input_ids": ids}, lambda m, inputs: m(**inputs, use_cache=False).logits


def fastest(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """The fastest wall time and the smallest CPU time (all threads) of ``repeat`` calls."""
    fn()
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    dense, masked, inputs, forward = cnn_case(args.smoke) if name == "cnn" else llama_case(name)
    permanent = make_permanent(copy.deepcopy(masked))
    shrunk = copy.deepcopy(masked)
    start = time.perf_counter()
    report = shrink_model(shrunk, inputs)
    shrink_seconds = time.perf_counter() - start
    variants = {"dense": dense, "masked": masked, "permanent": permanent, "shrunk": shrunk}
    for model in variants.values():
        model.eval()
    with torch.inference_mode():
        diff = float((forward(shrunk, inputs) - forward(masked, inputs)).abs().max())
        times: dict[str, float] = {key: float("inf") for key in variants}
        cpu: dict[str, float] = {key: float("inf") for key in variants}
        for _ in range(args.rounds):
            for key, model in variants.items():
                t, c = fastest(lambda model=model: forward(model, inputs), args.repeat)
                times[key], cpu[key] = min(times[key], t), min(cpu[key], c)
    row = {
        "model": name,
        "parameters": {key: parameters(model) for key, model in variants.items()},
        "ms": {key: t * 1e3 for key, t in times.items()},
        "speedup": {key: times["dense"] / t for key, t in times.items()},
        "cpu_ms": {key: t * 1e3 for key, t in cpu.items()},
        "cpu_speedup": {key: cpu["dense"] / t for key, t in cpu.items()},
        "max_abs_diff_shrunk_vs_masked": diff,
        "shrink_seconds": shrink_seconds,
        "removed_layers": len(report.removed),
    }
    print(
        f"  {name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row["ms"].items()),
        file=sys.stderr,
        flush=True,
    )
    return row


def table(data: dict[str, Any]) -> str:
    lines = [
        "| model | input | parameters dense -> shrunk | dense ms | masked ms | permanent ms | "
        "shrunk ms | shrunk speedup (wall) | shrunk speedup (CPU time) | "
        "max abs diff (shrunk vs masked) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        p, ms = r["parameters"], r["ms"]
        shape = "64 x 64 px" if r["model"] == "cnn" else "1 x 128 tokens"
        if data["settings"]["smoke"]:
            shape = "smoke"
        lines.append(
            f"| {r['model']} | {shape} | {p['dense']:,} -> {p['shrunk']:,} "
            f"({p['shrunk'] / p['dense']:.2f}x) | {ms['dense']:.2f} | {ms['masked']:.2f} | "
            f"{ms['permanent']:.2f} | {ms['shrunk']:.2f} | {r['speedup']['shrunk']:.2f}x | "
            f"{r['cpu_speedup']['shrunk']:.2f}x | {r['max_abs_diff_shrunk_vs_masked']:.2g} |"
        )
    m = data["machine"]
    lines += [
        "",
        f"torch {m['torch']}, {m['threads']} threads, {m['cpus']} CPUs, load average "
        f"{m['loadavg_before']:.2f} before, {m['loadavg_after']:.2f} after",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,llama-58m,llama-gqa")
    parser.add_argument("--repeat", type=int, default=5, help="forwards per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--smoke", action="store_true", help="tiny models, 1 round: CI")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models.split(",")
    if args.smoke:
        names, args.repeat, args.rounds = ["cnn", "llama-tiny"], 2, 1
    load_before = os.getloadavg()[0]
    rows = [measure(name, args) for name in names]
    data = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg()[0],
        },
        "settings": {"repeat": args.repeat, "rounds": args.rounds, "smoke": args.smoke},
        "rows": rows,
    }
    print(table(data))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(data, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
