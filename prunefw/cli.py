"""The ``prunefw`` command line (also ``python -m prunefw``).

Commands:

* ``prunefw demo``: prune a small built-in convolutional network with the global
  and the layer context, print sparsity reports, check the pruned model against
  torch's reparametrization, a deep copy and a checkpoint round trip, and make
  the pruning permanent.

Exit codes: 0 success, 1 error (one line on stderr; ``--debug`` for the
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.checkpoint import load_pruned_state_dict
from prunefw.contexts import GlobalPruningContext, LayerPruningContext
from prunefw.criteria import MagnitudeCriterion, PercentileCriterion, RandomCriterion
from prunefw.errors import PrunefwError
from prunefw.permanence import make_permanent
from prunefw.registry import available_criteria
from prunefw.report import sparsity_report

__all__ = ["DemoNet", "build_parser", "main"]


class DemoNet(nn.Module):
    """The demo's small CNN for 3x8x8 inputs (the seed README's example network)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of 3x8x8 images into 10 classes."""
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc1(x.flatten(1))


def _demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    print(f"prunefw demo (torch {torch.__version__})")
    print("criteria available:", ", ".join(available_criteria()))
    inputs = torch.randn(4, 3, 8, 8)

    model = DemoNet()
    dense_out = model(inputs)
    print(f"\n1) global magnitude pruning, amount={args.sparsity}")
    GlobalPruningContext(model, [MagnitudeCriterion(amount=args.sparsity)]).prune()
    print(sparsity_report(model))
    change = (model(inputs) - dense_out).abs().max().item()
    print(f"max output change vs dense: {change:.4f}; torch sees pruning: {prune.is_pruned(model)}")

    clone = copy.deepcopy(model)
    fresh = DemoNet()
    load_pruned_state_dict(fresh, model.state_dict())
    same = torch.equal(clone(inputs), model(inputs)) and torch.equal(fresh(inputs), model(inputs))
    print(f"deep copy and checkpoint round trip give the same outputs: {same}")

    make_permanent(model)
    keys = sorted(model.state_dict())
    print(f"after make_permanent: state_dict keys {keys}")
    print(f"total sparsity kept: {sparsity_report(model).sparsity:.2%}")

    layered = DemoNet()
    print("\n2) layer-wise pruning: conv1 magnitude<0.1 then 20% random, conv2 percentile band")
    LayerPruningContext(
        {
            layered.conv1: [MagnitudeCriterion(min_threshold=0.1), RandomCriterion(0.2, seed=0)],
            layered.conv2: [PercentileCriterion(0.2, 0.9)],
        },
        model=layered,
    ).prune()
    print(sparsity_report(layered, pruned_only=True))
    make_permanent(layered)

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.out)
        print(f"\nsaved the permanently pruned global model to {args.out}")
    if not same:
        print("error: outputs differ after copy or reload", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``prunefw`` command."""
    parser = argparse.ArgumentParser(
        prog="prunefw", description="Prune PyTorch models with plugin-provided criteria."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="prune a built-in example network and report")
    demo.add_argument(
        "--sparsity", type=float, default=0.5, help="global magnitude amount (default 0.5)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--out", type=Path, default=None, help="where to save the pruned weights")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        0 on success, 1 on error, 2 on a usage error (argparse exits with 2 itself).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PrunefwError as exc:
        if args.debug:
            raise
        print(f"prunefw: error: {exc}", file=sys.stderr)
        return 1
