"""``prunefw prune``: apply a recipe to a model and save the result.

1. The recipe is read and validated (:func:`prunefw.recipes.load_recipe`) and
   ``--out`` is checked (not under a file, writable) before anything else, so a
   bad recipe or output fails fast.
2. The model is built from ``--model`` (``package.module:factory``, a Hugging
   Face model directory or a transformers config file) and, with
   ``--checkpoint``, loaded from a state_dict file (``torch.load(...,
   weights_only=True)`` or safetensors) or a model directory; pruned checkpoints
   keep their masks and the new pruning stacks on top.
3. The recipe is applied, all-or-nothing (:func:`prunefw.recipes.apply_recipe`),
   with progress bars on a terminal. ``--calibration FILE`` provides inputs for
   criteria that need activations; a batch that does not fit the model is an
   error naming the batch and the module it failed in.
4. The result is written atomically to ``--out``: with the pruning masks
   (``weight_orig``/``weight_mask``; load it with
   :func:`prunefw.load_pruned_state_dict`), or with ``--permanent`` as a plain
   state_dict (``model.load_state_dict``). The criterion history and the
   tensors' checksums go with it. An existing file keeps its mode, a symlink is
   written through, and SIGTERM removes the temporary file (see
   :mod:`prunefw._atomic`).
   An ``--out`` that ends with ``/`` (or is an existing directory) is a Hugging
   Face model directory: with ``--permanent``, a transformers model is written
   by ``save_pretrained`` (loads with ``from_pretrained``); otherwise the
   state_dict goes into sharded safetensors (plus ``config.json`` for a
   transformers model), which ``--model DIR/`` and ``--checkpoint DIR/`` read back
   with the masks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from prunefw._atomic import check_file_output
from prunefw.calibration import Forward, call_model
from prunefw.cli._calibration import read_calibration
from prunefw.cli._checksums import add_checksums
from prunefw.cli._model import (
    add_model_argument,
    is_pretrained_model,
    save_config_files,
    save_pretrained_files,
)
from prunefw.cli._progress import ProgressBars, progress_enabled
from prunefw.cli._writing import (
    DEFAULT_MAX_SHARD_SIZE,
    check_directory_output,
    is_directory_path,
    shard_size,
    write_checkpoint,
    write_directory,
    write_shards,
)
from prunefw.cli.report import load_model, print_report, report_data
from prunefw.errors import InvalidArgumentError, PrunefwError, add_note
from prunefw.history import PruningHistory
from prunefw.permanence import make_permanent
from prunefw.recipes import apply_recipe, load_recipe

__all__ = ["add_parser", "output_argument", "positive_int", "run"]


def output_argument(text: str) -> str:
    """Check ``--out`` is not empty (an argparse ``type=``: exit 2 otherwise).

    Example:
        >>> output_argument("pruned.pt")
        'pruned.pt'
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected a file, or a directory ending with /, got an empty path"
        )
    return text


def positive_int(text: str) -> int:
    """Parse a positive integer (an argparse ``type=``: exit 2 otherwise).

    Example:
        >>> positive_int("8")
        8
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


@dataclass(frozen=True)
class _Batch:
    """One calibration batch and its number in the file (1-based), for error messages."""

    number: int
    value: Any


def _describe_batch(batch: object) -> str:
    """Say what a calibration batch holds: ``a tensor of shape (8, 10)``, ``a dict (...)``."""
    if isinstance(batch, torch.Tensor):
        return f"a tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, tuple):
        return f"a tuple of {len(batch)} tensors of shapes " + ", ".join(
            str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in batch
        )
    if isinstance(batch, Mapping):
        parts = [
            f"{key}: {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
            for key, v in batch.items()
        ]
        return "a dict {" + ", ".join(parts) + "}"
    return f"a {type(batch).__name__}"


def _failing_module(model: nn.Module, traceback: TracebackType | None) -> str:
    """Name the innermost module of ``model`` whose code was running when the error rose."""
    names = {id(module): name for name, module in model.named_modules()}
    found = ""
    frames = traceback
    while frames is not None:
        owner = frames.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            name = names[id(owner)]
            found = f"module {name!r} ({type(owner).__name__})" if name else ""
        frames = frames.tb_next
    return found or f"the model ({type(model).__name__})"


def _numbered_calibration(
    path: Path, model: nn.Module, batches: list[Any]
) -> tuple[list[_Batch], Forward]:
    """Number the calibration batches; the forward names batch and module on failure.

    A batch that does not fit the model (a shape mismatch, a missing keyword
    argument) fails deep inside torch with no word of the input or the layer; the
    error becomes an :class:`~prunefw.errors.InvalidArgumentError` naming the
    ``--calibration`` file, the batch (number and shapes) and the module that
    raised, with torch's message. prunefw's own errors keep their type and get
    the batch as a note.
    """

    def forward(net: nn.Module, batch: _Batch) -> Any:
        try:
            return call_model(net, batch.value)
        except PrunefwError as exc:
            add_note(exc, f"on --calibration {path} batch #{batch.number}")
            raise
        except Exception as exc:
            where = _failing_module(model, exc.__traceback__)
            lines = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
            raise InvalidArgumentError(
                f"--calibration {path}: running batch #{batch.number} "
                f"({_describe_batch(batch.value)}) through the model failed in {where}: "
                f"{reason}{notes}"
            ) from exc

    return [_Batch(number, value) for number, value in enumerate(batches, 1)], forward


def _write(
    out: str,
    model: nn.Module,
    history: PruningHistory,
    *,
    permanent: bool,
    directory: bool,
    max_shard_size: int,
) -> str:
    """Write the result to ``out`` (a file, or a model ``directory``); return how to load it."""
    if not directory:
        write_checkpoint(Path(out), model.state_dict(), history)
        if permanent:
            return "permanent: a plain state_dict, load it with model.load_state_dict"
        return "with pruning masks: load it with prunefw.load_pruned_state_dict"
    pretrained = is_pretrained_model(model)
    if permanent and pretrained:

        def save(tmp: Path) -> None:
            save_pretrained_files(model, tmp, max_shard_size)
            add_checksums(tmp)

        write_directory(out, history, save)
        return f"permanent: a model directory, load it with {type(model).__name__}.from_pretrained"

    def fill(tmp: Path) -> None:
        write_shards(tmp, model.state_dict(), max_shard_size)
        if pretrained:
            save_config_files(model, tmp)

    write_directory(out, history, fill)
    if permanent:
        return "permanent: a model directory of a plain state_dict, read it with --checkpoint"
    if pretrained:
        return (
            "a model directory with pruning masks: read it with --model or --checkpoint "
            f"{out}, or load its state_dict with prunefw.load_pruned_state_dict"
        )
    return "a model directory with pruning masks: read it with --checkpoint"


def run(args: argparse.Namespace) -> int:
    """Prune and save; return the exit code."""
    recipe = load_recipe(args.recipe)
    directory = is_directory_path(args.out)
    if directory:
        check_directory_output(args.out)
    elif args.max_shard_size is not None:
        raise InvalidArgumentError(
            f"--max-shard-size applies to a model directory, and --out {args.out} is a file; "
            "end --out with / to write a directory"
        )
    else:
        check_file_output(args.out)  # a bad --out fails before the work, not after
    if args.sequential and args.calibration is None:
        raise InvalidArgumentError(
            "--sequential calibrates block by block and needs calibration inputs: "
            "add --calibration FILE (or drop --sequential)"
        )
    model, history = load_model(args.model, args.checkpoint)
    batches: list[_Batch] | None = None
    forward: Forward | None = None
    if args.calibration is not None:
        batches, forward = _numbered_calibration(
            args.calibration, model, read_calibration(args.calibration, args.batch_size)
        )
    with ProgressBars(enabled=progress_enabled(args.quiet)) as track:
        contexts = apply_recipe(
            model,
            recipe,
            calibration_data=batches,
            forward=forward,
            track=track,
            sequential=args.sequential,
        )
    applied = PruningHistory.from_contexts(contexts)
    history = history + applied
    if args.permanent:
        make_permanent(model)
    max_shard_size = args.max_shard_size or DEFAULT_MAX_SHARD_SIZE
    how = _write(
        args.out,
        model,
        history,
        permanent=args.permanent,
        directory=directory,
        max_shard_size=max_shard_size,
    )

    if args.json:
        data = report_data(model, history)
        print(json.dumps({"output": str(args.out), "permanent": args.permanent, **data}, indent=2))
        return 0
    if args.quiet:
        return 0
    data = report_data(model, history, labels=set(applied.tensors))
    total = data["total"]
    print(
        f"pruned {len(data['tensors'])} tensors of {type(model).__name__} with {recipe.source}: "
        f"{total['zeros']} of their {total['numel']} entries are zero ({total['sparsity']:.2%})"
    )
    print_report(data, as_json=False)
    print(f"wrote {args.out} ({how})")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``prune`` sub-command to ``commands``."""
    parser = commands.add_parser(
        "prune",
        help="apply a recipe to a model and save the result",
        description=(
            "Build the model, optionally load a checkpoint, apply the recipe, write the result. "
            "Without --permanent the output keeps the pruning masks and loads back with "
            "prunefw.load_pruned_state_dict."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="IN",
        help="state_dict file (.pt or .safetensors) or Hugging Face model directory to load "
        "first (pruned or not)",
    )
    parser.add_argument(
        "--recipe", required=True, type=Path, help="TOML recipe (see docs/recipes.md)"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=output_argument,
        help="where to write the result: a file (.safetensors for safetensors, else "
        "torch.save), or a Hugging Face model directory if it ends with / or is an existing "
        "directory; replaced atomically, its mode kept, a symlink written through",
    )
    parser.add_argument(
        "--max-shard-size",
        type=shard_size,
        metavar="SIZE",
        help="largest safetensors shard of a directory --out, e.g. 500MB (default 5GB)",
    )
    parser.add_argument(
        "--permanent",
        action="store_true",
        help="remove the reparametrization (prune.remove): a plain state_dict with zeros",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="inputs for criteria that need activations: a tensor (batch dimension first) "
        "or a list of batches (tensors, tuples, or dicts of keyword arguments such as "
        "input_ids), saved with torch.save, or a one-tensor .safetensors file",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="calibration batch size when --calibration holds one tensor (default 32)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="calibrate block by block (decoder layers), each on the outputs of the pruned "
        "blocks before it, one block's statistics at a time: the Wanda/SparseGPT procedure, "
        "for large models (see docs/scale.md)",
    )
    parser.add_argument("--json", action="store_true", help="print the resulting report as JSON")
    parser.set_defaults(run=run)
