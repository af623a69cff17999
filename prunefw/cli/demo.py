"""``prunefw demo``: the main job, on real data, in seconds.

1. Trains :class:`~prunefw.examples.DigitsMLP` (64-128-64-10) on the 8x8 digits
   that scikit-learn ships, with a seeded split and seeded training, and measures
   its accuracy on the held-out images.
2. For each sparsity, prunes copies of the trained model with three recipes
   (global magnitude, layerwise magnitude with every Linear at the same
   sparsity, global random) and prints the accuracies (no fine-tuning).
3. Applies the recipe :data:`~prunefw.examples.DIGITS_RECIPE`
   (``docs/recipes/digits-mlp.toml``) to the trained model, checks that a deep
   copy and a checkpoint round trip compute the same outputs, makes the pruning
   permanent and saves the state_dict (with its criterion history).
4. Runs the gradual recipe :data:`~prunefw.examples.DIGITS_GRADUAL_RECIPE`
   (``docs/recipes/gradual-mlp.toml``) on a copy of the trained model while
   fine-tuning it: the hidden layers go from 0% to 90% along the cubic curve.
5. Writes ``accuracy.json`` and, when matplotlib is installed, ``accuracy.png``
   (accuracy versus sparsity).

``--fast`` (what CI runs) trains fewer epochs on two sparsities. Needs the
``demo`` extra: ``pip install 'prunefw[demo]'``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunefw._table import format_table
from prunefw.checkpoint import load_pruned_state_dict
from prunefw.cli._files import write_checkpoint
from prunefw.cli._progress import ProgressBars, progress_enabled
from prunefw.cli.report import print_report, report_data
from prunefw.examples import (
    DIGITS_GRADUAL_RECIPE,
    DIGITS_RECIPE,
    DemoNet,
    DigitsData,
    accuracy,
    digits_mlp,
    load_digits_data,
    train,
)
from prunefw.history import PruningHistory
from prunefw.permanence import make_permanent
from prunefw.recipes import Recipe, apply_recipe, gradual_pruner
from prunefw.report import sparsity_report

__all__ = [
    "CRITERIA",
    "DemoNet",
    "DemoSettings",
    "FAST",
    "FULL",
    "add_parser",
    "comparison_recipe",
    "run",
]


@dataclass(frozen=True)
class DemoSettings:
    """How much work the demo does.

    Attributes:
        epochs: Training epochs.
        batch_size: Images per optimizer step.
        lr: Adam's learning rate.
        sparsities: The sparsities of the comparison table.
        tune_epochs: Fine-tuning epochs after the recipe.
        gradual_epochs: Fine-tuning epochs of the gradual recipe (batches of 64, as
            its steps assume: it reaches its final sparsity after 12 epochs).
    """

    epochs: int
    batch_size: int
    lr: float
    sparsities: tuple[float, ...]
    tune_epochs: int
    gradual_epochs: int = 20


#: A full run, and ``--fast`` (fewer optimizer steps, two sparsities).
FULL = DemoSettings(20, 64, 3e-3, (0.5, 0.7, 0.8, 0.9, 0.95), 5, 20)
FAST = DemoSettings(6, 128, 1e-2, (0.5, 0.9), 2, 13)
#: Training settings of the gradual recipe (its ``end_step`` counts batches of 64).
GRADUAL_TRAINING: dict[str, Any] = {"batch_size": 64, "lr": 3e-3}

#: The compared criteria, as the demo's table names them.
CRITERIA = ("global magnitude", "layerwise magnitude", "random")

MODEL_SPEC = "prunefw.examples:digits_mlp"
CHECKPOINT_NAME = "digits_mlp_pruned.pt"


def comparison_recipe(criterion: str, sparsity: float, seed: int = 0) -> Recipe:
    """Return the recipe that prunes every Linear weight to ``sparsity`` with ``criterion``.

    Args:
        criterion: One of :data:`CRITERIA`.
        sparsity: Fraction of the weights to prune.
        seed: Seed of the random criterion.

    Example:
        >>> print(comparison_recipe("layerwise magnitude", 0.5).to_dict())
        {'layer': [{'module_type': 'Linear', 'criteria': [{'name': 'magnitude', 'amount': 0.5}]}]}
    """
    if criterion == "global magnitude":
        data: dict[str, Any] = {"global": {"criteria": [{"name": "magnitude", "amount": sparsity}]}}
    elif criterion == "layerwise magnitude":
        rule = {"module_type": "Linear", "criteria": [{"name": "magnitude", "amount": sparsity}]}
        data = {"layer": [rule]}
    elif criterion == "random":
        random = {"name": "random", "prune_ratio": sparsity, "seed": seed}
        data = {"global": {"criteria": [random]}}
    else:
        raise ValueError(f"unknown demo criterion {criterion!r}; expected one of {CRITERIA}")
    return Recipe.from_dict(data, source=f"<{criterion} {sparsity}>")


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _table(dense: float, sparsities: Sequence[float], results: dict[str, list[float]]) -> str:
    rows = [("sparsity", *CRITERIA), ("0% (dense)", *(_percent(dense) for _ in CRITERIA))]
    for index, sparsity in enumerate(sparsities):
        rows.append((f"{sparsity:.0%}", *(_percent(results[c][index]) for c in CRITERIA)))
    return format_table(rows, right=set(range(1, len(CRITERIA) + 1)))


def _plot(
    path: Path, dense: float, sparsities: Sequence[float], results: dict[str, list[float]]
) -> bool:
    """Write the accuracy-versus-sparsity plot; ``False`` if matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.subplots()
    xs = [0.0, *sparsities]
    for name, marker in zip(CRITERIA, "osx", strict=True):
        axes.plot(
            [100 * x for x in xs],
            [100 * a for a in [dense, *results[name]]],
            marker=marker,
            label=name,
        )
    axes.axhline(100 * dense, color="grey", linestyle=":", linewidth=1, label="dense")
    axes.set_xlabel("sparsity of the Linear weights (%)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("digits MLP: accuracy after pruning, no fine-tuning")
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=120)
    return True


def _compare(
    trained: torch.nn.Module,
    data: DigitsData,
    sparsities: Sequence[float],
    seed: int,
    track: ProgressBars,
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in CRITERIA}
    steps = [(s, c) for s in sparsities for c in CRITERIA]
    for sparsity, name in track(steps, "pruning at each sparsity", len(steps)):
        model = copy.deepcopy(trained)
        apply_recipe(model, comparison_recipe(name, sparsity, seed))
        results[name].append(accuracy(model, data.test_x, data.test_y))
    return results


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments; return the exit code."""
    started = time.perf_counter()
    settings = FAST if args.fast else FULL
    epochs, sparsities, tune_epochs = settings.epochs, settings.sparsities, settings.tune_epochs
    training = {"batch_size": settings.batch_size, "lr": settings.lr}
    out: Path = args.out

    def say(text: str = "") -> None:
        if not args.quiet:
            print(text)

    say(
        f"prunefw demo{' (fast)' if args.fast else ''}: an MLP on scikit-learn's 8x8 digits, "
        f"pruned with prunefw recipes (torch {torch.__version__})"
    )
    data = load_digits_data(seed=args.seed)
    model = digits_mlp(seed=args.seed)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    say(
        f"data: {len(data.train_x)} training and {len(data.test_x)} test images; "
        f"model: DigitsMLP 64-128-64-10, {weights} Linear weights"
    )
    tick = time.perf_counter()
    with ProgressBars(enabled=progress_enabled(args.quiet)) as track:
        train(model, data, epochs=epochs, seed=args.seed, track=track, **training)
    dense = accuracy(model, data.test_x, data.test_y)
    trained = copy.deepcopy(model)
    seconds = time.perf_counter() - tick
    say(f"trained {epochs} epochs in {seconds:.1f} s: test accuracy {_percent(dense)}")
    with ProgressBars(enabled=progress_enabled(args.quiet)) as track:
        results = _compare(model, data, sparsities, args.seed, track)

    gap = "" if args.quiet else "\n"
    print(f"{gap}test accuracy after pruning a copy of the trained model (no fine-tuning):")
    print(_table(dense, sparsities, results))

    recipe = Recipe.from_toml(DIGITS_RECIPE, source="docs/recipes/digits-mlp.toml")
    say(f"\napplying {recipe.source}: {recipe.description}")
    contexts = apply_recipe(model, recipe)
    history = PruningHistory.from_contexts(contexts)
    pruned_accuracy = accuracy(model, data.test_x, data.test_y)
    sparsity = sparsity_report(model, pruned_only=True).sparsity
    if not args.quiet:
        print_report(report_data(model, history, labels=set(history.tensors)), as_json=False)
    print(
        f"recipe: {sparsity:.2%} of the Linear weights pruned, test accuracy "
        f"{_percent(pruned_accuracy)} (dense {_percent(dense)})"
    )
    with ProgressBars(enabled=progress_enabled(args.quiet)) as track:
        train(model, data, epochs=tune_epochs, seed=args.seed + 1, track=track, **training)
    tuned_accuracy = accuracy(model, data.test_x, data.test_y)
    still = sparsity_report(model, pruned_only=True).sparsity
    print(
        f"fine-tuned {tune_epochs} epochs with the masks in place: test accuracy "
        f"{_percent(tuned_accuracy)}, sparsity still {still:.2%}"
    )

    fresh = digits_mlp(seed=args.seed + 1)
    load_pruned_state_dict(fresh, model.state_dict())
    clone = copy.deepcopy(model)
    with torch.no_grad():
        expected = model(data.test_x)
        same = torch.equal(fresh(data.test_x), expected) and torch.equal(
            clone(data.test_x), expected
        )
    say(f"deep copy and checkpoint round trip give the same outputs: {same}")
    make_permanent(model)
    leftover = [k for k in model.state_dict() if k.endswith(("_orig", "_mask"))]
    permanent_accuracy = accuracy(model, data.test_x, data.test_y)
    say(
        f"after make_permanent: {len(leftover)} _orig/_mask keys, test accuracy "
        f"{_percent(permanent_accuracy)}"
    )

    gradual_recipe = Recipe.from_toml(DIGITS_GRADUAL_RECIPE, source="docs/recipes/gradual-mlp.toml")
    say(f"\nrunning {gradual_recipe.source}: {gradual_recipe.description}")
    gradual_model = copy.deepcopy(trained)
    pruner = gradual_pruner(gradual_model, gradual_recipe)
    gradual_epochs = settings.gradual_epochs
    with ProgressBars(enabled=progress_enabled(args.quiet)) as track:
        train(
            gradual_model,
            data,
            epochs=gradual_epochs,
            seed=args.seed + 2,
            track=track,
            on_step=pruner.step,
            **GRADUAL_TRAINING,
        )
    gradual_accuracy = accuracy(gradual_model, data.test_x, data.test_y)
    print(
        f"gradual: {pruner.sparsity():.2%} of the hidden layers' weights pruned while "
        f"fine-tuning a copy of the trained model {gradual_epochs} epochs "
        f"({pruner.step_count} steps), test accuracy {_percent(gradual_accuracy)} "
        f"(dense {_percent(dense)})"
    )

    checkpoint = out / CHECKPOINT_NAME
    write_checkpoint(checkpoint, model.state_dict(), history)
    summary = {
        "seed": args.seed,
        "fast": args.fast,
        "epochs": epochs,
        "dense": dense,
        "sparsities": list(sparsities),
        "accuracy": results,
        "recipe": {
            "sparsity": sparsity,
            "accuracy": pruned_accuracy,
            "fine_tune_epochs": tune_epochs,
            "fine_tuned_accuracy": tuned_accuracy,
        },
        "gradual": {
            "sparsity": pruner.sparsity(),
            "accuracy": gradual_accuracy,
            "epochs": gradual_epochs,
            "steps": pruner.step_count,
        },
    }
    (out / "accuracy.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{gap}saved the pruned model to {checkpoint}; inspect it with")
    print(f"  prunefw report --model {MODEL_SPEC} --checkpoint {checkpoint}")
    print(f"saved the accuracies to {out / 'accuracy.json'}")
    if _plot(out / "accuracy.png", dense, sparsities, results):
        print(f"saved the plot to {out / 'accuracy.png'}")
    else:
        print("matplotlib is not installed: no plot (pip install 'prunefw[demo]')")
    say(f"done in {time.perf_counter() - started:.1f} s")
    ok = same and not leftover and permanent_accuracy == tuned_accuracy and still == sparsity
    if not ok:
        print(
            "prunefw: error: the pruned model changed after copy, reload or make_permanent",
            file=sys.stderr,
        )
    return 0 if ok else 1


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command to ``commands``."""
    demo = commands.add_parser(
        "demo",
        help="train on the digits, prune with several criteria, compare accuracies",
        description=(
            "Train a small MLP on scikit-learn's digits, prune copies at several sparsities "
            "with global magnitude, layerwise magnitude and random pruning, print the "
            "accuracies, apply a recipe, make it permanent, save it and plot the accuracies. "
            "Needs: pip install 'prunefw[demo]'."
        ),
    )
    demo.add_argument(
        "--fast", action="store_true", help="fewer epochs and sparsities (what CI runs)"
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("prunefw-demo"),
        metavar="DIR",
        help="where to write the pruned model, accuracy.json and accuracy.png "
        "(default ./prunefw-demo)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of data split, init, training")
    demo.set_defaults(run=run)
