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
from prunefw.cli._progress import ProgressBars, progress_enabled
from prunefw.cli._writing import write_checkpoint
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
from prunefw.reparametrization import MASK_SUFFIX, ORIG_SUFFIX
from prunefw.sparsity import sparsity_report

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


@dataclass
class _Run:
    """One demo run: its arguments, data and how it talks."""

    args: argparse.Namespace
    settings: DemoSettings
    data: DigitsData

    def say(self, text: str = "") -> None:
        """Print ``text`` unless ``--quiet``."""
        if not self.args.quiet:
            print(text)

    def bars(self) -> ProgressBars:
        """Progress bars, off under ``--quiet``."""
        return ProgressBars(enabled=progress_enabled(self.args.quiet))

    def accuracy(self, model: torch.nn.Module) -> float:
        """Test accuracy of ``model``."""
        return accuracy(model, self.data.test_x, self.data.test_y)

    def train(self, model: torch.nn.Module, epochs: int, seed_offset: int) -> None:
        """Train ``model`` with the run's settings (in place)."""
        s = self.settings
        with self.bars() as track:
            train(
                model,
                self.data,
                epochs=epochs,
                batch_size=s.batch_size,
                lr=s.lr,
                seed=self.args.seed + seed_offset,
                track=track,
            )


def _train_dense(run: _Run) -> tuple[torch.nn.Module, float]:
    """Step 1: train the MLP; return it and its test accuracy."""
    model = digits_mlp(seed=run.args.seed)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    run.say(
        f"data: {len(run.data.train_x)} training and {len(run.data.test_x)} test images; "
        f"model: DigitsMLP 64-128-64-10, {weights} Linear weights"
    )
    tick = time.perf_counter()
    run.train(model, run.settings.epochs, seed_offset=0)
    dense = run.accuracy(model)
    seconds = time.perf_counter() - tick
    run.say(
        f"trained {run.settings.epochs} epochs in {seconds:.1f} s: test accuracy {_percent(dense)}"
    )
    return model, dense


def _apply_digits_recipe(run: _Run, model: torch.nn.Module, dense: float) -> dict[str, Any]:
    """Step 3: the recipe, fine-tuning with the masks in place; returns the figures."""
    recipe = Recipe.from_toml(DIGITS_RECIPE, source="docs/recipes/digits-mlp.toml")
    run.say(f"\napplying {recipe.source}: {recipe.description}")
    contexts = apply_recipe(model, recipe)
    history = PruningHistory.from_contexts(contexts)
    pruned_accuracy = run.accuracy(model)
    sparsity = sparsity_report(model, pruned_only=True).sparsity
    if not run.args.quiet:
        print_report(report_data(model, history, labels=set(history.tensors)), as_json=False)
    print(
        f"recipe: {sparsity:.2%} of the Linear weights pruned, test accuracy "
        f"{_percent(pruned_accuracy)} (dense {_percent(dense)})"
    )
    tune_epochs = run.settings.tune_epochs
    run.train(model, tune_epochs, seed_offset=1)
    tuned_accuracy = run.accuracy(model)
    still = sparsity_report(model, pruned_only=True).sparsity
    print(
        f"fine-tuned {tune_epochs} epochs with the masks in place: test accuracy "
        f"{_percent(tuned_accuracy)}, sparsity still {still:.2%}"
    )
    return {
        "history": history,
        "sparsity": sparsity,
        "accuracy": pruned_accuracy,
        "fine_tune_epochs": tune_epochs,
        "fine_tuned_accuracy": tuned_accuracy,
        "sparsity_after_fine_tuning": still,
    }


def _check_round_trip_and_make_permanent(
    run: _Run, model: torch.nn.Module, tuned_accuracy: float
) -> bool:
    """Copy, reload and make permanent; ``True`` if all compute what ``model`` did."""
    fresh = digits_mlp(seed=run.args.seed + 1)
    load_pruned_state_dict(fresh, model.state_dict())
    clone = copy.deepcopy(model)
    test_x = run.data.test_x
    with torch.no_grad():
        expected = model(test_x)
        same = torch.equal(fresh(test_x), expected) and torch.equal(clone(test_x), expected)
    run.say(f"deep copy and checkpoint round trip give the same outputs: {same}")
    make_permanent(model)
    leftover = [k for k in model.state_dict() if k.endswith((ORIG_SUFFIX, MASK_SUFFIX))]
    permanent_accuracy = run.accuracy(model)
    run.say(
        f"after make_permanent: {len(leftover)} _orig/_mask keys, test accuracy "
        f"{_percent(permanent_accuracy)}"
    )
    return same and not leftover and permanent_accuracy == tuned_accuracy


def _run_gradual(run: _Run, trained: torch.nn.Module, dense: float) -> dict[str, Any]:
    """Step 4: the gradual recipe on a copy of the trained model, while fine-tuning it."""
    gradual_recipe = Recipe.from_toml(DIGITS_GRADUAL_RECIPE, source="docs/recipes/gradual-mlp.toml")
    run.say(f"\nrunning {gradual_recipe.source}: {gradual_recipe.description}")
    model = copy.deepcopy(trained)
    pruner = gradual_pruner(model, gradual_recipe)
    epochs = run.settings.gradual_epochs
    with run.bars() as track:
        train(
            model,
            run.data,
            epochs=epochs,
            batch_size=GRADUAL_TRAINING["batch_size"],
            lr=GRADUAL_TRAINING["lr"],
            seed=run.args.seed + 2,
            track=track,
            on_step=pruner.step,
        )
    gradual_accuracy = run.accuracy(model)
    print(
        f"gradual: {pruner.sparsity():.2%} of the hidden layers' weights pruned while "
        f"fine-tuning a copy of the trained model {epochs} epochs "
        f"({pruner.step_count} steps), test accuracy {_percent(gradual_accuracy)} "
        f"(dense {_percent(dense)})"
    )
    return {
        "sparsity": pruner.sparsity(),
        "accuracy": gradual_accuracy,
        "epochs": epochs,
        "steps": pruner.step_count,
    }


def _export(model: torch.nn.Module, out: Path) -> None:
    """Last step: the permanent model as a compressed checkpoint, with the file sizes."""
    from prunefw.export import MissingExtraError, save_compressed

    try:
        report = save_compressed(model, out / "digits_mlp_compressed.safetensors")
    except MissingExtraError as exc:
        print(f"no compressed export: {exc}")
        return
    print(f"exported {report.describe()}")


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments; return the exit code."""
    started = time.perf_counter()
    settings = FAST if args.fast else FULL
    out: Path = args.out
    demo = _Run(args, settings, load_digits_data(seed=args.seed))
    demo.say(
        f"prunefw demo{' (fast)' if args.fast else ''}: an MLP on scikit-learn's 8x8 digits, "
        f"pruned with prunefw recipes (torch {torch.__version__})"
    )
    model, dense = _train_dense(demo)
    trained = copy.deepcopy(model)
    with demo.bars() as track:
        results = _compare(model, demo.data, settings.sparsities, args.seed, track)
    gap = "" if args.quiet else "\n"
    print(f"{gap}test accuracy after pruning a copy of the trained model (no fine-tuning):")
    print(_table(dense, settings.sparsities, results))

    recipe = _apply_digits_recipe(demo, model, dense)
    history = recipe.pop("history")
    still = recipe.pop("sparsity_after_fine_tuning")
    consistent = _check_round_trip_and_make_permanent(demo, model, recipe["fine_tuned_accuracy"])
    gradual = _run_gradual(demo, trained, dense)

    checkpoint = out / CHECKPOINT_NAME
    write_checkpoint(checkpoint, model.state_dict(), history)
    summary = {
        "seed": args.seed,
        "fast": args.fast,
        "epochs": settings.epochs,
        "dense": dense,
        "sparsities": list(settings.sparsities),
        "accuracy": results,
        "recipe": recipe,
        "gradual": gradual,
    }
    (out / "accuracy.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{gap}saved the pruned model to {checkpoint}; inspect it with")
    print(f"  prunefw report --model {MODEL_SPEC} --checkpoint {checkpoint}")
    print(f"saved the accuracies to {out / 'accuracy.json'}")
    _export(model, out)
    if _plot(out / "accuracy.png", dense, settings.sparsities, results):
        print(f"saved the plot to {out / 'accuracy.png'}")
    else:
        print("matplotlib is not installed: no plot (pip install 'prunefw[demo]')")
    demo.say(f"done in {time.perf_counter() - started:.1f} s")
    if not (consistent and still == recipe["sparsity"]):
        print(
            "prunefw: error: the pruned model changed after copy, reload or make_permanent",
            file=sys.stderr,
        )
        return 1
    return 0


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
