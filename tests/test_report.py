"""sparsity_report: per-tensor and total counts, lookup, dict and table output."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SeedModel, make_mlp
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    SparsityReport,
    TensorSparsity,
    sparsity_report,
)
from prunefw.errors import InvalidTypeError

LABELS = ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]


def partly_pruned_mlp() -> nn.Sequential:
    """Layer 0: 100 of 600 weights pruned; layer 2: 5 exact zeros (unpruned); 4.bias: 1 pruned."""
    model = make_mlp()
    LayerPruningContext(
        {"0": MagnitudeCriterion(amount=100), ("4", "bias"): MagnitudeCriterion(amount=1)},
        model=model,
    ).prune()
    with torch.no_grad():
        model[2].weight[0, :5] = 0.0
    return model


def test_report_numbers() -> None:
    model = partly_pruned_mlp()
    report = sparsity_report(model)
    assert isinstance(report, SparsityReport)
    assert [t.label for t in report.tensors] == LABELS
    assert all(isinstance(t, TensorSparsity) for t in report.tensors)

    w0 = report["0.weight"]
    assert (w0.module, w0.name, w0.shape) == ("0", "weight", (30, 20))
    assert (w0.numel, w0.zeros, w0.pruned) == (600, 100, True)
    assert w0.sparsity == pytest.approx(100 / 600)

    w2 = report["2.weight"]
    assert (w2.shape, w2.numel, w2.zeros, w2.pruned) == ((10, 30), 300, 5, False)
    assert w2.sparsity == pytest.approx(5 / 300)

    b4 = report["4.bias"]
    assert (b4.module, b4.name, b4.shape, b4.numel, b4.zeros, b4.pruned) == (
        "4",
        "bias",
        (3,),
        3,
        1,
        True,
    )
    for label in ("0.bias", "2.bias", "4.weight"):
        entry = report[label]
        assert (entry.zeros, entry.pruned, entry.sparsity) == (0, False, 0.0)

    total_numel = sum(p.numel() for p in model.parameters())
    assert total_numel == 600 + 30 + 300 + 10 + 30 + 3
    assert report.numel == total_numel
    assert report.zeros == 100 + 5 + 1
    assert report.sparsity == pytest.approx(106 / total_numel)


def test_report_matches_masks_after_global_pruning() -> None:
    torch.manual_seed(0)
    model = SeedModel()
    GlobalPruningContext(model, [MagnitudeCriterion(amount=0.9)]).prune()
    report = sparsity_report(model)
    for name in ("conv1", "conv2", "fc1"):
        module = getattr(model, name)
        entry = report[f"{name}.weight"]
        assert entry.pruned
        assert entry.numel == module.weight_mask.numel()
        assert entry.zeros == int((module.weight_mask == 0).sum())
        assert report[f"{name}.bias"].pruned is False
    fc1 = report["fc1.weight"]
    assert (fc1.module, fc1.name, fc1.shape, fc1.numel) == ("fc1", "weight", (10, 2048), 20480)
    pruned = sparsity_report(model, pruned_only=True)
    assert pruned.zeros == round(0.9 * pruned.numel)


def test_pruned_only() -> None:
    model = partly_pruned_mlp()
    report = sparsity_report(model, pruned_only=True)
    assert [t.label for t in report.tensors] == ["0.weight", "4.bias"]
    assert all(t.pruned for t in report.tensors)
    assert (report.numel, report.zeros) == (603, 101)
    assert report.sparsity == pytest.approx(101 / 603)
    with pytest.raises(KeyError):
        report["2.weight"]


def test_unknown_label_raises_key_error() -> None:
    report = sparsity_report(partly_pruned_mlp())
    for label in ("fc1.weight", "0.weight_orig", "0.weight_mask", "0", "weight"):
        with pytest.raises(KeyError, match=label.replace(".", r"\.")):
            report[label]


def test_to_dict_is_json_serializable_with_documented_keys() -> None:
    model = partly_pruned_mlp()
    report = sparsity_report(model)
    data = report.to_dict()
    assert set(data) == {"tensors", "total"}
    assert json.loads(json.dumps(data)) == data
    assert len(data["tensors"]) == len(LABELS)
    for entry, tensor in zip(data["tensors"], report.tensors, strict=True):
        assert set(entry) == {"module", "name", "shape", "numel", "zeros", "sparsity", "pruned"}
        assert entry == {
            "module": tensor.module,
            "name": tensor.name,
            "shape": list(tensor.shape),
            "numel": tensor.numel,
            "zeros": tensor.zeros,
            "sparsity": tensor.sparsity,
            "pruned": tensor.pruned,
        }
        assert all(type(n) is int for n in entry["shape"])
        assert type(entry["numel"]) is int
        assert type(entry["zeros"]) is int
        assert type(entry["pruned"]) is bool
    assert data["tensors"][1] == {
        "module": "0",
        "name": "weight",
        "shape": [30, 20],
        "numel": 600,
        "zeros": 100,
        "sparsity": pytest.approx(1 / 6),
        "pruned": True,
    }
    assert data["total"] == {"numel": 973, "zeros": 106, "sparsity": pytest.approx(106 / 973)}


def test_str_is_a_table_with_every_label_and_a_total_line() -> None:
    report = sparsity_report(partly_pruned_mlp())
    text = str(report)
    lines = text.splitlines()
    # header, rule, one row per tensor, rule, total
    assert len(lines) == len(LABELS) + 4
    assert lines[0].split() == ["tensor", "shape", "params", "zeros", "sparsity", "pruned"]
    assert set(lines[1]) <= {"-", " "}
    assert set(lines[-2]) <= {"-", " "}
    rows = {line.split()[0]: line.split() for line in lines[2:-2]}
    assert sorted(rows) == sorted(LABELS)
    assert rows["0.weight"] == ["0.weight", "30x20", "600", "100", "16.67%", "yes"]
    assert rows["2.weight"] == ["2.weight", "10x30", "300", "5", "1.67%", "no"]
    assert rows["4.bias"] == ["4.bias", "3", "3", "1", "33.33%", "yes"]
    assert lines[-1].split() == ["total", "973", "106", f"{106 / 973:.2%}"]
    assert all(line == line.rstrip() for line in lines)


def test_counts_the_effective_tensor_even_if_orig_changed_since_forward() -> None:
    model = partly_pruned_mlp()
    layer = model[0]
    stale_zeros = int((layer.weight == 0).sum())
    assert stale_zeros == 100
    with torch.no_grad():
        layer.weight_orig[:3] = 0.0  # 60 entries, some of them already masked
        layer.weight_mask[10, :] = 0.0  # 20 more pruned through the mask
    expected = int(((layer.weight_orig * layer.weight_mask) == 0).sum())
    assert expected > 100
    assert int((layer.weight == 0).sum()) == stale_zeros  # no forward: attribute is stale
    assert sparsity_report(model)["0.weight"].zeros == expected
    model(torch.randn(2, 20))
    assert int((layer.weight == 0).sum()) == expected


def test_unpruned_model_counts_exact_zeros_only() -> None:
    model = make_mlp()
    report = sparsity_report(model)
    assert [t.label for t in report.tensors] == LABELS
    assert report.zeros == 0
    assert not any(t.pruned for t in report.tensors)
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0
        model[0].weight[0, 1] = -0.0
        model[0].weight[0, 2] = 1e-30
        model[0].weight[0, 3] = -1e-45  # subnormal, still not zero
        model[4].bias[1] = 0.0
    report = sparsity_report(model)
    assert report["0.weight"].zeros == 2
    assert report["4.bias"].zeros == 1
    assert report.zeros == 3
    assert report.numel == sum(p.numel() for p in model.parameters())

    empty = sparsity_report(model, pruned_only=True)
    assert empty.tensors == ()
    assert (empty.numel, empty.zeros, empty.sparsity) == (0, 0, 0.0)
    assert empty.to_dict() == {"tensors": [], "total": {"numel": 0, "zeros": 0, "sparsity": 0.0}}
    assert "total" in str(empty)


def test_root_module_and_torch_pruned_tensors() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 4)
    prune.l1_unstructured(layer, "weight", amount=0.25)
    report = sparsity_report(layer)
    assert [t.label for t in report.tensors] == ["bias", "weight"]
    assert report["weight"].module == ""
    assert (report["weight"].zeros, report["weight"].pruned) == (4, True)


def test_report_refuses_non_modules() -> None:
    with pytest.raises(InvalidTypeError):
        sparsity_report({"weight": torch.zeros(3)})  # type: ignore[arg-type]
