"""``prunefw export``: write a pruned model as a compressed checkpoint.

Builds the model from ``--model``, loads ``--checkpoint`` if given (a masked
checkpoint keeps its masks, a permanent one its zeros, see
:func:`prunefw.cli.report.load_model`), and writes it with
:func:`prunefw.export.save_compressed`: a transformers model to a model directory
(``config.json`` with the compressed-tensors sparsity config, ``model.safetensors``),
any other model to one ``.safetensors`` file. Prints the file's size beside the
dense size (``--json`` for a JSON object). Needs the ``export`` extra
(``pip install 'prunefw[export]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prunefw.cli._model import add_model_argument
from prunefw.cli.report import load_model
from prunefw.export import FORMATS, save_compressed

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Export; return the exit code."""
    model, _ = load_model(args.model, args.checkpoint)
    report = save_compressed(model, args.out, format=args.format)
    if args.json:
        data = {
            "output": str(report.path),
            "format": report.format,
            "tensors": list(report.tensors),
            "file_bytes": report.file_bytes,
            "dense_bytes": report.dense_bytes,
            "ratio": report.ratio,
            "files": [str(path) for path in report.files],
        }
        print(json.dumps(data, indent=2))
    elif not args.quiet:
        print(f"wrote {report.describe()}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command to ``commands``."""
    parser = commands.add_parser(
        "export",
        help="write a pruned model as a compressed checkpoint (compressed-tensors formats)",
        description=(
            "Build the model, optionally load a (masked or permanent) checkpoint, and write the "
            "pruned weights in the compressed-tensors sparse formats: sparse-bitmask, or "
            "sparse-24-bitmask when every compressed weight is 2:4. A transformers model is "
            "written to a model directory, any other model to one .safetensors file. Read it "
            "back with prunefw.export.load_compressed (or load_pretrained for a directory)."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="IN",
        help="state_dict file (.pt or .safetensors) to load first: pruned with masks, or permanent",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="a .safetensors file, or for a transformers model a model directory",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the sparse format (default: sparse-24-bitmask if every compressed weight is 2:4, "
        "else sparse-bitmask)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    parser.set_defaults(run=run)
