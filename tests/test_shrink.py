"""prunefw.shrink: removing whole pruned channels with Torch-Pruning's dependency graph."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import GlobalPruningContext, LayerPruningContext, LnStructuredCriterion
from prunefw.examples import digits_cnn
from prunefw.export import MissingExtraError
from prunefw.shrink import (
    NothingToShrinkError,
    NotStructuredError,
    ShrinkError,
    UnsafeShrinkError,
    prune_channel_biases,
    shrink_model,
)

pytest.importorskip("torch_pruning")


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_digits_cnn_loses_half_its_conv_channels_and_computes_the_same():
    model = digits_cnn()
    criteria = {"features.0": LnStructuredCriterion(0.5), "features.2": LnStructuredCriterion(0.5)}
    LayerPruningContext(criteria, model=model).prune()
    assert prune_channel_biases(model) == ["features.0.bias", "features.2.bias"]
    x = torch.randn(32, 64)
    with torch.no_grad():
        expected = model(x)
    dense_parameters = parameters(digits_cnn())
    report = shrink_model(model, x)
    assert report.model is model
    assert model.features[0].out_channels == 8
    assert model.features[2].in_channels == 8 and model.features[2].out_channels == 16
    assert model.classifier.in_features == 16 * 4 * 4
    assert report.removed == {
        "features.0.weight": (8, 0),
        "features.2.weight": (16, 8),
        "classifier.weight": (0, 256),
    }
    assert report.parameters_before == dense_parameters
    assert report.parameters_after == parameters(model) < 0.4 * dense_parameters
    assert not prune.is_pruned(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # float32: rtol 1.3e-6, atol 1e-5
    assert report.max_abs_diff < 1e-5


def test_shrink_returns_the_model_and_is_exported_at_the_top():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    LayerPruningContext({model[0]: LnStructuredCriterion(amount=4)}).prune()
    prune_channel_biases(model)
    model.train()
    with torch.no_grad():  # shrink turns autograd on for tracing by itself
        assert prunefw.shrink(model, torch.randn(3, 8)) is model
    assert model[0].out_features == 12 and model[2].in_features == 12
    assert model.training


def test_input_channel_masks_remove_the_producing_rows_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    LayerPruningContext({model[2]: LnStructuredCriterion(amount=6, dim=1)}).prune()
    x = torch.randn(5, 8)
    expected = model(x).detach()
    report = shrink_model(model, x)
    assert (model[0].out_features, model[2].in_features) == (10, 10)
    assert report.removed == {"0.weight": (6, 0), "2.weight": (0, 6)}
    torch.testing.assert_close(model(x), expected)


def tiny_llama() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=96,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def test_llama_mlp_intermediate_size_halved_in_every_block_gate_up_down_coupled():
    model = tiny_llama()
    LayerPruningContext(
        {"model.layers.*.mlp.gate_proj": LnStructuredCriterion(0.5)}, model=model
    ).prune()
    ids = torch.randint(0, 96, (1, 16))
    with torch.no_grad():
        expected = model(ids).logits
    attention = copy.deepcopy(model.model.layers[0].self_attn.state_dict())
    report = shrink_model(model, {"input_ids": ids})
    for layer in model.model.layers:
        mlp = layer.mlp
        assert (mlp.gate_proj.out_features, mlp.up_proj.out_features) == (64, 64)
        assert mlp.down_proj.in_features == 64 and mlp.down_proj.out_features == 64
    assert report.removed["model.layers.1.mlp.up_proj.weight"] == (64, 0)
    assert report.removed["model.layers.1.mlp.down_proj.weight"] == (0, 64)
    assert all(
        torch.equal(v, attention[k])
        for k, v in model.model.layers[0].self_attn.state_dict().items()
    )
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected)
    assert report.parameters_after == report.parameters_before - 2 * 3 * 64 * 64


# --- refusals: the model is left exactly as it was ------------------------------------------------


def test_a_model_without_masks_is_refused():
    model = digits_cnn()
    before = snapshot(model)
    with pytest.raises(NothingToShrinkError, match="no pruning masks"):
        shrink_model(model, torch.randn(2, 64))
    assert_unchanged(model, before)


def test_masks_that_are_not_whole_channels_are_refused_naming_the_tensor():
    model = digits_cnn()
    GlobalPruningContext(model, prunefw.MagnitudeCriterion(amount=0.5)).prune()
    before = snapshot(model)
    with pytest.raises(NotStructuredError, match=r"^features\.0\.weight: its mask prunes"):
        prunefw.shrink(model, torch.randn(2, 64))
    assert_unchanged(model, before)
    assert prune.is_pruned(model)


def test_channels_whose_bias_still_reaches_the_next_layer_are_refused():
    model = digits_cnn()
    LayerPruningContext({"features.0": LnStructuredCriterion(0.5)}, model=model).prune()
    with torch.no_grad():
        model.features[0].bias.fill_(0.5)  # relu(0.5) reaches features.2
    before = snapshot(model)
    x = torch.randn(4, 64)
    expected = model(x).detach()
    with pytest.raises(UnsafeShrinkError, match=r"features\.0\.weight.*prune_channel_biases"):
        shrink_model(model, x)
    assert_unchanged(model, before)
    assert model.features[0].weight.shape == (16, 1, 3, 3)
    assert torch.equal(model(x), expected)  # masks and hooks restored too


def test_pruned_output_rows_of_the_last_layer_are_refused():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    LayerPruningContext({model[2]: LnStructuredCriterion(amount=2)}).prune()
    prune_channel_biases(model)
    before = snapshot(model)
    with pytest.raises(UnsafeShrinkError, match="outputs"):
        shrink_model(model, torch.randn(2, 8))
    assert_unchanged(model, before)


def test_unsupported_layer_types_are_refused():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 2))
    LayerPruningContext({model[0]: LnStructuredCriterion(amount=2)}).prune()
    with pytest.raises(ShrinkError, match=r"^0\.weight: shrink removes channels of nn\.Linear"):
        shrink_model(model, torch.tensor([[1, 2]]))


def test_missing_extra_names_the_pip_command(monkeypatch):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    LayerPruningContext({model[0]: LnStructuredCriterion(amount=4)}).prune()
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'prunefw\[shrink\]'"):
        shrink_model(model, torch.randn(2, 8))
    assert prune.is_pruned(model) and model[0].out_features == 16


def test_shrunk_models_export_like_any_other(tmp_path):
    pytest.importorskip("compressed_tensors")
    from prunefw.export import load_compressed, save_compressed

    model = digits_cnn()
    LayerPruningContext({"features.2": LnStructuredCriterion(0.5)}, model=model).prune()
    prune_channel_biases(model)
    shrunk = prunefw.shrink(model, torch.randn(2, 64))
    GlobalPruningContext(shrunk, prunefw.MagnitudeCriterion(amount=0.5)).prune()
    path = save_compressed(shrunk, tmp_path / "small.safetensors").path
    fresh = load_compressed(copy.deepcopy(shrunk), path)
    x = torch.randn(3, 64)
    assert torch.equal(fresh(x), shrunk(x))


def test_shrink_latency_benchmark_smoke():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "shrink_latency.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| cnn | smoke | 9,930 -> 3,818 (0.38x)" in result.stdout
