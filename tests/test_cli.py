"""The ``prunefw`` command: prune, report, demo; exit codes, errors, checkpoints, progress.

The golden report (tests/data/report_golden.json) is the ``report --json`` of
``prunefw.examples:digits_mlp`` (seed 0) pruned with tests/data/report_recipe.toml.
After an intended change, regenerate it with
``PRUNEFW_UPDATE_GOLDEN=1 pytest tests/test_cli.py -k golden`` and review the diff.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import prunefw.cli.demo
import prunefw.cli.report
from prunefw import load_pruned_state_dict
from prunefw.cli import error_line, main
from prunefw.cli._progress import ProgressBars, progress_enabled
from prunefw.cli.demo import DemoNet
from prunefw.cli.report import plain_table, print_report, report_data
from prunefw.errors import InvalidArgumentError, RecipeError
from prunefw.examples import digits_mlp
from prunefw.history import PruningHistory
from prunefw.recipes import apply_recipe, load_recipe

ROOT = Path(__file__).resolve().parent.parent
MODEL = "prunefw.examples:digits_mlp"
RECIPE = ROOT / "docs" / "recipes" / "digits-mlp.toml"
GOLDEN_RECIPE = ROOT / "tests" / "data" / "report_recipe.toml"
GOLDEN = ROOT / "tests" / "data" / "report_golden.json"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m prunefw`` in a subprocess (stdout and stderr are pipes, not TTYs)."""
    return subprocess.run(
        [sys.executable, "-m", "prunefw", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def prune_args(out: Path, *extra: str, recipe: Path = RECIPE) -> list[str]:
    return ["prune", "--model", MODEL, "--recipe", str(recipe), "--out", str(out), *extra]


def reference_model(recipe: Path = RECIPE) -> nn.Module:
    model = digits_mlp()
    apply_recipe(model, load_recipe(recipe))
    return model


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- prune -> save -> report -> load -----------------------------------------------------


def test_round_trip_prune_save_report_load(tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    assert main(prune_args(out)) == 0
    captured = capsys.readouterr()
    assert f"wrote {out} (with pruning masks" in captured.out
    assert "global magnitude(amount=0.9)" in captured.out
    assert captured.err == ""  # no progress bars when stderr is not a terminal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.pt"]  # no temp files left

    state = torch.load(out, weights_only=True)
    assert {k for k in state if k.endswith("_mask")} == {
        "features.0.weight_mask",
        "features.2.weight_mask",
        "classifier.weight_mask",
    }
    fresh = digits_mlp(seed=5)
    load_pruned_state_dict(fresh, state)
    reference = reference_model()
    x = torch.rand(16, 64)
    assert torch.equal(fresh(x), reference(x))
    for name in ("features.0", "features.2", "classifier"):
        module, expected = fresh.get_submodule(name), reference.get_submodule(name)
        assert torch.equal(module.weight_mask, expected.weight_mask)

    assert main(["report", "--model", MODEL, "--checkpoint", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"tensors", "total"}
    by_label = {f"{t['module']}.{t['name']}": t for t in data["tensors"]}
    assert by_label["features.0.weight"]["history"] == [
        {"criterion": "magnitude", "config": {"amount": 0.9}, "scope": "global"}
    ]
    assert by_label["classifier.weight"]["history"] == [
        {"criterion": "magnitude", "config": {"amount": 0.5}, "scope": "layer"}
    ]
    assert by_label["classifier.weight"]["zeros"] == 320
    assert by_label["classifier.bias"]["history"] == []
    assert data["total"]["zeros"] == sum(t["zeros"] for t in data["tensors"])

    assert main(["report", "--model", MODEL, "--checkpoint", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "module", "tensor", "shape", "parameters", "zeros", "sparsity", "criterion", "history"
    ]  # fmt: skip
    assert table[-1].startswith("total")
    classifier = next(line for line in table if line.startswith("classifier  weight"))
    assert classifier.split()[2:6] == ["10x64", "640", "320", "50.00%"]
    assert classifier.endswith("layer magnitude(amount=0.5)")


def test_permanent_output_is_a_plain_state_dict_with_history(tmp_path, capsys):
    out = tmp_path / "permanent.pt"
    assert main(prune_args(out, "--permanent")) == 0
    assert "permanent: a plain state_dict" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert sorted(state) == sorted(digits_mlp().state_dict())
    fresh = digits_mlp(seed=3)
    fresh.load_state_dict(state)
    x = torch.rand(16, 64)
    assert torch.equal(fresh(x), reference_model()(x))
    assert int((state["classifier.weight"] == 0).sum()) == 320

    assert main(["report", "--model", MODEL, "--checkpoint", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    weight = next(
        t for t in data["tensors"] if t["module"] == "classifier" and t["name"] == "weight"
    )
    assert weight["pruned"] is False and weight["zeros"] == 320
    assert weight["history"][0]["criterion"] == "magnitude"


def test_report_json_matches_the_golden_file(tmp_path, capsys):
    out = tmp_path / "golden.pt"
    assert main([*prune_args(out, recipe=GOLDEN_RECIPE), "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    assert main(["report", "--model", MODEL, "--checkpoint", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    if os.environ.get("PRUNEFW_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(data, indent=2) + "\n")
    assert data == json.loads(GOLDEN.read_text())
    stacked = next(
        t for t in data["tensors"] if t["module"] == "features.0" and t["name"] == "weight"
    )
    assert [h["scope"] for h in stacked["history"]] == ["global", "layer"]


def test_prune_json_output(tmp_path, capsys):
    out = tmp_path / "p.pt"
    assert main([*prune_args(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output"] == str(out) and data["permanent"] is False
    assert data["total"] == report_data(reference_model(), PruningHistory())["total"]


def test_prune_loads_the_input_checkpoint_and_stacks_on_pruned_ones(tmp_path, capsys):
    trained = tmp_path / "trained.pt"
    weights = digits_mlp(seed=1).state_dict()
    torch.save(weights, trained)
    first = tmp_path / "first.pt"
    assert main(prune_args(first, "--checkpoint", str(trained))) == 0
    state = torch.load(first, weights_only=True)
    assert torch.equal(state["features.0.weight_orig"], weights["features.0.weight"])

    layer_recipe = tmp_path / "more.toml"
    layer_recipe.write_text(
        '[[layer]]\nmatch = "classifier"\ncriteria = [{ name = "random", prune_ratio = 0.5, '
        "seed = 1 }]\n"
    )
    second = tmp_path / "second.pt"
    assert main(prune_args(second, "--checkpoint", str(first), recipe=layer_recipe)) == 0
    capsys.readouterr()
    assert main(["report", "--model", MODEL, "--checkpoint", str(second), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    classifier = next(t for t in data["tensors"] if t["module"] == "classifier" and t["pruned"])
    assert [h["criterion"] for h in classifier["history"]] == ["magnitude", "random"]
    assert classifier["zeros"] == 320 + 160  # half of what the first recipe left


def test_safetensors_round_trip(tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "pruned.safetensors"
    assert main(prune_args(out)) == 0
    fresh = digits_mlp(seed=9)
    load_pruned_state_dict(fresh, load_file(out))
    x = torch.rand(4, 64)
    assert torch.equal(fresh(x), reference_model()(x))
    capsys.readouterr()
    assert main(["report", "--model", MODEL, "--checkpoint", str(out), "--pruned-only"]) == 0
    assert "global magnitude(amount=0.9)" in capsys.readouterr().out
    again = tmp_path / "again.pt"
    assert main(prune_args(again, "--checkpoint", str(out), recipe=GOLDEN_RECIPE)) == 0


def test_safetensors_without_the_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    assert main(prune_args(tmp_path / "x.safetensors")) == 1
    err = capsys.readouterr().err.strip()
    assert "needs the optional package safetensors: pip install safetensors" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_calibration_inputs_for_criteria_that_need_them(tmp_path, capsys):
    recipe = ROOT / "docs" / "recipes" / "wanda.toml"
    out = tmp_path / "wanda.pt"
    assert main(prune_args(out, recipe=recipe)) == 1
    assert "needs calibration data" in capsys.readouterr().err
    inputs = tmp_path / "inputs.pt"
    torch.save(torch.rand(40, 64), inputs)
    assert (
        main(prune_args(out, "--calibration", str(inputs), "--batch-size", "16", recipe=recipe))
        == 0
    )
    batches = tmp_path / "batches.pt"
    torch.save([torch.rand(8, 64), torch.rand(8, 64)], batches)
    assert main(prune_args(out, "--calibration", str(batches), recipe=recipe)) == 0
    torch.save({"x": torch.rand(8, 64)}, batches)
    capsys.readouterr()
    assert main(prune_args(out, "--calibration", str(batches), recipe=recipe)) == 1
    assert "calibration data must be a tensor of inputs" in capsys.readouterr().err


# --- no pickles, only state_dicts -----------------------------------------------------------


def test_a_pickled_model_is_refused_not_unpickled(tmp_path, capsys):
    whole = tmp_path / "model.pt"
    torch.save(digits_mlp(), whole)
    for command in (["report", "--model", MODEL], prune_args(tmp_path / "out.pt")):
        assert main([*command, "--checkpoint", str(whole)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"prunefw: error: {whole} is not a state_dict")
        assert "pickled Python objects (prunefw.examples.DigitsMLP)" in err[0]
        assert "torch.save(model.state_dict(), path)" in err[0]
    assert not (tmp_path / "out.pt").exists()


class _Marker:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_malicious_pickle_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(1), "payload": _Marker(marker)}, evil)
    assert main(["report", "--model", MODEL, "--checkpoint", str(evil)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"pickled Python objects \((builtins|io)\.open\)", err), err
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (torch.ones(3), "holds a Tensor, not a state_dict"),
        ({"model": {"w": torch.ones(1)}, "epoch": 3}, "its entry 'model' looks like a state_dict"),
        ({1: torch.ones(1)}, "holds a dict with the key 1, not a state_dict"),
    ],
)
def test_other_content_is_refused(tmp_path, capsys, content, phrase):
    path = tmp_path / "c.pt"
    torch.save(content, path)
    assert main(["report", "--model", MODEL, "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert phrase in err and len(err.splitlines()) == 1


def test_unreadable_and_missing_files(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert main(["report", "--model", MODEL, "--checkpoint", str(text)]) == 1
    assert "is not a PyTorch state_dict file" in capsys.readouterr().err
    assert main(["report", "--model", MODEL, "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt: no such file" in capsys.readouterr().err


def test_a_state_dict_inside_a_training_checkpoint_is_accepted(tmp_path, capsys):
    path = tmp_path / "train.pt"
    torch.save({"state_dict": digits_mlp(seed=2).state_dict()}, path)
    assert main(["report", "--model", MODEL, "--checkpoint", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["zeros"] == 0


def test_a_checkpoint_of_another_model(tmp_path, capsys):
    path = tmp_path / "demo.pt"
    torch.save(DemoNet().state_dict(), path)
    assert main(["report", "--model", MODEL, "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} does not fit {MODEL}" in err and "missing keys" in err


# --- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "phrase"),
    [
        ("prunefw.examples:digits_mpl", "has no attribute 'digits_mpl'; did you mean digits_mlp"),
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("prunefw.examples:DIGITS_FEATURES", "is not callable"),
        ("prunefw.examples:load_digits_data", "returned a DigitsData, not a torch.nn.Module"),
        ("prunefw.examples:DigitsData", "calling prunefw.examples:DigitsData() failed: TypeError"),
    ],
)
def test_bad_model_factories_are_one_line_errors(capsys, spec, phrase):
    assert main(["report", "--model", spec]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prunefw: error: --model: ")
    assert phrase in err[0]


def test_model_from_a_python_file(tmp_path, capsys):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(4, 3))\n"
    )
    assert main(["report", "--model", f"{tmp_path / 'my_models.py'}:build", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(t["module"], t["name"]) for t in data["tensors"]] == [("0", "bias"), ("0", "weight")]


# --- exit codes and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["prune"],
        ["report", "--model", "no-colon"],
        ["prune", "--model", "a:b", "--recipe", "r", "--out", "o", "--batch-size", "0"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: prunefw" in capsys.readouterr().err


def test_recipe_errors_are_one_line_exit_1_and_nothing_is_written(tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(
        '[[layer]]\nmatch = "fc*"\ncriteria = [{ name = "magnitude", amount = 0.5 }]\n'
    )
    out = tmp_path / "out.pt"
    assert main(prune_args(out, recipe=recipe)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"prunefw: error: {recipe}: [layer #1] match='fc*' matches no module")
    assert "Fix:" in err[0]
    assert not out.exists()
    with pytest.raises(RecipeError):
        main(["--debug", *prune_args(out, recipe=recipe)])
    with pytest.raises(RecipeError):
        main([*prune_args(out, recipe=recipe), "--debug"])  # after the sub-command too


def test_errors_raised_while_pruning_keep_their_context_notes(tmp_path, capsys):
    recipe = tmp_path / "too-many.toml"
    recipe.write_text(
        '[[layer]]\nmatch = "classifier"\ncriteria = [{ name = "magnitude", amount = 5000 }]\n'
    )
    assert main(prune_args(tmp_path / "o.pt", recipe=recipe)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "amount=5000" in err[0] and f"in {recipe} [layer #1]" in err[0]


def test_unexpected_errors_and_interrupts(monkeypatch, capsys):
    def boom(args):
        raise KeyError("oops")

    monkeypatch.setattr(prunefw.cli.report, "run", boom)
    assert main(["report", "--model", MODEL]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err == "prunefw: error: unexpected KeyError: 'oops' (rerun with --debug for the traceback)"
    )

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(prunefw.cli.report, "run", interrupted)
    assert main(["report", "--model", MODEL]) == 130
    assert capsys.readouterr().err.strip() == "prunefw: interrupted"


def test_error_line_keeps_notes_on_one_line():
    exc = InvalidArgumentError("bad\namount")
    exc.add_note("while applying X")
    assert error_line(exc) == "bad amount (while applying X)"


# --- output: tables, rich, progress --------------------------------------------------------------


def test_rich_table_on_a_terminal_plain_text_otherwise():
    data = report_data(reference_model(), PruningHistory())
    plain = io.StringIO()
    print_report(data, as_json=False, stream=plain)
    assert plain.getvalue() == plain_table(data) + "\n"
    assert "\x1b[" not in plain.getvalue()
    tty = FakeTTY()
    print_report(data, as_json=False, stream=tty)
    text = tty.getvalue()
    assert "\x1b[" in text and "sparsity report" in text and "classifier" in text
    assert "━" in text or "─" in text  # rich's box drawing


def test_progress_bars_only_on_a_terminal_and_not_quiet():
    assert progress_enabled(False, FakeTTY()) is True
    assert progress_enabled(True, FakeTTY()) is False
    assert progress_enabled(False, io.StringIO()) is False
    stream = FakeTTY()
    with ProgressBars(enabled=True, stream=stream) as track:
        assert list(track(range(5), "counting", 5)) == [0, 1, 2, 3, 4]
    assert stream.getvalue()  # rich drew (and then cleared) a bar
    with ProgressBars(enabled=False) as track:
        items = [1, 2]
        assert track(items, "x") is items


def test_prune_shows_progress_on_a_terminal(tmp_path, monkeypatch, capsys):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(prune_args(tmp_path / "p.pt")) == 0
    assert tty.getvalue()
    tty.truncate(0)
    assert main([*prune_args(tmp_path / "q.pt"), "--quiet"]) == 0
    assert tty.getvalue() == ""


# --- as a subprocess ---------------------------------------------------------------------------


def test_prune_and_report_as_subprocesses(tmp_path):
    out = tmp_path / "pruned.pt"
    result = cli(*prune_args(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bars when stderr is not a terminal
    report = cli("report", "--model", MODEL, "--checkpoint", str(out))
    assert report.returncode == 0, report.stderr
    assert "\x1b[" not in report.stdout  # plain text when piped
    assert report.stdout.splitlines()[0].startswith("module")
    assert "global magnitude(amount=0.9)" in report.stdout
    as_json = cli("report", "--model", MODEL, "--checkpoint", str(out), "--json")
    assert json.loads(as_json.stdout) == report_data(*_loaded(out))


def _loaded(path: Path) -> tuple[nn.Module, PruningHistory]:
    return prunefw.cli.report.load_model(MODEL, path)


def test_exit_codes_and_debug_as_subprocesses(tmp_path):
    usage = cli("prune", "--model", MODEL)
    assert usage.returncode == 2 and "usage: prunefw prune" in usage.stderr
    error = cli("report", "--model", "prunefw.examples:nope")
    assert error.returncode == 1
    assert error.stderr.strip().splitlines() == [
        "prunefw: error: --model: 'prunefw.examples' has no attribute 'nope'"
    ]
    debug = cli("report", "--model", "prunefw.examples:nope", "--debug")
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback") and "InvalidArgumentError" in debug.stderr


# --- the demo ----------------------------------------------------------------------------------


def test_demo_fast_with_the_console_script(tmp_path, capsys):
    """What CI runs: `prunefw demo --fast`, as the installed console script.

    (Its speed is not asserted here: timings on shared machines are noisy.)
    """
    script = Path(sys.executable).with_name("prunefw")
    assert script.is_file(), "the prunefw console script is not installed (pip install -e .)"
    result = subprocess.run(
        [str(script), "demo", "--fast"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "test accuracy after pruning a copy of the trained model" in text
    header = next(line for line in text.splitlines() if line.startswith("sparsity"))
    assert header.split() == ["sparsity", "global", "magnitude", "layerwise", "magnitude", "random"]
    assert [line.split()[0] for line in text.splitlines() if line[:3] in ("50%", "90%")] == [
        "50%",
        "90%",
    ]
    assert "deep copy and checkpoint round trip give the same outputs: True" in text
    assert "after make_permanent: 0 _orig/_mask keys" in text

    out = tmp_path / "prunefw-demo"  # the default --out
    summary = json.loads((out / "accuracy.json").read_text())
    assert summary["fast"] is True and summary["sparsities"] == [0.5, 0.9]
    assert summary["dense"] > 0.9
    accuracy = summary["accuracy"]
    assert accuracy["global magnitude"][0] > 0.85  # 50% costs little
    assert accuracy["global magnitude"][0] > accuracy["random"][0] + 0.2
    assert summary["recipe"]["fine_tuned_accuracy"] > 0.85
    gradual = summary["gradual"]
    assert (gradual["epochs"], gradual["steps"]) == (13, 13 * 23)  # past end_step = 276
    assert gradual["sparsity"] == round(0.9 * 16384) / 16384  # the hidden layers, exactly
    assert gradual["accuracy"] > accuracy["global magnitude"][1] + 0.2  # one-shot 90%
    assert "gradual: 90.00% of the hidden layers' weights pruned" in text
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    saved = out / "digits_mlp_pruned.pt"
    model = digits_mlp(seed=4)
    model.load_state_dict(torch.load(saved, weights_only=True))  # permanent: a plain state_dict
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.Linear))
    assert zeros / 17024 == pytest.approx(summary["recipe"]["sparsity"])
    assert main(["report", "--model", MODEL, "--checkpoint", str(saved)]) == 0
    assert "global magnitude(amount=0.9)" in capsys.readouterr().out


def test_demo_in_process_quiet(tmp_path, capsys, monkeypatch):
    tiny = prunefw.cli.demo.DemoSettings(1, 256, 1e-2, (0.5,), 1)
    monkeypatch.setattr(prunefw.cli.demo, "FAST", tiny)
    assert main(["demo", "--fast", "--quiet", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("test accuracy after pruning a copy")  # no status lines
    assert "trained 1 epochs" not in text and "50%" in text
    assert json.loads((tmp_path / "accuracy.json").read_text())["epochs"] == 1
    assert (tmp_path / "digits_mlp_pruned.pt").is_file()


def test_docs_cover_every_command_and_option():
    from prunefw.cli import SUBCOMMANDS, build_parser

    text = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert sorted(commands.choices) == sorted(m.__name__.rsplit(".", 1)[1] for m in SUBCOMMANDS)
    for name, sub in commands.choices.items():
        assert f"## `prunefw {name}`" in text, f"docs/cli.md has no section for {name}"
        for action in sub._actions:
            for option in action.option_strings:
                assert f"{option}" in text, f"docs/cli.md does not mention {name} {option}"
    for code in ("| 0 |", "| 1 |", "| 2 |"):
        assert code in text
