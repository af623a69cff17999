"""The command line with Hugging Face transformers models (issue 11).

Tiny GPT-2 and Llama models are built from configs (random weights, no download),
saved with ``save_pretrained`` and pruned with ``prunefw prune``: ``--model`` as a
model directory or a config file, ``--checkpoint`` and ``--out`` as model
directories (sharded safetensors, tied embeddings), calibration inputs of token
ids. Every result is compared with the same pruning done in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from prunefw import make_permanent  # noqa: E402
from prunefw.cli import main  # noqa: E402
from prunefw.cli._reading import ALIASES_KEY, HISTORY_FILE, read_checkpoint  # noqa: E402
from prunefw.cli.report import load_model  # noqa: E402
from prunefw.recipes import apply_recipe, load_recipe  # noqa: E402

TOKENS = torch.arange(24).reshape(2, 12) % 100

LINEAR_RECIPE = """\
[global]
criteria = [{ name = "magnitude", amount = 0.5 }]
module_types = ["Linear"]
include = ["model.layers.*"]
"""
CONV1D_RECIPE = """\
[global]
criteria = [{ name = "magnitude", amount = 0.6 }]
module_types = ["transformers.pytorch_utils.Conv1D"]
"""
WANDA_RECIPE = """\
[[layer]]
match = "model.layers.*"
module_type = "Linear"
criteria = [{ name = "wanda", sparsity = 0.5 }]
"""


def gpt2_config() -> transformers.GPT2Config:
    return transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=100,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )


def llama_config(**extra: object) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=100,
        **extra,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2 and Llama directories written by save_pretrained, and the recipes."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(gpt2_config()).save_pretrained(root / "gpt2")
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(llama_config()).save_pretrained(root / "llama")
    paths = {"gpt2": root / "gpt2", "llama": root / "llama"}
    for name, text in [
        ("linear", LINEAR_RECIPE),
        ("conv1d", CONV1D_RECIPE),
        ("wanda", WANDA_RECIPE),
    ]:
        paths[name] = root / f"{name}.toml"
        paths[name].write_text(text)
    return paths


def reference(directory: Path, recipe: Path, *, permanent: bool = False, **kwargs):
    """The model pruned in-process, as the command should prune it."""
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    apply_recipe(model, load_recipe(recipe), **kwargs)
    if permanent:
        make_permanent(model)
    return model.eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=TOKENS).logits


def error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("prunefw: error: ")
    return lines[0].removeprefix("prunefw: error: ")


# --- --out DIR/ --permanent: save_pretrained, from_pretrained -----------------------------------


def test_llama_permanent_directory_is_sharded_and_loads_with_from_pretrained(
    models, tmp_path, capfd
):
    out = tmp_path / "pruned"
    argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["linear"])]
    assert main([*argv, "--out", f"{out}/", "--permanent", "--max-shard-size", "20KB"]) == 0
    captured = capfd.readouterr()
    assert captured.err == ""  # transformers' bars and warnings are silenced
    assert f"wrote {out}/ (permanent: a model directory, load it with LlamaForCausalLM" in (
        captured.out
    )
    files = sorted(p.name for p in out.iterdir())
    shards = [name for name in files if name.startswith("model-")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    assert {"config.json", "generation_config.json", HISTORY_FILE} <= set(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]  # no temporary directory

    loaded = transformers.LlamaForCausalLM.from_pretrained(out, local_files_only=True)
    expected = reference(models["llama"], models["linear"], permanent=True)
    assert torch.equal(logits(loaded), logits(expected))
    assert float((loaded.model.layers[0].mlp.up_proj.weight == 0).float().mean()) > 0.4

    assert main(["report", "--model", str(out), "--json", "--pruned-only"]) == 0
    data = json.loads(capfd.readouterr().out)
    assert data["tensors"] == []  # permanent: no masks left
    assert main(["report", "--model", str(out), "--json"]) == 0
    tensors = {
        f"{t['module']}.{t['name']}": t for t in json.loads(capfd.readouterr().out)["tensors"]
    }
    history = tensors["model.layers.0.mlp.up_proj.weight"]["history"]
    assert history == [{"criterion": "magnitude", "config": {"amount": 0.5}, "scope": "global"}]


def test_gpt2_permanent_directory_keeps_the_tied_embeddings(models, tmp_path, capsys):
    out = tmp_path / "gpt2-pruned"
    argv = ["prune", "--model", str(models["gpt2"]), "--recipe", str(models["conv1d"])]
    assert main([*argv, "--out", f"{out}/", "--permanent", "-q"]) == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    expected = reference(models["gpt2"], models["conv1d"], permanent=True)
    assert torch.equal(logits(loaded), logits(expected))
    # save_pretrained stores the tied weight once; --checkpoint fills in its twin
    argv = ["report", "--model", str(models["gpt2"]), "--checkpoint", str(out), "--json"]
    assert main(argv) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total["zeros"] == sum(int((p == 0).sum()) for p in loaded.parameters())


# --- --out DIR/ with masks: sharded safetensors, read back by --checkpoint and --model -----------


def test_llama_masked_directory_round_trip(models, tmp_path, capsys):
    out = tmp_path / "masked"
    argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["linear"])]
    assert main([*argv, "--out", f"{out}/", "--max-shard-size", "16KB"]) == 0
    assert "a model directory with pruning masks" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors.index.json", HISTORY_FILE} <= files
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert "model.layers.0.mlp.up_proj.weight_mask" in index["weight_map"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]

    expected = reference(models["llama"], models["linear"])
    for model_spec, checkpoint in [(str(models["llama"]), out), (str(out), None)]:
        model, history = load_model(model_spec, checkpoint)
        assert hasattr(model.model.layers[0].mlp.up_proj, "weight_mask")
        assert torch.equal(logits(model), logits(expected))
        assert history.describe("model.layers.1.self_attn.q_proj.weight") == (
            "global magnitude(amount=0.5)"
        )
    assert main(["report", "--model", str(out), "--pruned-only", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["tensors"]) == 14 and abs(data["total"]["sparsity"] - 0.5) < 1e-3

    # pruning the directory again stacks on its masks and appends to its history
    again = tmp_path / "again.pt"
    argv = ["prune", "--model", str(out), "--recipe", str(models["linear"]), "--out", str(again)]
    assert main([*argv, "-q"]) == 0
    assert main(["report", "--model", str(models["llama"]), "--checkpoint", str(again)]) == 0
    assert "global magnitude(amount=0.5) then global magnitude(amount=0.5)" in (
        capsys.readouterr().out
    )


def test_gpt2_masked_directory_stores_tied_weights_once(models, tmp_path, capsys):
    out = tmp_path / "gpt2-masked"
    argv = ["prune", "--model", str(models["gpt2"]), "--recipe", str(models["conv1d"])]
    assert main([*argv, "--out", f"{out}/", "--max-shard-size", "8KB", "-q"]) == 0
    from safetensors import safe_open

    stored, aliases = set(), {}
    for shard in out.glob("model-*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            stored |= set(handle.keys())
            aliases.update(json.loads(handle.metadata()[ALIASES_KEY]))
    assert aliases == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in stored and "transformer.wte.weight" in stored

    state = read_checkpoint(out).state_dict
    assert state["lm_head.weight"] is state["transformer.wte.weight"]
    model, _ = load_model(str(out), None)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(logits(model), logits(reference(models["gpt2"], models["conv1d"])))
    assert hasattr(model.transformer.h[1].mlp.c_fc, "weight_mask")


def test_writing_into_an_existing_directory_replaces_the_old_weights_only(models, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["linear"]), "-q"]
    assert main([*argv, "--out", f"{out}/", "--max-shard-size", "16KB"]) == 0
    (out / "tokenizer.json").write_text("{}")
    assert main([*argv, "--out", str(out)]) == 0  # an existing directory: no / needed
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        HISTORY_FILE,
        "tokenizer.json",
    ]
    model, _ = load_model(str(out), None)
    assert torch.equal(logits(model), logits(reference(models["llama"], models["linear"])))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_factory_model_in_a_directory_and_pytorch_model_bin(tmp_path, capsys):
    out = tmp_path / "mlp"
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "digits-mlp.toml"
    argv = ["prune", "--model", "prunefw.examples:digits_mlp", "--recipe", str(recipe)]
    assert main([*argv, "--out", f"{out}/", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", HISTORY_FILE]
    report = ["report", "--model", "prunefw.examples:digits_mlp", "--pruned-only"]
    assert main([*report, "--checkpoint", str(out)]) == 0
    assert "global magnitude(amount=0.9)" in capsys.readouterr().out

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    model, _ = load_model("prunefw.examples:digits_mlp", out)
    torch.save(model.state_dict(), legacy / "pytorch_model.bin")
    assert main([*report, "--checkpoint", str(legacy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["zeros"] > 0


# --- --model CONFIG.json: random weights, seeded ------------------------------------------------


def test_a_config_file_builds_the_same_random_model_every_time(models, tmp_path, capsys):
    config = models["llama"] / "config.json"
    outs = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for out in outs:
        argv = ["prune", "--model", str(config), "--recipe", str(models["linear"])]
        assert main([*argv, "--out", str(out), "-q"]) == 0
    first, second = (read_checkpoint(out).state_dict for out in outs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    # random weights, not the directory's
    trained = read_checkpoint(models["llama"]).state_dict
    assert not torch.equal(first["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])
    # and the same as building from the config in Python with torch seed 0
    torch.manual_seed(0)
    built = transformers.LlamaForCausalLM._from_config(llama_config())
    assert torch.equal(first["model.embed_tokens.weight"], built.model.embed_tokens.weight)
    assert main(["report", "--model", str(config), "--checkpoint", str(outs[0])]) == 0


# --- calibration inputs of token ids ------------------------------------------------------------


def test_calibration_with_a_list_of_dicts_and_a_token_tensor(models, tmp_path, capsys):
    pytest.importorskip("prunefw_wanda")
    inputs = [
        {"input_ids": TOKENS[:1], "attention_mask": torch.ones(1, 12, dtype=torch.long)},
        {"input_ids": TOKENS[1:]},
    ]
    as_dicts = tmp_path / "dicts.pt"
    torch.save(inputs, as_dicts)
    as_tensor = tmp_path / "tokens.pt"
    torch.save(TOKENS, as_tensor)
    expected = logits(reference(models["llama"], models["wanda"], calibration_data=inputs))
    for calibration in (as_dicts, as_tensor):
        out = tmp_path / f"{calibration.stem}.safetensors"
        argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["wanda"])]
        assert main([*argv, "--calibration", str(calibration), "--out", str(out), "-q"]) == 0
        model, _ = load_model(str(models["llama"]), out)
        assert torch.equal(logits(model), expected)


def test_sequential_calibration_prunes_block_by_block(models, tmp_path, capsys):
    wanda = pytest.importorskip("prunefw_wanda")
    tokens = tmp_path / "tokens.pt"
    torch.save(TOKENS, tokens)
    out = tmp_path / "sequential.safetensors"
    argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["wanda"])]
    assert main([*argv, "--calibration", str(tokens), "--sequential", "--out", str(out)]) == 0
    model, _ = load_model(str(models["llama"]), out)
    # the same procedure in-process, through the library's own entry point
    from prunefw import LayerPruningContext, prune_sequential

    expected = transformers.AutoModelForCausalLM.from_pretrained(
        models["llama"], local_files_only=True
    )
    ctx = LayerPruningContext(
        {"model.layers.*.*.*_proj": wanda.WandaCriterion(0.5)}, model=expected
    )
    prune_sequential(ctx, TOKENS)
    one_shot = reference(models["llama"], models["wanda"], calibration_data=[TOKENS])
    state, sequential, plain = model.state_dict(), expected.state_dict(), one_shot.state_dict()
    mask_keys = [key for key in state if key.endswith("weight_mask")]
    assert len(mask_keys) == 14
    assert all(torch.equal(state[key], sequential[key]) for key in mask_keys)
    assert not all(torch.equal(state[key], plain[key]) for key in mask_keys)
    assert torch.equal(logits(model), logits(expected))


def test_sequential_needs_calibration_inputs(models, tmp_path, capsys):
    argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["wanda"])]
    assert main([*argv, "--sequential", "--out", str(tmp_path / "o.pt")]) == 1
    assert error(capsys) == (
        "--sequential calibrates block by block and needs calibration inputs: "
        "add --calibration FILE (or drop --sequential)"
    )
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"input_ids": TOKENS},
            "calibration data must be a tensor of inputs (batch dimension first) or a list of "
            "input batches saved with torch.save; a batch is a tensor, a tuple or list of tensors "
            '(positional arguments) or a dict of keyword arguments such as {"input_ids": ..., '
            '"attention_mask": ...}; got a dict: if it is one batch of keyword arguments, save '
            "it in a list, torch.save([batch], path)",
        ),
        (
            [{"input_ids": TOKENS}, {"input_ids": [1, 2]}],
            "calibration data must be a tensor of inputs (batch dimension first) or a list of "
            "input batches saved with torch.save; a batch is a tensor, a tuple or list of tensors "
            '(positional arguments) or a dict of keyword arguments such as {"input_ids": ..., '
            "\"attention_mask\": ...}; batch #2 has the key 'input_ids' whose value is a list, "
            "not a tensor",
        ),
        (
            [TOKENS, 3],
            "calibration data must be a tensor of inputs (batch dimension first) or a list of "
            "input batches saved with torch.save; a batch is a tensor, a tuple or list of tensors "
            '(positional arguments) or a dict of keyword arguments such as {"input_ids": ..., '
            '"attention_mask": ...}; batch #2 is a int',
        ),
    ],
)
def test_bad_calibration_files(models, tmp_path, capsys, content, message):
    path = tmp_path / "calibration.pt"
    torch.save(content, path)
    argv = ["prune", "--model", str(models["llama"]), "--recipe", str(models["wanda"])]
    assert main([*argv, "--calibration", str(path), "--out", str(tmp_path / "o.pt")]) == 1
    assert error(capsys) == f"{path}: {message}"


# --- errors ---------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_model_errors(models, tmp_path, capsys):
    version = transformers.__version__
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_json = _write(tmp_path / "bad" / "config.json", '{"model_type": "llama",')
    array = _write(tmp_path / "array.json", "[1, 2]")
    no_type = _write(tmp_path / "no_type.json", '{"hidden_size": 8}')
    unknown_type = _write(tmp_path / "unknown.json", '{"model_type": "qqqqqq"}')
    config = json.loads((models["llama"] / "config.json").read_text())
    unknown_arch = _write(
        tmp_path / "arch.json", json.dumps({**config, "architectures": ["LlamaForCausalLMM"]})
    )
    custom = _write(
        tmp_path / "custom.json",
        json.dumps({"model_type": "my-model", "auto_map": {"AutoModel": "x.MyModel"}}),
    )
    cases = [
        (
            str(empty),
            f"--model: {empty} is a directory without config.json, so not a Hugging Face model "
            "directory (write one with model.save_pretrained(directory))",
        ),
        (
            str(bad_json.parent),
            f"--model: {bad_json} is not valid JSON: Expecting property name enclosed in double "
            "quotes at line 1 column 24",
        ),
        (
            str(array),
            f"--model: {array} holds a JSON list, not a transformers config (an object with a "
            '"model_type", as config.json written by save_pretrained)',
        ),
        (
            str(no_type),
            f'--model: {no_type} has no "model_type", so it is not a transformers config (the '
            "config.json that save_pretrained writes has one)",
        ),
        (
            str(unknown_type),
            f"--model: {unknown_type}: unknown model_type 'qqqqqq': transformers {version} has "
            "no such model",
        ),
        (
            str(unknown_arch),
            f"--model: {unknown_arch} names the architecture 'LlamaForCausalLMM', which "
            f"transformers {version} does not have (did you mean LlamaForCausalLM?); fix "
            '"architectures" in the config, or remove it to use AutoModelForCausalLM',
        ),
        (
            str(custom),
            f"--model: {custom}: unknown model_type 'my-model': transformers {version} has no "
            "such model; the config points to custom model code (auto_map), which prunefw "
            "never runs (no trust_remote_code)",
        ),
        (str(tmp_path / "none.json"), f"--model: no such file '{tmp_path / 'none.json'}'"),
        (f"{tmp_path / 'none'}/", f"--model: no such directory '{tmp_path / 'none'}'"),
    ]
    for spec, message in cases:
        assert main(["report", "--model", spec]) == 1, spec
        assert error(capsys) == message


def test_unknown_model_type_suggests_close_names(tmp_path, capsys):
    # the suggestions depend on transformers' list of models: check the start and one name
    path = _write(tmp_path / "c.json", '{"model_type": "lama"}')
    assert main(["report", "--model", str(path)]) == 1
    message = error(capsys)
    assert message.startswith(f"--model: {path}: unknown model_type 'lama': transformers ")
    assert "has no such model; did you mean llama, " in message


def test_weights_missing_from_a_model_directory(models, tmp_path, capsys):
    torch.manual_seed(0)
    base = tmp_path / "base"
    transformers.LlamaModel(llama_config()).save_pretrained(base)  # no lm_head
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    capsys.readouterr()  # save_pretrained's progress bars
    assert main(["report", "--model", str(base)]) == 1
    assert error(capsys) == (
        f"--model: {base} does not hold all the weights of LlamaForCausalLM: 1 missing or of "
        "another shape (lm_head.weight); transformers would initialise them at random"
    )
    no_weights = tmp_path / "config-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((models["llama"] / "config.json").read_text())
    assert main(["report", "--model", str(no_weights)]) == 1
    assert error(capsys) == (
        f"{no_weights} is a directory without model weights: prunefw reads model.safetensors, "
        "model.safetensors.index.json with its shards, or pytorch_model.bin (as save_pretrained "
        "or prunefw prune --out DIR/ write them)"
    )
    # with --checkpoint, a directory's config is enough
    argv = ["report", "--model", str(no_weights), "--checkpoint", str(models["llama"])]
    assert main([*argv, "--json"]) == 0


def test_architecture_from_the_config_before_the_auto_classes(models, tmp_path, capsys):
    torch.manual_seed(0)
    transformers.GPT2Model(gpt2_config()).save_pretrained(tmp_path / "base")
    capsys.readouterr()
    model, _ = load_model(str(tmp_path / "base"), None)
    assert type(model).__name__ == "GPT2Model"
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    del config["architectures"]
    _write(tmp_path / "noarch.json", json.dumps(config))
    model, _ = load_model(str(tmp_path / "noarch.json"), None)
    assert type(model).__name__ == "GPT2LMHeadModel"  # AutoModelForCausalLM


def test_transformers_not_installed(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["report", "--model", str(models["llama"])]) == 1
    assert error(capsys) == (
        f"--model: {models['llama']} is a Hugging Face model; loading it needs the optional "
        "package transformers: pip install 'prunefw[transformers]'"
    )


def test_huggingface_hub_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "digits-mlp.toml"
    out = tmp_path / "out"
    argv = ["prune", "--model", "prunefw.examples:digits_mlp", "--recipe", str(recipe)]
    assert main([*argv, "--out", f"{out}/"]) == 1
    assert error(capsys) == (
        f"{out}: writing a model directory needs the optional packages of prunefw's "
        "transformers extra: pip install 'prunefw[transformers]'"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_checkpoint_and_out_errors(models, tmp_path, capsys):
    llama = str(models["llama"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "--model", llama, "--checkpoint", str(empty)]) == 1
    assert error(capsys).startswith(f"{empty} is a directory without model weights: ")

    broken = tmp_path / "broken"
    broken.mkdir()
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    assert main(["report", "--model", llama, "--checkpoint", str(broken)]) == 1
    assert error(capsys) == (
        f"{broken / 'model.safetensors.index.json'} names the shard "
        f"'model-00001-of-00002.safetensors', which {broken} lacks"
    )
    index["weight_map"] = {"lm_head.weight": "../outside.safetensors"}
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    assert main(["report", "--model", llama, "--checkpoint", str(broken)]) == 1
    assert error(capsys) == (
        f"{broken / 'model.safetensors.index.json'} names the shard '../outside.safetensors', "
        f"which is not a file of {broken} (prunefw reads shards next to their index only)"
    )

    prune = ["prune", "--model", llama, "--recipe", str(models["linear"])]
    assert main([*prune, "--out", str(tmp_path / "x.pt"), "--max-shard-size", "1MB"]) == 1
    assert error(capsys) == (
        f"--max-shard-size applies to a model directory, and --out {tmp_path / 'x.pt'} is a "
        "file; end --out with / to write a directory"
    )
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main([*prune, "--out", f"{a_file}/"]) == 1
    assert error(capsys) == (
        f"{a_file} exists and is not a directory; --out ending with / writes a model "
        "directory (remove the /, or choose another name)"
    )
    with pytest.raises(SystemExit) as info:
        main([*prune, "--out", f"{tmp_path}/o/", "--max-shard-size", "lots"])
    assert info.value.code == 2
    assert "expected a size like 5GB, 500MB or a number of bytes, got 'lots'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as info:
        main(["report", "--model", str(tmp_path / "no-such-dir")])
    assert info.value.code == 2
    assert "nor a Hugging Face model directory or config .json file" in capsys.readouterr().err
