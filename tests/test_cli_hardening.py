"""The command line under faults (issue 12, items 10-12): bad files, bad outputs, bad code.

Every test pins the exact error type or message: a ``prunefw: error:`` line naming
what is wrong (the file, the tensor, the factory, the batch and module), exit 1,
and nothing written or changed.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import prunefw.cli.report
from prunefw.cli import main
from prunefw.cli._files import read_checkpoint
from prunefw.errors import CheckpointError
from prunefw.examples import digits_mlp
from prunefw.history import METADATA_KEY, PruningHistory

ROOT = Path(__file__).resolve().parent.parent
MODEL = "prunefw.examples:digits_mlp"
RECIPE = ROOT / "docs" / "recipes" / "digits-mlp.toml"
WANDA = ROOT / "docs" / "recipes" / "wanda.toml"
DEEP = "[" * 100_000


def prune_args(out: Path, *extra: str, recipe: Path = RECIPE) -> list[str]:
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
