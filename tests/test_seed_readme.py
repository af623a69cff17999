"""The seed README's two examples run on prunefw with only their import lines changed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

SEED_README = Path(__file__).parent / "data" / "seed-README.md"
SEED_IMPORT = re.compile(r"^from (?:criterion|context)\.\w+ import (\w+)$")


def is_import(line: str) -> bool:
    return line.startswith(("import ", "from "))


def seed_blocks() -> list[str]:
    text = SEED_README.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def port(block: str, extra_imports: list[str]) -> str:
    """Rewrite the seed's module-path imports to ``from prunefw import Name``; add imports."""
    lines = [SEED_IMPORT.sub(r"from prunefw import \1", line) for line in block.splitlines()]
    return "\n".join([*extra_imports, *lines]) + "\n"


EXTRA_IMPORTS = [
    ["import torch", "from prunefw import PercentileCriterion"],
    ["import torch"],
]


def ported_blocks() -> list[str]:
    blocks = seed_blocks()
    return [port(block, extra) for block, extra in zip(blocks, EXTRA_IMPORTS, strict=True)]


def run(code: str, name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name}
    torch.manual_seed(0)
    exec(compile(code, f"<seed-README {name}>", "exec"), namespace)
    return namespace


def test_seed_readme_has_two_python_examples() -> None:
    blocks = seed_blocks()
    assert len(blocks) == 2
    assert "LayerPruningContext(layer_criteria)" in blocks[0]
    assert "GlobalPruningContext(model, global_criteria)" in blocks[1]
    # The seed uses PercentileCriterion and torch.relu without importing them.
    assert "import torch\n" not in blocks[0] + blocks[1]
    assert "PercentileCriterion" in blocks[0]
    assert "import PercentileCriterion" not in blocks[0]


@pytest.mark.parametrize("index", [0, 1])
def test_only_import_lines_change(index: int) -> None:
    original = seed_blocks()[index]
    ported = ported_blocks()[index]
    original_lines = original.splitlines()
    ported_lines = ported.splitlines()
    # Every non-import line is unchanged and in the same order.
    assert [line for line in ported_lines if not is_import(line)] == [
        line for line in original_lines if not is_import(line)
    ]
    assert len(ported_lines) == len(original_lines) + len(EXTRA_IMPORTS[index])
    # Every seed import is either kept as is or turned into a prunefw import of the same name.
    seed_imports = [line for line in original_lines if SEED_IMPORT.match(line)]
    assert len(seed_imports) == (3 if index == 0 else 2)
    assert ported_lines[: len(EXTRA_IMPORTS[index])] == EXTRA_IMPORTS[index]
    rewritten = [
        line
        for line in ported_lines[len(EXTRA_IMPORTS[index]) :]
        if line.startswith("from prunefw import ")
    ]
    assert rewritten == [
        f"from prunefw import {SEED_IMPORT.match(line).group(1)}"  # type: ignore[union-attr]
        for line in seed_imports
    ]
    assert "import torch.nn as nn" in ported_lines
    assert "from criterion." not in ported
    assert "from context." not in ported


def test_example_1_layer_specific_pruning() -> None:
    ns = run(ported_blocks()[0], "example1")
    model = ns["model"]
    assert isinstance(model, nn.Module)
    assert type(model).__name__ == "SimpleModel"
    assert prune.is_pruned(model)
    assert set(dict(model.named_buffers())) == {"conv1.weight_mask", "conv2.weight_mask"}

    # conv1: MagnitudeCriterion(min_threshold=0.1), then RandomCriterion(prune_ratio=0.2)
    # on the remaining entries.
    weights = model.conv1.weight_orig.detach().abs()
    mask = model.conv1.weight_mask
    small = weights < 0.1
    assert 0 < int(small.sum()) < weights.numel()
    assert bool((mask[small] == 0).all())
    rest = int((~small).sum())
    assert int((mask[~small] == 0).sum()) == round(0.2 * rest)
    assert int((mask == 0).sum()) == int(small.sum()) + round(0.2 * rest)
    assert bool(((mask == 0) | (mask == 1)).all())

    # conv2: PercentileCriterion(0.2, 0.9): the 20% smallest and 10% largest |w| go.
    scores = model.conv2.weight_orig.detach().abs().reshape(-1)
    n = scores.numel()
    assert n == 32 * 16 * 3 * 3 == 4608
    low, high = 922, 461  # round(0.2 * 4608), round(0.1 * 4608)
    assert int((model.conv2.weight_mask == 0).sum()) == low + high
    order = torch.argsort(scores, stable=True)
    expected = torch.ones(n)
    expected[order[:low]] = 0
    expected[order[n - high :]] = 0
    assert torch.equal(model.conv2.weight_mask.reshape(-1), expected)
    kept = scores[model.conv2.weight_mask.reshape(-1) == 1]
    assert float(kept.min()) > float(scores[order[low - 1]])
    assert float(kept.max()) < float(scores[order[n - high]])

    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 32, 8, 8)
    assert bool(torch.isfinite(out).all())


def test_example_2_global_pruning() -> None:
    ns = run(ported_blocks()[1], "example2")
    model = ns["model"]
    assert type(model).__name__ == "SimpleModel"
    assert prune.is_pruned(model)
    assert ns["global_pruner"].targets
    total_pruned = 0
    for name in ("conv1", "conv2", "fc1"):
        module = getattr(model, name)
        weights = module.weight_orig.detach().abs()
        mask = module.weight_mask
        # Every remaining |w| is >= 0.1, every pruned one below it.
        assert bool((weights[mask == 1] >= 0.1).all()), name
        assert torch.equal(mask, (weights >= 0.1).to(mask.dtype)), name
        assert torch.equal(module.weight, module.weight_orig * mask)
        assert bool((module.weight.detach().abs()[module.weight != 0] >= 0.1).all())
        total_pruned += int((mask == 0).sum())
        assert not hasattr(module, "bias_mask")
    assert 0 < int((model.conv1.weight_mask == 1).sum()) < model.conv1.weight_mask.numel()
    assert total_pruned > 0

    out = model(torch.randn(4, 3, 8, 8))
    assert out.shape == (4, 10)
    assert bool(torch.isfinite(out).all())
