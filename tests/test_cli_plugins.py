"""``prunefw plugins``: every plugin with distribution, version, criteria and status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prunefw.cli import main
from prunefw.cli.plugins import collect
from prunefw.plugin_manager import PluginManager

GOOD = Path(__file__).resolve().parent / "data" / "entrypoints" / "good"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GOOD), *sys.path]), **env}
    return subprocess.run(
        [sys.executable, "-m", "prunefw", "plugins", *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip


def by_name(data: dict) -> dict[str, dict]:
    return {plugin["name"]: plugin for plugin in data["plugins"]}


def test_json_lists_builtin_and_entry_point_plugins():
    result = run("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["autoload"] is True
    plugins = by_name(data)
    builtin = plugins["prunefw.builtin"]["criteria"]
    assert builtin == ["ln-structured", "magnitude", "percentile", "random", "row-magnitude"]
    assert plugins["prunefw.builtin"]["distribution"] == "prunefw"
    example = plugins["example"]
    assert example == {
        "name": "example",
        "distribution": "prunefw-example-plugin",
        "version": "1.2.3",
        "entry_point": "prunefw_example_plugin",
        "status": "active",
        "criteria": ["example-keep-largest"],
    }


def test_blocked_and_not_loaded_are_shown_without_importing():
    blocked = by_name(json.loads(run("--json", PRUNEFW_DISABLED_PLUGINS="example").stdout))
    assert blocked["example"]["status"] == "blocked"
    assert blocked["example"]["criteria"] == []
    result = run("--json", PRUNEFW_DISABLE_PLUGIN_AUTOLOAD="1")
    data = json.loads(result.stdout)
    assert data["autoload"] is False
    assert by_name(data)["example"]["status"] == "not loaded"
    assert by_name(data)["prunefw.builtin"]["status"] == "active"


def test_table_output_names_distribution_status_and_criteria():
    result = run()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["plugin", "distribution", "status", "criteria"]
    row = next(line for line in lines if line.startswith("example "))
    assert "prunefw-example-plugin 1.2.3" in row
    assert "active" in row
    assert "example-keep-largest" in row
    assert "entry-point autoload: enabled" in result.stdout


def test_broken_plugin_is_one_line_error_exit_1():
    broken = GOOD.parent / "broken"
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-m", "prunefw", "plugins"],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("prunefw: error: could not import prunefw plugin entry point")


def test_collect_in_process_with_a_hermetic_manager(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(GOOD))
    try:
        data = collect(PluginManager(path=[str(GOOD)], environ={}))
    finally:
        sys.modules.pop("prunefw_example_plugin", None)
    assert [p["name"] for p in data["plugins"]] == ["prunefw.builtin", "example"]
    assert main(["plugins", "--json"]) == 0
    assert "prunefw.builtin" in json.loads(capsys.readouterr().out)["plugins"][0]["name"]


def run_with(scenario: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = GOOD.parent / scenario
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), *sys.path]), **env}
    return subprocess.run(
        [sys.executable, "-m", "prunefw", *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip


def test_plugin_calling_sys_exit_at_import_is_an_attributed_error():
    result = run_with("exits", "plugins")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "entry point 'exits' of distribution prunefw-exiting-plugin 0.9.0" in lines[0]
    assert "SystemExit" in lines[0]


def test_listing_with_autoload_disabled_survives_an_entry_point_clash():
    result = run_with("ep_clash", "plugins", "--json", PRUNEFW_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    clash = [p for p in data["plugins"] if p["name"] == "clash"]
    assert {p["distribution"] for p in clash} == {"prunefw-clash-one", "prunefw-clash-two"}
    assert {p["status"] for p in clash} == {"not loaded"}


def test_disabling_the_builtin_plugin_names_the_variable_and_the_fix():
    result = run_with("good", "plugins", PRUNEFW_DISABLED_PLUGINS="prunefw.builtin")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("prunefw: error: PRUNEFW_DISABLED_PLUGINS names 'prunefw.builtin'")
    assert "remove it from PRUNEFW_DISABLED_PLUGINS" in message
