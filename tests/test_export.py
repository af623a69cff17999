"""prunefw.export: compressed checkpoints in the compressed-tensors sparse formats."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunefw import GlobalPruningContext, MagnitudeCriterion, make_permanent
from prunefw.cli import main
from prunefw.examples import digits_cnn
from prunefw.export import (
    CompressedCheckpointError,
    ExportError,
    MissingExtraError,
    NothingToExportError,
    NotTwoFourError,
    load_compressed,
    load_pretrained,
    save_compressed,
)
from prunefw.reparametrization import install_deepcopy_support

safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("compressed_tensors")


def wide_mlp(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Wide enough that the per-row offsets and the header do not dominate the file."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
    model.append(nn.Linear(256, 16))
    return model.to(dtype)


def masked(amount: float, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    model = wide_mlp(dtype)
    GlobalPruningContext(model, MagnitudeCriterion(amount=amount)).prune()
    return model


def prune_24(model: nn.Module) -> nn.Module:
    """Keep the 2 largest |w| of every 4 consecutive inputs of every Linear."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            groups = module.weight.detach().abs().reshape(-1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool)
            keep.scatter_(1, groups.topk(2, dim=1).indices, True)
            prune.custom_from_mask(module, "weight", keep.reshape(module.weight.shape))
            install_deepcopy_support(module)
    return model


def dense_file_size(model: nn.Module, path: Path) -> int:
    state = make_permanent(copy.deepcopy(model)).state_dict()
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.stat().st_size


def bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bytes of a tensor with -0.0 made +0.0 (the formats store no sign for zeros)."""
    return (t.detach() + 0).contiguous().view(torch.uint8)


def assert_same_weights(loaded: nn.Module, reference: nn.Module) -> None:
    expected = make_permanent(copy.deepcopy(reference)).state_dict()
    got = make_permanent(copy.deepcopy(loaded)).state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(bits(got[key]), bits(value)), key


@pytest.mark.parametrize(("amount", "limit"), [(0.5, 0.56), (0.9, 0.16)])
def test_unstructured_round_trip_is_bit_identical_and_small(tmp_path, amount, limit):
    model = masked(amount)
    report = save_compressed(model, tmp_path / "model.safetensors")
    assert report.format == "sparse-bitmask"
    assert report.tensors == ("0.weight", "2.weight", "4.weight")
    assert report.file_bytes / dense_file_size(model, tmp_path / "dense.safetensors") <= limit
    fresh = wide_mlp()
    assert load_compressed(fresh, report.path) is fresh
    assert_same_weights(fresh, model)
    x = torch.randn(4, 256)
    assert torch.equal(fresh(x), model(x))


def test_masks_come_back_into_a_masked_model_and_with_masks_true(tmp_path):
    model = masked(0.7)
    path = save_compressed(model, tmp_path / "m.safetensors").path
    other = masked(0.2)  # masked differently: both orig and mask are overwritten
    load_compressed(other, path)
    plain = load_compressed(wide_mlp(), path, masks=True)
    for loaded in (other, plain):
        for index in (0, 2, 4):
            assert torch.equal(loaded[index].weight_mask, model[index].weight_mask)
            assert torch.equal(loaded[index].weight, model[index].weight)
    assert prune.is_pruned(plain)
    copy.deepcopy(plain)  # the reparametrization is prunefw's, deepcopy works


def test_permanent_model_round_trip(tmp_path):
    model = make_permanent(masked(0.9))
    report = save_compressed(model, tmp_path / "p.safetensors")
    assert report.tensors == ("0.weight", "2.weight", "4.weight")
    fresh = load_compressed(wide_mlp(), report.path)
    assert_same_weights(fresh, model)


def test_file_layout_is_compressed_tensors_bitmask(tmp_path):
    from compressed_tensors.utils.helpers import unpack_bitmasks

    model = masked(0.5)
    path = save_compressed(model, tmp_path / "m.safetensors").path
    with safetensors_torch.safe_open(str(path), framework="pt") as file:
        config = json.loads(file.metadata()["quantization_config"])
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    assert config["quant_method"] == "compressed-tensors"
    sparsity = config["sparsity_config"]
    assert sparsity["format"] == "sparse-bitmask"
    assert sparsity["sparsity_structure"] == "unstructured"
    assert sparsity["targets"] == ["0", "2", "4"]
    assert "0.weight" not in tensors and "0.bias" in tensors
    assert tensors["0.shape"].tolist() == [512, 256]
    assert tensors["0.bitmask"].dtype == torch.uint8 and tensors["0.bitmask"].shape == (512, 32)
    # decompress as compressed-tensors' BitmaskTensor did: zeros, then values at the bits
    keep = unpack_bitmasks(tensors["0.bitmask"], [512, 256])
    dense = torch.zeros(512, 256)
    dense[keep] = tensors["0.compressed"]
    assert torch.equal(dense, model[0].weight)
    counts = keep.sum(1)
    assert torch.equal(tensors["0.row_offsets"], torch.cumsum(counts, 0) - counts)


def test_two_four_bf16_is_chosen_round_trips_and_is_small(tmp_path):
    model = prune_24(wide_mlp(torch.bfloat16))
    report = save_compressed(model, tmp_path / "m24.safetensors")
    assert report.format == "sparse-24-bitmask"
    assert report.file_bytes / dense_file_size(model, tmp_path / "dense.safetensors") <= 0.65
    with safetensors_torch.safe_open(str(report.path), framework="pt") as file:
        assert file.get_tensor("0.compressed").shape == (512, 128)
        assert file.get_tensor("0.shape").tolist() == [[512], [256]]
        assert "0.row_offsets" not in file.keys()  # noqa: SIM118
    fresh = load_compressed(wide_mlp(torch.bfloat16), report.path, masks=True)
    assert_same_weights(fresh, model)
    assert torch.equal(fresh[0].weight_mask, model[0].weight_mask)


def test_two_four_requested_for_a_tensor_that_is_not_writes_nothing(tmp_path):
    model = masked(0.5)
    target = tmp_path / "m.safetensors"
    with pytest.raises(NotTwoFourError, match=r"^0\.weight is not 2:4"):
        save_compressed(model, target, format="sparse-24-bitmask")
    assert list(tmp_path.iterdir()) == []
    assert save_compressed(model, target, format="sparse-bitmask").format == "sparse-bitmask"


def test_a_model_with_nothing_pruned_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(NothingToExportError, match="no pruning masks"):
        save_compressed(wide_mlp(), tmp_path / "m.safetensors")
    with pytest.raises(ExportError, match="format="):
        save_compressed(masked(0.5), tmp_path / "m.safetensors", format="bitmask")
    with pytest.raises(ExportError, match=r"\.safetensors"):
        save_compressed(masked(0.5), tmp_path / "dir")
    assert list(tmp_path.iterdir()) == []


def test_convolutions_round_trip(tmp_path):
    model = digits_cnn()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.8)).prune()
    report = save_compressed(model, tmp_path / "cnn.safetensors")
    assert report.tensors == ("features.0.weight", "features.2.weight", "classifier.weight")
    fresh = load_compressed(digits_cnn(seed=1), report.path)
    assert_same_weights(fresh, model)


def test_loading_into_a_model_it_does_not_fit_changes_nothing(tmp_path):
    path = save_compressed(masked(0.5), tmp_path / "m.safetensors").path
    other = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128))
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(CompressedCheckpointError, match="shape"):
        load_compressed(other, path)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    with pytest.raises(CompressedCheckpointError, match="no such file"):
        load_compressed(other, tmp_path / "missing.safetensors")


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "compressed_tensors.config", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'prunefw\[export\]'"):
        save_compressed(masked(0.5), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_from_a_masked_checkpoint(tmp_path, capsys):
    model = digits_cnn()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.9)).prune()
    torch.save(model.state_dict(), tmp_path / "pruned.pt")
    out = tmp_path / "cnn.safetensors"
    argv = ["export", "--model", "prunefw.examples:digits_cnn", "--checkpoint"]
    assert main([*argv, str(tmp_path / "pruned.pt"), "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "sparse-bitmask" and data["ratio"] < 0.2
    assert_same_weights(load_compressed(digits_cnn(seed=3), out), model)
    assert main(["export", "--model", "prunefw.examples:digits_cnn", "--out", str(out)]) == 1
    assert "no pruning masks" in capsys.readouterr().err


# --- transformers -------------------------------------------------------------------------------


def tiny_llama(tied: bool = False) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=96, tie_word_embeddings=tied,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_llama_directory_carries_the_sparsity_config_and_loads_back(tmp_path, tied):
    from prunefw import prune_model

    model = tiny_llama(tied)
    prune_model(model, "magnitude", 0.5)
    ids = torch.randint(0, 96, (1, 16))
    with torch.no_grad():
        expected = model(ids).logits
    report = save_compressed(model, tmp_path / "llama")
    assert {p.name for p in report.files} >= {"config.json", "model.safetensors"}
    config = json.loads((tmp_path / "llama" / "config.json").read_text())
    sparsity = config["quantization_config"]["sparsity_config"]
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert sparsity["format"] == "sparse-bitmask"
    assert len(sparsity["targets"]) == 14  # 7 linear layers in each of 2 blocks, not lm_head
    loaded = load_pretrained(tmp_path / "llama")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected)
    assert_same_weights(loaded, model)
    if tied:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_from_pretrained_ignores_the_sparsity_config_on_this_stack(tmp_path):
    """compressed-tensors >= 0.15 has no sparse compressors (measured; see prunefw.export).

    from_pretrained then initialises the compressed weights at random; filling them with
    load_compressed gives the pruned model's logits. If a future compressed-tensors reads
    the formats again, this test fails: update docs/deploy.md.
    """
    transformers = pytest.importorskip("transformers")
    from prunefw import prune_model

    model = tiny_llama()
    prune_model(model, "magnitude", 0.5)
    ids = torch.randint(0, 96, (1, 16))
    with torch.no_grad():
        expected = model(ids).logits
    save_compressed(model, tmp_path / "llama")
    auto = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "llama").eval()
    with torch.no_grad():
        assert not torch.allclose(auto(ids).logits, expected)
        assert torch.equal(load_compressed(auto, tmp_path / "llama")(ids).logits, expected)


def test_llama_bf16_two_four_directory(tmp_path):
    model = prune_24(tiny_llama().to(torch.bfloat16))
    ids = torch.randint(0, 96, (1, 16))
    with torch.no_grad():
        expected = model(ids).logits
    report = save_compressed(model, tmp_path / "llama24")
    assert report.format == "sparse-24-bitmask"
    config = json.loads((tmp_path / "llama24" / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["sparsity_structure"] == "2:4"
    loaded = load_pretrained(tmp_path / "llama24")
    assert loaded.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected)


# --- sparse kernels -----------------------------------------------------------------------------


def test_to_sparse_csr_converts_only_the_very_sparse_float32_linears():
    from prunefw import LayerPruningContext
    from prunefw.export import CSR_MIN_SPARSITY, CsrLinear, to_sparse_csr

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    model.append(nn.Linear(64, 8).to(torch.float64))
    LayerPruningContext(
        {
            model[0]: MagnitudeCriterion(amount=min(1.0, CSR_MIN_SPARSITY + 0.02)),
            model[2]: MagnitudeCriterion(amount=0.5),
            model[4]: MagnitudeCriterion(amount=0.95),  # float64: not what was measured
        }
    ).prune()
    x = torch.randn(5, 64)
    expected = model[0](x).detach()
    assert to_sparse_csr(model) == ["0"]
    assert isinstance(model[0], CsrLinear) and type(model[2]) is nn.Linear
    torch.testing.assert_close(model[0](x), expected)
    torch.testing.assert_close(model[0](x[None]), expected[None])  # (..., in_features)
    with pytest.raises(ExportError, match="min_sparsity"):
        to_sparse_csr(model, min_sparsity=1.5)


def run_benchmark(script: str) -> str:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_export_sizes_benchmark_smoke():
    table = run_benchmark("export_sizes.py")
    assert table.count("bit-identical") == 6 and "sparse-24-bitmask" in table


def test_sparse_kernels_benchmark_smoke():
    table = run_benchmark("sparse_kernels.py")
    assert "| 95% | 128 |" in table and "to_sparse_semi_structured" in table
