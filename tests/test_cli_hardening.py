"""The command line under faults (issue 12, items 10-12): bad files, bad outputs, bad code.

Every test pins the exact error type or message: a ``prunefw: error:`` line naming
what is wrong (the file, the tensor, the factory, the batch and module), exit 1,
and nothing written or changed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import prunefw.cli.prune
import prunefw.cli.report
from prunefw._atomic import STALE_AFTER, _temp_path, remove_stale_temporaries
from prunefw.cli import main
from prunefw.cli._checksums import CHECKSUM_KEY, tensor_checksum
from prunefw.cli._reading import read_checkpoint
from prunefw.cli._writing import write_checkpoint
from prunefw.errors import CheckpointError
from prunefw.examples import digits_mlp
from prunefw.history import METADATA_KEY, PruningHistory

ROOT = Path(__file__).resolve().parent.parent
MODEL = "prunefw.examples:digits_mlp"
RECIPE = ROOT / "docs" / "recipes" / "digits-mlp.toml"
WANDA = ROOT / "docs" / "recipes" / "wanda.toml"
DEEP = "[" * 100_000


def prune_args(out: Path | str, *extra: str, recipe: Path = RECIPE) -> list[str]:
    return ["prune", "--model", MODEL, "--recipe", str(recipe), "--out", str(out), *extra]


def error(capsys) -> str:
    """The one ``prunefw: error:`` line on stderr, without its prefix."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("prunefw: error: "), lines
    return lines[0].removeprefix("prunefw: error: ")


def files(directory: Path) -> list[str]:
    """Every name in ``directory``, hidden temporary files included."""
    return sorted(path.name for path in directory.iterdir())


# --- item 12: --model code that exits, corrupt history, calibration errors --------------------


def test_a_factory_that_calls_sys_exit_is_an_error_naming_it(tmp_path, capsys):
    out = tmp_path / "out.pt"
    argv = ["prune", "--model", "builtins:exit", "--recipe", str(RECIPE), "--out", str(out)]
    assert main(argv) == 1
    assert error(capsys) == (
        "--model: calling builtins:exit() exited instead of returning a model: it called "
        "sys.exit(None) (SystemExit); the factory must return a torch.nn.Module"
    )
    assert files(tmp_path) == []
    (tmp_path / "quits.py").write_text("import sys\n\ndef build():\n    sys.exit(0)\n")
    assert main(["report", "--model", f"{tmp_path / 'quits.py'}:build"]) == 1
    assert "calling " in error(capsys)


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ("import sys\nsys.exit(0)\n", "it called sys.exit(0) (SystemExit)"),
        ("raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
        ("def broken(:\n", "SyntaxError: "),
    ],
)
def test_a_model_module_that_fails_or_exits_while_imported(
    tmp_path, capsys, monkeypatch, body, outcome
):
    name = f"failing_models_{abs(hash(body))}"
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for _ in range(2):  # the same error again: no half-imported module left behind
        assert main(["report", "--model", f"{name}:build"]) == 1
        assert error(capsys).startswith(f"--model: importing module {name!r} failed: {outcome}")
        assert main(["report", "--model", f"{path}:build"]) == 1
        assert error(capsys).startswith(f"--model: importing {str(path)!r} failed: {outcome}")


def test_sys_exit_inside_any_command_is_an_error_not_a_silent_exit(monkeypatch, capsys):
    def exits(args):
        raise SystemExit(0)

    monkeypatch.setattr(prunefw.cli.report, "run", exits)
    assert main(["report", "--model", MODEL]) == 1
    assert error(capsys) == (
        "unexpected exit: code that prunefw report ran called sys.exit(0) (SystemExit) before "
        "the command finished (rerun with --debug for the traceback)"
    )
    with pytest.raises(SystemExit):
        main(["report", "--model", MODEL, "--debug"])


def _with_history_text(text: str) -> OrderedDict:
    state = digits_mlp().state_dict()
    state._metadata[""][METADATA_KEY] = text
    return state


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{bad", "the stored prunefw history is not valid JSON: Expecting property name"),
        (DEEP, "the stored prunefw history is corrupt: JSON nested too deeply to read"),
        ("[1, 2]", "the stored prunefw history must be a JSON object of lists, got list"),
        (
            json.dumps({"0.weight": [{"criterion": 1, "deep": [[[[[["x"] * 50]]]]]}]}),
            "invalid prunefw history entry {'criterion': 1, 'deep': [[[...]]]}: expected",
        ),
    ],
)
def test_corrupt_history_names_the_file(tmp_path, capsys, text, problem):
    from safetensors.torch import save_file

    pt = tmp_path / "model.pt"
    torch.save(_with_history_text(text), pt)
    assert main(["report", "--model", MODEL, "--checkpoint", str(pt)]) == 1
    assert error(capsys).startswith(f"{pt}: {problem}")

    tensors = {key: value.contiguous() for key, value in digits_mlp().state_dict().items()}
    safe = tmp_path / "model.safetensors"
    save_file(tensors, safe, metadata={METADATA_KEY: text})
    with pytest.raises(CheckpointError, match=r"^" + str(safe).replace(".", r"\.") + ": "):
        read_checkpoint(safe)

    directory = tmp_path / "dir"
    directory.mkdir()
    save_file(tensors, directory / "model.safetensors")
    (directory / "prunefw_history.json").write_text(text)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(directory)
    assert str(info.value).startswith(f"{directory / 'prunefw_history.json'}: {problem}")
    assert PruningHistory.from_json("{}", source="x") == PruningHistory()


def test_deeply_nested_json_in_directories_and_configs_is_a_clear_error(tmp_path, capsys):
    from safetensors.torch import save_file

    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "model.safetensors.index.json").write_text(DEEP)
    with pytest.raises(CheckpointError, match="cannot be read as JSON: nested too deeply"):
        read_checkpoint(directory)
    (directory / "model.safetensors.index.json").unlink()
    tensors = {key: value.contiguous() for key, value in digits_mlp().state_dict().items()}
    save_file(tensors, directory / "model.safetensors", metadata={"prunefw.aliases": DEEP})
    with pytest.raises(CheckpointError, match=r"'prunefw\.aliases' is not a JSON object"):
        read_checkpoint(directory)
    config = tmp_path / "config.json"
    config.write_text(DEEP)
    assert main(["report", "--model", str(config)]) == 1
    assert error(capsys).startswith(f"--model: {config} is not a usable JSON config: Recursion")


def test_calibration_that_does_not_fit_names_the_batch_and_the_module(tmp_path, capsys):
    out = tmp_path / "out.pt"
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.rand(8, 10), wrong)
    assert main(prune_args(out, "--calibration", str(wrong), recipe=WANDA)) == 1
    assert error(capsys) == (
        f"--calibration {wrong}: running batch #1 (a tensor of shape (8, 10)) through the model "
        "failed in module 'features.0' (Linear): RuntimeError: mat1 and mat2 shapes cannot be "
        f"multiplied (8x10 and 64x128) (in {WANDA} [layer rules])"
    )
    torch.save([torch.rand(4, 64), torch.rand(4, 64), torch.rand(4, 64, 2)], wrong)
    assert main(prune_args(out, "--calibration", str(wrong), recipe=WANDA)) == 1
    assert error(capsys).startswith(
        f"--calibration {wrong}: running batch #3 (a tensor of shape (4, 64, 2)) through the "
        "model failed in module 'features.0' (Linear): RuntimeError: mat1 and mat2 shapes"
    )
    torch.save([{"inputs": torch.rand(4, 64)}], wrong)
    assert main(prune_args(out, "--calibration", str(wrong), recipe=WANDA)) == 1
    assert error(capsys).startswith(
        f"--calibration {wrong}: running batch #1 (a dict {{inputs: (4, 64)}}) through the model "
        "failed in the model (DigitsMLP): TypeError: "
    )
    assert files(tmp_path) == ["wrong.pt"]
    torch.save([torch.rand(4, 64), (torch.rand(4, 64),)], wrong)
    assert main(prune_args(out, "-q", "--calibration", str(wrong), recipe=WANDA)) == 0


# --- item 10: checksums of the tensors prunefw writes; truncated files ----------------------


def _flip_tensor_byte(path: Path, tensor: torch.Tensor) -> None:
    """Flip one byte inside ``tensor``'s bytes as stored in ``path``."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0
    data[at + len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupted_tensor_bytes_are_refused_naming_the_file_and_tensor(tmp_path, capsys, suffix):
    out = tmp_path / f"pruned{suffix}"
    assert main(prune_args(out, "-q")) == 0
    saved = read_checkpoint(out)  # verified: the checksums of a fresh file match
    weight = saved.state_dict["classifier.weight_orig"]
    _flip_tensor_byte(out, weight)
    assert main(["report", "--model", MODEL, "--checkpoint", str(out)]) == 1
    message = error(capsys)
    assert message.startswith(
        f"{out} is corrupt: the tensor 'classifier.weight_orig' does not match the sha256 "
        "checksum prunefw stored when it wrote the file (its bytes, dtype or shape changed); "
        "restore it from a copy or write it again"
    )
    assert main([*prune_args(tmp_path / "again.pt"), "--checkpoint", str(out)]) == 1
    assert "does not match the sha256 checksum" in error(capsys)
    assert not (tmp_path / "again.pt").exists()


def test_a_changed_dtype_in_a_safetensors_header_is_refused(tmp_path):
    out = tmp_path / "pruned.safetensors"
    assert main(prune_args(out, "-q")) == 0
    data = out.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["classifier.weight_orig"]["dtype"] = "I32"  # same size: the bytes still fit
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
    with pytest.raises(CheckpointError, match=r"the tensor 'classifier\.weight_orig' does not"):
        read_checkpoint(out)


def test_checksum_entries_that_do_not_fit_the_tensors(tmp_path):
    from safetensors.torch import save_file

    tensors = {"a": torch.ones(3), "b": torch.zeros(2)}
    path = tmp_path / "x.safetensors"
    full = json.dumps({key: tensor_checksum(value) for key, value in tensors.items()})
    save_file(tensors, path, metadata={CHECKSUM_KEY: full})
    assert set(read_checkpoint(path).state_dict) == {"a", "b"}
    cases = [
        (json.dumps({"a": tensor_checksum(tensors["a"])}), "it holds the tensor 'b', which has no"),
        (
            json.dumps({**json.loads(full), "c": tensor_checksum(tensors["a"])}),
            "prunefw stored a checksum of the tensor 'c', which the file does not hold",
        ),
        ("{not json", "its metadata entry 'prunefw.sha256' is not the JSON object"),
        (DEEP, "its metadata entry 'prunefw.sha256' is not the JSON object"),
        (json.dumps({"a": "short", "b": "x"}), "its metadata entry 'prunefw.sha256' is not"),
    ]
    for text, problem in cases:
        save_file(tensors, path, metadata={CHECKSUM_KEY: text})
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        assert str(info.value).startswith(f"{path} is corrupt: {problem}")


def test_files_written_by_others_have_no_checksum_and_still_load(tmp_path, capsys):
    from safetensors.torch import save_file

    state = digits_mlp(seed=3).state_dict()
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    safe = tmp_path / "plain.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, safe)
    for path in (plain, safe):
        loaded = read_checkpoint(path).state_dict
        assert all(torch.equal(loaded[key], value) for key, value in state.items())
        assert main(["report", "--model", MODEL, "--checkpoint", str(path), "-q"]) == 0
    capsys.readouterr()


def test_the_pytorch_file_carries_its_checksums_in_the_metadata(tmp_path):
    out = tmp_path / "pruned.pt"
    assert main(prune_args(out, "-q")) == 0
    state = torch.load(out, weights_only=True)
    sums = json.loads(state._metadata[""][CHECKSUM_KEY])
    assert sums == {key: tensor_checksum(value) for key, value in state.items()}
    state["classifier.bias"] += 1  # changed on purpose, metadata kept: refused, with the fix
    torch.save(state, out)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(out)
    assert "delete the entry 'prunefw.sha256' of the state_dict's _metadata['']" in str(info.value)
    del state._metadata[""][CHECKSUM_KEY]
    torch.save(state, out)
    assert torch.equal(read_checkpoint(out).state_dict["classifier.bias"], state["classifier.bias"])


def test_tensor_checksum_covers_dtype_shape_and_bytes():
    base = torch.arange(6, dtype=torch.float32)
    digest = tensor_checksum(base)
    assert digest == tensor_checksum(base.clone())
    assert digest == tensor_checksum(base.reshape(2, 3).t().contiguous().t().reshape(6))
    assert digest != tensor_checksum(base.reshape(2, 3))
    assert digest != tensor_checksum(base.view(torch.int32))
    changed = base.clone()
    changed[3] = 3.0000002
    assert digest != tensor_checksum(changed)
    assert tensor_checksum(base.reshape(2, 3).t()) == tensor_checksum(base.reshape(2, 3).t() + 0)
    assert tensor_checksum(torch.zeros(2, 2).to_sparse()) is None
    assert tensor_checksum(torch.zeros(2, device="meta")) is None
    assert tensor_checksum(torch.ones(2, dtype=torch.bfloat16)) is not None
    assert tensor_checksum(torch.tensor(True)) is not None


def test_truncated_and_empty_files_say_so(tmp_path):
    out = tmp_path / "pruned.pt"
    assert main(prune_args(out, "-q")) == 0
    data = out.read_bytes()
    for size in (len(data) // 3, len(data) - 30, 100):
        out.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(out)
        assert str(info.value).startswith(f"{out} is truncated or corrupt: torch.load cannot")
        assert "Invalid argument" not in str(info.value).split("(")[0]
    out.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\), not a checkpoint$"):
        read_checkpoint(out)

    safe = tmp_path / "pruned.safetensors"
    assert main(prune_args(safe, "-q")) == 0
    data = safe.read_bytes()
    safe.write_bytes(data[:-10])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(safe)
    assert str(info.value) == (
        f"{safe} is truncated: it holds {len(data) - 10} bytes, its header describes "
        f"{len(data)}; restore it from a copy or write it again"
    )
    safe.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="is truncated or corrupt: it holds 5 bytes"):
        read_checkpoint(safe)
    safe.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        read_checkpoint(safe)


def test_model_directories_carry_checksums_in_every_shard(tmp_path, capsys):
    pytest.importorskip("huggingface_hub")
    from safetensors import safe_open

    out = tmp_path / "pruned"
    assert main([*prune_args(f"{out}/"), "-q", "--max-shard-size", "40KB"]) == 0
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            sums = json.loads(handle.metadata()[CHECKSUM_KEY])
            assert sums == {key: tensor_checksum(handle.get_tensor(key)) for key in handle.keys()}  # noqa: SIM118
    saved = read_checkpoint(out).state_dict
    shard = next(s for s in shards if "features.0.weight_orig" in _keys_of(s))
    _flip_tensor_byte(shard, saved["features.0.weight_orig"])
    assert main(["report", "--model", MODEL, "--checkpoint", str(out)]) == 1
    assert error(capsys).startswith(
        f"{shard} is corrupt: the tensor 'features.0.weight_orig' does not match the sha256"
    )


def _keys_of(shard: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as handle:
        return set(handle.keys())


def test_save_pretrained_directories_get_checksums_and_still_load(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
    )
    torch.manual_seed(0)
    source = tmp_path / "llama"
    transformers.LlamaForCausalLM(config).save_pretrained(source)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[global]\ncriteria = [{ name = "magnitude", amount = 0.5 }]\n'
        'module_types = ["Linear"]\ninclude = ["model.layers.*"]\n'
    )
    out = tmp_path / "out"
    argv = ["prune", "--model", str(source), "--recipe", str(recipe), "--out", f"{out}/"]
    assert main([*argv, "--permanent", "-q"]) == 0
    (weights,) = out.glob("*.safetensors")
    with safe_open(str(weights), framework="pt") as handle:
        assert handle.metadata()["format"] == "pt"
        assert set(json.loads(handle.metadata()[CHECKSUM_KEY])) == set(handle.keys())
    model = transformers.LlamaForCausalLM.from_pretrained(out, local_files_only=True)
    assert torch.equal(
        model.state_dict()["model.layers.0.mlp.up_proj.weight"],
        read_checkpoint(out).state_dict["model.layers.0.mlp.up_proj.weight"],
    )
    _flip_tensor_byte(weights, model.state_dict()["model.layers.0.mlp.up_proj.weight"])
    capsys.readouterr()
    assert main(["report", "--model", str(out)]) == 1
    assert "is corrupt: the tensor 'model.layers.0.mlp.up_proj.weight' does not match" in (
        error(capsys)
    )


# --- item 11: --out: directories, files in the way, permissions, modes, symlinks, signals -----


def test_a_directory_given_as_a_file_output_is_named_not_the_temp_file(tmp_path):
    directory = tmp_path / "adir"
    directory.mkdir()
    with pytest.raises(CheckpointError) as info:
        write_checkpoint(directory, {"w": torch.ones(1)}, PruningHistory())
    assert str(info.value) == (
        f"{directory} is a directory, so a checkpoint file cannot replace it; end the path "
        "with / to write a model directory into it, or choose a file name"
    )
    assert files(tmp_path) == ["adir"] and files(directory) == []


def test_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "x.pt", tmp_path / "afile" / "sub" / "x.pt"):
        assert main(prune_args(out)) == 1
        assert error(capsys) == (
            f"{out}: cannot write a checkpoint there: {tmp_path / 'afile'} is a file, not a "
            "directory"
        )
    pytest.importorskip("huggingface_hub")
    assert main(prune_args(f"{tmp_path / 'afile' / 'd'}/")) == 1
    assert error(capsys) == (
        f"{tmp_path / 'afile' / 'd'}: cannot write a model directory there: "
        f"{tmp_path / 'afile'} is a file, not a directory"
    )
    assert files(tmp_path) == ["afile"]


def test_an_empty_out_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(prune_args(""))
    assert info.value.code == 2
    assert (
        "argument --out: expected a file, or a directory ending with /, got an empty path"
        in capsys.readouterr().err
    )
    with pytest.raises(CheckpointError, match="the output path is empty"):
        write_checkpoint("", {"w": torch.ones(1)}, PruningHistory())


def test_other_things_in_the_way_of_out(tmp_path, capsys):
    fifo = tmp_path / "fifo"  # like /dev/null, which a broken writer would replace (as root)
    os.mkfifo(fifo)
    assert main(prune_args(fifo)) == 1
    assert error(capsys) == (
        f"{fifo} exists and is not a regular file; prunefw replaces regular files only: "
        "choose another name"
    )
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    assert main(prune_args(loop)) == 1
    assert error(capsys) == (
        f"{loop} is a symlink that leads to no file (a loop of symlinks); remove it or choose "
        "another name"
    )


def test_an_unwritable_out_fails_before_the_work_with_a_clear_message(
    tmp_path, capsys, monkeypatch
):
    import prunefw.cli._writing as files_module

    out = tmp_path / "ro" / "x.pt"
    out.parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        files_module.os, "access", lambda p, mode: p != out.parent and real_access(p, mode)
    )
    monkeypatch.setattr(prunefw.cli.prune, "apply_recipe", _must_not_run)
    assert main(prune_args(out)) == 1
    assert error(capsys) == (
        f"{out}: cannot write a checkpoint there: permission denied ({out.parent} is not writable)"
    )


def _must_not_run(*args, **kwargs):
    raise AssertionError("the work ran although --out cannot be written")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_for_real(tmp_path, capsys):
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o500)
    assert main(prune_args(directory / "x.pt")) == 1
    assert "permission denied" in error(capsys)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied (is "),
        (RuntimeError("PytorchStreamWriter failed writing file data/0"), "RuntimeError: "),
    ],
)
def test_a_failing_write_names_the_output_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, failure, reason
):
    import prunefw.cli._writing as files_module

    def failing(data, tmp):
        tmp.write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(files_module, "_torch_save", failing)
    out = tmp_path / "out.pt"
    out.write_bytes(b"old")
    assert main(prune_args(out)) == 1
    message = error(capsys)
    assert message.startswith(f"{out}: cannot write: {reason}")
    assert message.endswith("; nothing was written") and ".prunefw-tmp" not in message
    assert files(tmp_path) == ["out.pt"] and out.read_bytes() == b"old"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_an_existing_file_keeps_its_mode_and_new_files_get_the_umask_mode(tmp_path, suffix):
    out = tmp_path / f"secret{suffix}"
    out.write_bytes(b"")
    out.chmod(0o600)
    assert main(prune_args(out, "-q")) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o640)
    assert main(prune_args(out, "-q")) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert read_checkpoint(out).history
    old = os.umask(0o027)
    try:
        fresh = tmp_path / f"fresh{suffix}"
        assert main(prune_args(fresh, "-q")) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640  # 0o666 less the umask


def test_a_symlink_out_is_written_through(tmp_path, capsys):
    real = tmp_path / "store" / "real.pt"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    assert main(prune_args(link, "-q")) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert "classifier.weight_mask" in read_checkpoint(real).state_dict
    assert files(real.parent) == ["real.pt"] and files(tmp_path) == ["link.pt", "store"]
    dangling = tmp_path / "dangling.pt"
    dangling.symlink_to(tmp_path / "store" / "new.pt")
    assert main(prune_args(dangling, "-q")) == 0
    assert dangling.is_symlink() and (tmp_path / "store" / "new.pt").is_file()


def test_a_symlink_to_a_model_directory_is_written_through(tmp_path):
    pytest.importorskip("huggingface_hub")
    real = tmp_path / "real"
    real.mkdir()
    (real / "tokenizer.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert main(prune_args(f"{link}/", "-q")) == 0
    assert link.is_symlink()
    assert files(real) == ["model.safetensors", "prunefw_history.json", "tokenizer.json"]
    (real / "model.safetensors").chmod(0o600)
    assert main(prune_args(f"{link}/", "-q")) == 0
    assert stat.S_IMODE((real / "model.safetensors").stat().st_mode) == 0o600
    assert files(tmp_path) == ["link", "real"]


SLOW_WRITER = """
import sys, time
import {module} as module

real = module.{writer}


def slow(*args):
    real(*args)
    print("writing", flush=True)
    time.sleep(60)


module.{writer} = slow
from prunefw.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _default_signal_handling() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _start_slow_write(
    tmp_path: Path, out: str, writer: str = "prunefw.cli._writing._torch_save"
) -> subprocess.Popen:
    module, _, name = writer.rpartition(".")
    script = tmp_path / "slow.py"
    script.write_text(SLOW_WRITER.format(module=module, writer=name))
    process = subprocess.Popen(
        [sys.executable, str(script), *prune_args(out, "-q")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        preexec_fn=_default_signal_handling,  # under nohup, SIGHUP would stay ignored
    )
    assert process.stdout.readline() == "writing\n"
    return process


def _temporaries(directory: Path) -> list[str]:
    return [name for name in files(directory) if name.endswith(".prunefw-tmp")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_during_the_write_removes_the_temporary_file(tmp_path, signum):
    out = tmp_path / "out" / "pruned.pt"
    process = _start_slow_write(tmp_path, str(out))
    assert len(_temporaries(out.parent)) == 1
    process.send_signal(signum)
    assert process.wait(timeout=60) == -signum  # the signal still ends the process
    assert files(out.parent) == []


def test_sigterm_during_a_directory_write_removes_the_temporary_directory(tmp_path):
    pytest.importorskip("huggingface_hub")
    out = tmp_path / "out"
    process = _start_slow_write(tmp_path, f"{out}/", writer="prunefw.cli.prune.write_shards")
    assert len(_temporaries(tmp_path)) == 1
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM
    assert _temporaries(tmp_path) == [] and not out.exists()


def test_a_previous_sigterm_handler_runs_and_is_restored(tmp_path, monkeypatch):
    import prunefw.cli._writing as files_module

    real = files_module._torch_save

    def interrupted(data, tmp):
        real(data, tmp)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this

    calls = []

    def handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        monkeypatch.setattr(files_module, "_torch_save", interrupted)
        out = tmp_path / "out.pt"
        with pytest.raises(CheckpointError, match=r"out\.pt: not written: interrupted by SIGTERM"):
            write_checkpoint(out, {"w": torch.ones(2)}, PruningHistory())
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler
        assert files(tmp_path) == []
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ignored stays ignored: the write goes on
        write_checkpoint(out, {"w": torch.ones(2)}, PruningHistory())
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert files(tmp_path) == ["out.pt"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigkill_leaves_a_temporary_file_that_a_later_run_removes(tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    process = _start_slow_write(tmp_path, str(out))
    process.kill()
    process.wait(timeout=60)
    (left,) = _temporaries(tmp_path)
    assert left.startswith(".pruned.pt.") and not out.exists()
    assert main(prune_args(out, "-q")) == 0
    assert _temporaries(tmp_path) == [left]  # changed within the last minute: kept
    past = time.time() - STALE_AFTER - 5
    os.utime(tmp_path / left, (past, past))
    assert main(prune_args(out, "-q")) == 0
    assert _temporaries(tmp_path) == []


def test_stale_temporaries_are_removed_only_when_safe(tmp_path):
    out = tmp_path / "model"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    host = _temp_path(out).name.split(".")[2].rsplit("-", 1)[0]
    names = {
        "dead": f".model.{host}-{dead_pid}.prunefw-tmp",
        "alive": f".model.{host}-{os.getppid()}.prunefw-tmp",
        "other host": f".model.otherhost-{dead_pid}.prunefw-tmp",
        "other output": f".model2.{host}-{dead_pid}.prunefw-tmp",
        "not ours": f".model.{host}-{dead_pid}.tmp",
        "dead dir": f".model.{host}-{dead_pid + 1}.prunefw-tmp",
        "symlink": f".model.{host}-{dead_pid + 2}.prunefw-tmp",
    }
    for key, name in names.items():
        if key == "dead dir":
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"x")
        elif key == "symlink":
            (tmp_path / name).symlink_to(tmp_path / "target")
        else:
            (tmp_path / name).write_bytes(b"x")
    (tmp_path / "target").write_bytes(b"keep")
    past = time.time() - STALE_AFTER - 5
    for name in names.values():
        os.utime(tmp_path / name, (past, past), follow_symlinks=False)
    os.utime(tmp_path / names["dead dir"] / "model.safetensors", (past, past))
    if _alive_pid(dead_pid + 1) or _alive_pid(dead_pid + 2):
        pytest.skip("a process took one of the test's dead pids")
    removed = remove_stale_temporaries(out)
    assert sorted(path.name for path in removed) == sorted([names["dead"], names["dead dir"]])
    left = set(files(tmp_path))
    assert left == {*names.values(), "target"} - {names["dead"], names["dead dir"]}
    assert (tmp_path / "target").read_bytes() == b"keep"


def _alive_pid(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def test_an_index_that_lists_a_tensor_in_the_wrong_shard_is_refused(tmp_path, capsys):
    pytest.importorskip("huggingface_hub")
    out = tmp_path / "pruned"
    assert main([*prune_args(f"{out}/"), "-q", "--max-shard-size", "40KB"]) == 0
    index_file = out / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, shard in index["weight_map"].items() if shard == shards[0])
    index["weight_map"][key] = shards[1]
    index_file.write_text(json.dumps(index))
    assert main(["report", "--model", MODEL, "--checkpoint", str(out)]) == 1
    assert error(capsys) == (
        f"{index_file} lists the tensor {key!r} in {shards[1]!r}, which does not hold it; the "
        "directory is corrupt or incomplete: restore it from a copy or write it again"
    )
