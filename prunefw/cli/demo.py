"""``prunefw demo``: the main job on a built-in example.

Prunes a small built-in convolutional network with the global and the layer
context, prints sparsity reports, checks a deep copy and a checkpoint round trip
against the pruned model, and makes the pruning permanent.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.checkpoint import load_pruned_state_dict
from prunefw.contexts import GlobalPruningContext, LayerPruningContext
from prunefw.criteria import MagnitudeCriterion, PercentileCriterion, RandomCriterion
from prunefw.permanence import make_permanent
from prunefw.registry import available_criteria
from prunefw.report import sparsity_report

__all__ = ["DemoNet", "add_parser"]


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


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments; return the exit code."""
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


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command to ``commands``."""
    demo = commands.add_parser("demo", help="prune a built-in example network and report")
    demo.add_argument(
        "--sparsity", type=float, default=0.5, help="global magnitude amount (default 0.5)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--out", type=Path, default=None, help="where to save the pruned weights")
    demo.set_defaults(run=run)
