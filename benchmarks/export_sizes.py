"""File sizes of pruned models: dense, masked, permanent and compressed checkpoints.

Run from the repository root::

    python benchmarks/export_sizes.py              # a Linear stack and the 58M Llama (a minute)
    python benchmarks/export_sizes.py --smoke      # CI: tiny models, checks the round trips
    python benchmarks/export_sizes.py --json out.json

Methodology
-----------
*Models.* ``linear-stack``: 4 x ``Linear(2048, 2048)`` (16.8M weights, every weight
pruned). ``llama-58m``: the 58M-parameter Llama of issue 14 (hidden 512, MLP 1376, 8
layers, vocabulary 32000, untied head), pruned with prunefw's defaults for
transformers: the linear layers of the blocks (25.2M weights), embeddings and output
head dense (32.8M). Random seeded weights.

*Pruning.* ``50%`` and ``90%``: ``GlobalPruningContext(model, MagnitudeCriterion(amount))``
in float32. ``2:4``: the model in bfloat16, every pruned weight keeps the 2 largest
``|w|`` of each 4 consecutive inputs (``prune.custom_from_mask``).

*Files* (all safetensors, sizes on disk). ``dense``: the unpruned model. ``masked``:
the pruned model's state_dict (``weight_orig`` and ``weight_mask``, what
``torch.save(model.state_dict())`` keeps). ``permanent``: after ``make_permanent``.
``compressed``: ``prunefw.export.save_compressed`` (``model.safetensors`` of the
directory for the Llama). The ratio is ``compressed / dense``; "pruned tensors" is the
same ratio for the compressed weights only (values, bitmasks, row offsets, shapes
against their dense bytes), the part the format controls. Every compressed file is
loaded back with ``load_compressed`` into a fresh model and compared bit for bit with
the permanent model (``torch.equal``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from torch.nn.utils import prune

from prunefw import GlobalPruningContext, MagnitudeCriterion, make_permanent, prune_model
from prunefw.export import load_compressed, save_compressed
from prunefw.reparametrization import install_deepcopy_support, iter_pruned_tensors

LLAMA_58M = {
    "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
    "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000,
}  # fmt: skip
LLAMA_TINY = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96,
}  # fmt: skip


def build(name: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("linear-stack"):
        width = 256 if name.endswith("tiny") else 2048
        model: nn.Module = nn.Sequential(*(nn.Linear(width, width) for _ in range(4)))
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        sizes = LLAMA_TINY if name.endswith("tiny") else LLAMA_58M
        config = transformers.LlamaConfig(**sizes, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(config)
    return model.to(dtype).eval()


def prune_24(model: nn.Module) -> None:
    """Keep the 2 largest |w| of every 4 consecutive inputs of every default target."""
    prune_model(model, "magnitude", 0.0)  # the default targets, masks of ones
    for _, module, name in list(iter_pruned_tensors(model)):
        weight = getattr(module, name).detach()
        groups = weight.abs().reshape(-1, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, groups.topk(2, dim=1).indices, True)
        prune.custom_from_mask(module, name, keep.reshape(weight.shape))
        install_deepcopy_support(module)


def save(state: dict[str, torch.Tensor], path: Path) -> int:
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.stat().st_size


def measure(name: str, sparsity: str, directory: Path) -> dict[str, Any]:
    dtype = torch.bfloat16 if sparsity == "2:4" else torch.float32
    model = build(name, dtype)
    sizes = {"dense": save(model.state_dict(), directory / "dense.safetensors")}
    if sparsity == "2:4":
        prune_24(model)
    elif name.startswith("linear-stack"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=float(sparsity))).prune()
    else:
        prune_model(model, "magnitude", float(sparsity))
    sizes["masked"] = save(model.state_dict(), directory / "masked.safetensors")
    permanent = make_permanent(copy.deepcopy(model))
    sizes["permanent"] = save(permanent.state_dict(), directory / "permanent.safetensors")
    target = directory / ("compressed.safetensors" if name.startswith("linear") else "llama")
    start = time.perf_counter()
    report = save_compressed(model, target)
    save_seconds = time.perf_counter() - start
    sizes["compressed"] = report.file_bytes
    fresh = build(name, dtype)
    start = time.perf_counter()
    load_compressed(fresh, report.path)
    load_seconds = time.perf_counter() - start
    got, want = fresh.state_dict(), permanent.state_dict()
    identical = set(got) == set(want) and all(torch.equal(got[k], v) for k, v in want.items())
    row = {
        "model": name,
        "sparsity": sparsity,
        "dtype": str(dtype).removeprefix("torch."),
        "format": report.format,
        "bytes": sizes,
        "ratio": sizes["compressed"] / sizes["dense"],
        "pruned_tensors_ratio": report.compressed_tensor_bytes / report.dense_tensor_bytes,
        "masked_ratio": sizes["masked"] / sizes["dense"],
        "round_trip_bit_identical": identical,
        "save_seconds": save_seconds,
        "load_seconds": load_seconds,
    }
    print(f"  {name} {sparsity}: {row['ratio']:.3f}x, identical={identical}", file=sys.stderr)
    return row


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | pruning | dtype | dense MiB | masked MiB | permanent MiB | compressed MiB | "
        "compressed / dense | pruned tensors | format | round trip |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        b = r["bytes"]
        pruning = r["sparsity"] if r["sparsity"] == "2:4" else f"{r['sparsity']:.0%}"
        lines.append(
            f"| {r['model']} | {pruning} "
            f"| {r['dtype']} | {mib(b['dense'])} | {mib(b['masked'])} | {mib(b['permanent'])} | "
            f"{mib(b['compressed'])} | {r['ratio']:.3f}x | {r['pruned_tensors_ratio']:.3f}x | "
            f"{r['format']} | {'bit-identical' if r['round_trip_bit_identical'] else 'DIFFERS'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="linear-stack,llama-58m")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--smoke", action="store_true", help="tiny models: CI")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    if args.smoke:
        names = ["linear-stack-tiny", "llama-tiny"]
    rows = []
    for name in names:
        for sparsity in (0.5, 0.9, "2:4"):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(measure(name, sparsity, Path(tmp)))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"rows": rows}, file, indent=2)
    return 0 if all(r["round_trip_bit_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
