"""``prunefw prune``: apply a recipe to a model and save the result.

1. The recipe is read and validated (:func:`prunefw.recipes.load_recipe`) before
   anything else, so a bad recipe fails fast.
2. The model is built from ``--model`` (``package.module:factory``) and, with
   ``--checkpoint``, loaded from a state_dict file (``torch.load(...,
   weights_only=True)`` or safetensors; pruned checkpoints keep their masks and
   the new pruning stacks on top).
3. The recipe is applied, all-or-nothing (:func:`prunefw.recipes.apply_recipe`),
   with progress bars on a terminal. ``--calibration FILE`` provides inputs for
   criteria that need activations.
4. The result is written atomically to ``--out``: with the pruning masks
   (``weight_orig``/``weight_mask``; load it with
   :func:`prunefw.load_pruned_state_dict`), or with ``--permanent`` as a plain
   state_dict (``model.load_state_dict``). The criterion history goes with it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prunefw.cli._files import read_calibration, write_checkpoint
from prunefw.cli._model import add_model_argument
from prunefw.cli._progress import ProgressBars, progress_enabled
from prunefw.cli.report import load_model, print_report, report_data
from prunefw.history import PruningHistory
from prunefw.permanence import make_permanent
from prunefw.recipes import apply_recipe, load_recipe

__all__ = ["add_parser", "positive_int", "run"]


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


def run(args: argparse.Namespace) -> int:
    """Prune and save; return the exit code."""
    recipe = load_recipe(args.recipe)
    model, history = load_model(args.model, args.checkpoint)
    batches = None
    if args.calibration is not None:
        batches = read_calibration(args.calibration, args.batch_size)
    with ProgressBars(enabled=progress_enabled(args.quiet)) as track:
        contexts = apply_recipe(model, recipe, calibration_data=batches, track=track)
    applied = PruningHistory.from_contexts(contexts)
    history = history + applied
    if args.permanent:
        make_permanent(model)
    write_checkpoint(args.out, model.state_dict(), history)

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
    if args.permanent:
        how = "permanent: a plain state_dict, load it with model.load_state_dict"
    else:
        how = "with pruning masks: load it with prunefw.load_pruned_state_dict"
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
        help="state_dict file to load first (.pt or .safetensors; pruned or not)",
    )
    parser.add_argument(
        "--recipe", required=True, type=Path, help="TOML recipe (see docs/recipes.md)"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="where to write the result (.safetensors for safetensors, else torch.save)",
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
        "or a list of batches, saved with torch.save, or a one-tensor .safetensors file",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="calibration batch size when --calibration holds one tensor (default 32)",
    )
    parser.add_argument("--json", action="store_true", help="print the resulting report as JSON")
    parser.set_defaults(run=run)
