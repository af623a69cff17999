"""Plugin discovery and registration: real entry points, in-process plugins, env switches.

Entry points are discovered for real: every scenario under ``tests/data/entrypoints/`` is
a folder holding ``NAME-VERSION.dist-info/`` (``METADATA`` + ``entry_points.txt`` with a
``[prunefw]`` section) and the plugin module next to it. A test puts the folder it
wants on ``sys.path`` (``monkeypatch.syspath_prepend`` also invalidates import caches),
so ``importlib.metadata`` finds exactly the distributions of that scenario. Every test
builds its own :class:`PluginManager`; no global state is patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import prunefw
from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
    builtin,
    hookimpl,
)
from prunefw.errors import (
    CriterionConflictError,
    PluginError,
    PluginLoadError,
    PrunefwError,
    UnknownCriterionError,
)
from prunefw.plugin_manager import (
    BUILTIN_PLUGIN_NAME,
    DISABLE_AUTOLOAD_ENV,
    DISABLED_PLUGINS_ENV,
    PluginInfo,
    PluginManager,
)
from prunefw.registry import CriterionRegistry

DATA = Path(__file__).resolve().parent / "data" / "entrypoints"
ROOT = Path(__file__).resolve().parent.parent

#: What the built-in plugin registers (asserted explicitly in test_builtin_names).
BUILTIN_NAMES = sorted(cls.name for cls in builtin.prunefw_register_criteria())
EXAMPLE_MODULE = "prunefw_example_plugin"
EXAMPLE_CRITERION = "example-keep-largest"
EXAMPLE_INFO = PluginInfo(
    name="example",
    distribution="prunefw-example-plugin",
    version="1.2.3",
    entry_point=EXAMPLE_MODULE,
    status="active",
)


def _forget_data_modules() -> None:
    # Scenario folders go on sys.path as absolute paths under DATA, so a plain prefix
    # test finds every module imported from them (and is fast over torch's modules).
    prefix = str(DATA) + os.sep
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.startswith(prefix):
            del sys.modules[name]


@pytest.fixture(autouse=True)
def forget_plugin_modules() -> Iterator[None]:
    """Drop every module imported from tests/data/entrypoints, before and after each test."""
    _forget_data_modules()
    SEARCH_PATH.clear()
    yield
    SEARCH_PATH.clear()
    _forget_data_modules()


@pytest.fixture
def use_scenario(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make the distributions of the given scenario folders visible (prepends to sys.path)."""

    def use(*scenarios: str) -> None:
        for scenario in scenarios:
            path = DATA / scenario
            assert path.is_dir(), path
            monkeypatch.syspath_prepend(str(path))
            SEARCH_PATH.insert(0, str(path))

    return use


# Where hermetic plugin managers look for distributions: only the scenario folders a
# test asked for, never the plugins installed in the environment running the tests.
SEARCH_PATH: list[str] = []


def hermetic_pm(**kwargs: object) -> PluginManager:
    """A plugin manager that only sees the distributions of ``use_scenario`` folders."""
    kwargs.setdefault("path", list(SEARCH_PATH))
    return PluginManager(**kwargs)  # type: ignore[arg-type]


def build(**kwargs: object) -> tuple[PluginManager, CriterionRegistry]:
    """A fresh plugin manager (empty environment unless given) and its registry."""
    kwargs.setdefault("environ", {})
    pm = hermetic_pm(**kwargs)
    return pm, CriterionRegistry.from_plugin_manager(pm)


def infos_by_name(pm: PluginManager) -> dict[str, PluginInfo]:
    infos = pm.plugins()
    names = [info.name for info in infos]
    assert len(names) == len(set(names)), names
    return {info.name: info for info in infos}


def plugin_module(name: str, result: object) -> types.ModuleType:
    """An in-process plugin module whose hook returns ``result``."""
    module = types.ModuleType(name)

    @hookimpl
    def prunefw_register_criteria() -> object:
        return result

    module.prunefw_register_criteria = prunefw_register_criteria  # type: ignore[attr-defined]
    return module


class KeepAll(PruningCriterion):
    name = "keep-all"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(scores, dtype=torch.bool)


def two_layer_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def assert_torch_reparametrization(module: nn.Module) -> None:
    assert "weight_orig" in module._parameters
    assert "weight" not in module._parameters
    assert "weight_mask" in module._buffers
    hooks = list(module._forward_pre_hooks.values())
    assert any(isinstance(h, prune.BasePruningMethod) for h in hooks), hooks
    assert torch.equal(module.weight, module.weight_orig * module.weight_mask)


# --------------------------------------------------------------------------- good plugin


def test_good_plugin_is_discovered_beside_the_builtins(use_scenario):
    use_scenario("good")
    assert EXAMPLE_MODULE not in sys.modules
    _, registry = build()
    assert registry.names() == sorted([*BUILTIN_NAMES, EXAMPLE_CRITERION])
    assert EXAMPLE_MODULE in sys.modules
    cls = registry.get(EXAMPLE_CRITERION)
    assert cls is sys.modules[EXAMPLE_MODULE].ExampleKeepLargest
    assert issubclass(cls, PruningCriterion)
    assert registry.entry(EXAMPLE_CRITERION).plugin == EXAMPLE_INFO
    assert registry.entry("magnitude").cls is MagnitudeCriterion
    assert registry.entry("magnitude").plugin.name == BUILTIN_PLUGIN_NAME


def test_plugins_lists_builtin_and_entry_point_with_distribution_and_status(use_scenario):
    use_scenario("good")
    pm, _ = build()
    infos = pm.plugins()
    assert [info.name for info in infos] == [BUILTIN_PLUGIN_NAME, "example"]
    assert infos[0] == PluginInfo(
        BUILTIN_PLUGIN_NAME, "prunefw", prunefw.__version__, None, "active"
    )
    assert infos[1] == EXAMPLE_INFO
    assert infos[1].origin == "entry point 'example' of distribution prunefw-example-plugin 1.2.3"


def test_plugin_criterion_prunes_globally_with_torch_reparametrization(use_scenario):
    use_scenario("good")
    _, registry = build()
    crit = registry.create(EXAMPLE_CRITERION)
    assert isinstance(crit, registry.get(EXAMPLE_CRITERION))
    model = two_layer_model()
    before = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]

    GlobalPruningContext(model, [crit]).prune()

    assert prune.is_pruned(model)
    for layer in (model[0], model[2]):
        assert_torch_reparametrization(layer)
    weights = torch.cat([w.reshape(-1) for w in before]).abs()
    keep = torch.cat([model[0].weight_mask.reshape(-1), model[2].weight_mask.reshape(-1)])
    assert int((keep == 0).sum()) == weights.numel() // 2
    # Global: the pruned entries are the smallest of all layers together.
    assert weights[keep == 0].max() < weights[keep == 1].min()
    for layer, original in zip((model[0], model[2]), before, strict=True):
        assert torch.equal(layer.weight_orig.detach(), original)


def test_plugin_criterion_prunes_each_layer_with_torch_reparametrization(use_scenario):
    use_scenario("good")
    _, registry = build()
    model = two_layer_model()
    before = {id(m): m.weight.detach().abs().clone() for m in (model[0], model[2])}

    LayerPruningContext(
        {"0": registry.create(EXAMPLE_CRITERION), model[2]: registry.create(EXAMPLE_CRITERION)},
        model=model,
    ).prune()

    for layer in (model[0], model[2]):
        assert_torch_reparametrization(layer)
        scores, keep = before[id(layer)], layer.weight_mask
        assert int((keep == 0).sum()) == scores.numel() // 2
        assert scores[keep == 0].max() < scores[keep == 1].min()


def test_same_distribution_twice_on_sys_path_is_listed_once(use_scenario):
    use_scenario("good", "good")
    pm, registry = build()
    assert EXAMPLE_CRITERION in registry
    assert [info.name for info in pm.plugins()] == [BUILTIN_PLUGIN_NAME, "example"]


def test_two_managers_share_the_imported_plugin_but_not_their_state(use_scenario):
    use_scenario("good")
    _, first = build()
    pm, second = build(environ={DISABLED_PLUGINS_ENV: "example"})
    assert EXAMPLE_CRITERION in first
    assert EXAMPLE_CRITERION not in second
    assert not pm.pluggy_manager.has_plugin("example")


# ------------------------------------------------------------------- autoload switch


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_disable_autoload_env_does_not_import_the_plugin(use_scenario, value):
    use_scenario("good")
    pm, registry = build(environ={DISABLE_AUTOLOAD_ENV: value})
    assert pm.autoload is False
    assert registry.names() == BUILTIN_NAMES
    assert EXAMPLE_MODULE not in sys.modules
    infos = infos_by_name(pm)
    assert infos[BUILTIN_PLUGIN_NAME].status == "active"
    assert infos["example"] == PluginInfo(
        "example", "prunefw-example-plugin", "1.2.3", EXAMPLE_MODULE, "not loaded"
    )
    assert EXAMPLE_MODULE not in sys.modules  # listing does not import either


def test_builtins_still_work_with_autoload_disabled(use_scenario):
    use_scenario("good")
    _, registry = build(environ={DISABLE_AUTOLOAD_ENV: "1"})
    model = two_layer_model()
    GlobalPruningContext(model, [registry.create("magnitude", amount=0.5)]).prune()
    for layer in (model[0], model[2]):
        assert_torch_reparametrization(layer)
    total = model[0].weight.numel() + model[2].weight.numel()
    zeros = int((model[0].weight_mask == 0).sum() + (model[2].weight_mask == 0).sum())
    assert zeros == total // 2


@pytest.mark.parametrize("value", ["0", "", "no", "false", "off"])
def test_other_autoload_values_keep_autoload_on(use_scenario, value):
    use_scenario("good")
    pm, registry = build(environ={DISABLE_AUTOLOAD_ENV: value})
    assert pm.autoload is True
    assert EXAMPLE_CRITERION in registry


def test_autoload_argument_overrides_the_environment(use_scenario):
    use_scenario("good")
    _, off = build(autoload=False, environ={DISABLE_AUTOLOAD_ENV: "0"})
    assert EXAMPLE_CRITERION not in off
    assert EXAMPLE_MODULE not in sys.modules
    _, on = build(autoload=True, environ={DISABLE_AUTOLOAD_ENV: "1"})
    assert EXAMPLE_CRITERION in on


# ---------------------------------------------------------------------- blocking


@pytest.mark.parametrize("value", ["example,other", " other , example ", "example"])
def test_disabled_plugins_env_blocks_the_entry_point(use_scenario, value):
    use_scenario("good")
    pm, registry = build(environ={DISABLED_PLUGINS_ENV: value})
    assert EXAMPLE_MODULE not in sys.modules
    assert registry.names() == BUILTIN_NAMES
    assert pm.pluggy_manager.is_blocked("example")
    with pytest.raises(UnknownCriterionError, match="unknown criterion") as info:
        registry.create(EXAMPLE_CRITERION)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert repr(EXAMPLE_CRITERION) in message
    assert "magnitude, percentile, random" in message
    assert DISABLED_PLUGINS_ENV in message


def test_blocked_entry_point_is_listed_as_blocked(use_scenario):
    use_scenario("good")
    pm, _ = build(environ={DISABLED_PLUGINS_ENV: "example,other"})
    infos = infos_by_name(pm)
    assert infos["example"] == PluginInfo(
        "example", "prunefw-example-plugin", "1.2.3", EXAMPLE_MODULE, "blocked"
    )
    assert infos[BUILTIN_PLUGIN_NAME].status == "active"
    assert EXAMPLE_MODULE not in sys.modules


def test_disabled_argument_and_block_method_block_before_loading(use_scenario):
    use_scenario("good")
    _, registry = build(disabled=["example"], environ={DISABLED_PLUGINS_ENV: ""})
    assert EXAMPLE_CRITERION not in registry
    pm = hermetic_pm(environ={})
    pm.block("example")
    assert EXAMPLE_CRITERION not in CriterionRegistry.from_plugin_manager(pm)
    assert EXAMPLE_MODULE not in sys.modules


def test_block_after_loading_unregisters_the_plugin(use_scenario):
    use_scenario("good")
    pm, registry = build()
    assert EXAMPLE_CRITERION in registry
    pm.block("example")
    assert EXAMPLE_CRITERION not in CriterionRegistry.from_plugin_manager(pm)
    assert infos_by_name(pm)["example"].status == "blocked"


def test_blocking_an_unknown_name_is_harmless(use_scenario):
    use_scenario("good")
    _, registry = build(environ={DISABLED_PLUGINS_ENV: "no-such-plugin"})
    assert registry.names() == sorted([*BUILTIN_NAMES, EXAMPLE_CRITERION])


# --------------------------------------------------------------------- broken plugins


def test_broken_plugin_raises_plugin_load_error_naming_entry_point_and_distribution(
    use_scenario,
):
    use_scenario("broken")
    pm = hermetic_pm(environ={})
    with pytest.raises(PluginLoadError) as info:
        CriterionRegistry.from_plugin_manager(pm)
    err = info.value
    assert isinstance(err, PluginError)
    assert isinstance(err, ImportError)
    assert isinstance(err, PrunefwError)
    message = str(err)
    assert "'broken'" in message
    assert "prunefw-broken-plugin" in message
    assert "0.4.0" in message
    assert "prunefw_test_dependency_that_is_not_installed" in message
    assert f"{DISABLED_PLUGINS_ENV}=broken" in message
    assert isinstance(err.__cause__, ModuleNotFoundError)
    assert err.__cause__.name == "prunefw_test_dependency_that_is_not_installed"
    assert "prunefw_broken_plugin" not in sys.modules


def test_entry_point_naming_a_missing_attribute_is_a_load_error(use_scenario):
    use_scenario("missing_attr")
    with pytest.raises(PluginLoadError, match=r"prunefw-missing-attr 0\.6\.0") as info:
        build()
    assert "'missing-attr'" in str(info.value)
    assert "no_such_object" in str(info.value)
    assert isinstance(info.value.__cause__, AttributeError)


def test_blocking_the_broken_plugin_as_the_message_advises_works(use_scenario):
    use_scenario("broken", "good")
    _, registry = build(environ={DISABLED_PLUGINS_ENV: "broken"})
    assert registry.names() == sorted([*BUILTIN_NAMES, EXAMPLE_CRITERION])
    assert "prunefw_broken_plugin" not in sys.modules


def test_load_error_does_not_hide_good_plugins_once_fixed(use_scenario):
    use_scenario("broken", "good")
    pm = hermetic_pm(environ={})
    with pytest.raises(PluginLoadError):
        pm.load_entrypoints()
    pm.block("broken")
    registry = CriterionRegistry.from_plugin_manager(pm)
    assert EXAMPLE_CRITERION in registry


def test_conflicting_criteria_name_both_distributions(use_scenario):
    use_scenario("conflict")
    with pytest.raises(CriterionConflictError) as info:
        build()
    err = info.value
    assert isinstance(err, PluginError)
    message = str(err)
    assert "'shared-name'" in message
    assert "prunefw-conflict-a 1.0.0" in message
    assert "prunefw-conflict-b 2.0.0" in message
    assert "ConflictACriterion" in message
    assert "ConflictBCriterion" in message


def test_blocking_one_side_of_a_conflict_resolves_it(use_scenario):
    use_scenario("conflict")
    _, registry = build(environ={DISABLED_PLUGINS_ENV: "conflict-b"})
    entry = registry.entry("shared-name")
    assert entry.plugin.distribution == "prunefw-conflict-a"
    assert entry.cls.__name__ == "ConflictACriterion"


def test_same_class_from_two_distributions_is_not_a_conflict(use_scenario):
    use_scenario("same_class")
    pm, registry = build()
    entry = registry.entry("same-class")
    assert entry.cls is sys.modules["prunefw_same_class_a"].SharedCriterion
    assert entry.plugin.distribution == "prunefw-same-class-a"
    statuses = {info.name: info.status for info in pm.plugins()}
    assert statuses == {BUILTIN_PLUGIN_NAME: "active", "same-a": "active", "same-b": "active"}


def test_two_distributions_declaring_one_entry_point_name_are_both_named(use_scenario):
    use_scenario("ep_clash")
    with pytest.raises(PluginError, match="'clash'") as info:
        build()
    message = str(info.value)
    assert "prunefw-clash-one 1.0.0" in message
    assert "prunefw-clash-two 3.1.0" in message
    assert f"{DISABLED_PLUGINS_ENV}=clash" in message


def test_blocking_a_clashing_entry_point_as_the_message_advises_works(use_scenario):
    use_scenario("ep_clash")
    pm, registry = build(environ={DISABLED_PLUGINS_ENV: "clash"})
    assert registry.names() == BUILTIN_NAMES
    assert infos_by_name(pm)["clash"].status == "blocked"


@pytest.mark.parametrize(
    ("scenario", "origin", "details"),
    [
        (
            "bad_return",
            "entry point 'bad-return' of distribution prunefw-bad-return 0.1.0",
            ["NotACriterion", "not a subclass of prunefw.PruningCriterion"],
        ),
        (
            "invalid_name",
            "entry point 'invalid-name' of distribution prunefw-invalid-name 0.3.0",
            ["BadNameCriterion", "'Bad Name!'", "invalid name"],
        ),
        (
            "unknown_hook",
            "entry point 'typo' of distribution prunefw-typo-hook 0.2.0",
            ["prunefw_register_criterias", "Known hooks: prunefw_register_criteria"],
        ),
        (
            "raises",
            "entry point 'raising' of distribution prunefw-raising-plugin 0.5.0",
            ["RuntimeError", "criteria table is corrupt", "prunefw_register_criteria"],
        ),
    ],
)
def test_misbehaving_entry_point_is_a_plugin_error_naming_it(
    use_scenario, scenario, origin, details
):
    use_scenario(scenario)
    with pytest.raises(PluginError) as info:
        build()
    assert type(info.value) is PluginError
    message = str(info.value)
    assert origin in message
    for detail in details:
        assert detail in message


def test_raising_hook_chains_the_original_exception(use_scenario):
    use_scenario("raises")
    with pytest.raises(PluginError) as info:
        build()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "raising plugin: criteria table is corrupt"


def test_typo_hook_plugin_is_left_unregistered(use_scenario):
    use_scenario("unknown_hook")
    pm = hermetic_pm(environ={})
    with pytest.raises(PluginError, match="prunefw_register_criterias"):
        pm.load_entrypoints()
    assert not pm.pluggy_manager.has_plugin("typo")
    pm.block("typo")
    assert CriterionRegistry.from_plugin_manager(pm).names() == BUILTIN_NAMES


# ----------------------------------------------------------- in-process registration


def test_register_module_in_process():
    pm = hermetic_pm(autoload=False)
    module = plugin_module("inproc_plugin", [KeepAll])
    assert pm.register(module) == "inproc_plugin"
    registry = CriterionRegistry.from_plugin_manager(pm)
    assert registry.names() == sorted([*BUILTIN_NAMES, "keep-all"])
    assert registry.get("keep-all") is KeepAll
    info = registry.entry("keep-all").plugin
    assert info == PluginInfo("inproc_plugin", None, None, None, "active")
    assert info.origin == "plugin 'inproc_plugin'"
    assert [i.name for i in pm.plugins()] == [BUILTIN_PLUGIN_NAME, "inproc_plugin"]
    assert pm.pluggy_manager.get_plugin("inproc_plugin") is module


def test_register_object_with_hookimpl_method_under_a_name():
    class Plugin:
        @hookimpl
        def prunefw_register_criteria(self):
            return (KeepAll,)

    pm = hermetic_pm(autoload=False)
    assert pm.register(Plugin(), name="object-plugin") == "object-plugin"
    registry = CriterionRegistry.from_plugin_manager(pm)
    assert registry.entry("keep-all").plugin.name == "object-plugin"


def test_registering_a_blocked_name_fails():
    pm = hermetic_pm(autoload=False)
    pm.block("inproc_plugin")
    with pytest.raises(PluginError, match="'inproc_plugin' is blocked"):
        pm.register(plugin_module("inproc_plugin", [KeepAll]))
    env_pm = hermetic_pm(autoload=False, environ={DISABLED_PLUGINS_ENV: "mine"})
    with pytest.raises(PluginError, match="'mine' is blocked"):
        env_pm.register(plugin_module("whatever", [KeepAll]), name="mine")
    assert "keep-all" not in CriterionRegistry.from_plugin_manager(env_pm)


def test_registering_twice_fails():
    pm = hermetic_pm(autoload=False)
    module = plugin_module("twice", [KeepAll])
    pm.register(module)
    with pytest.raises(PluginError, match="could not be registered"):
        pm.register(module)
    with pytest.raises(PluginError, match="could not be registered"):
        pm.register(plugin_module("other", []), name=BUILTIN_PLUGIN_NAME)


def test_builtins_are_registered_through_the_same_hook():
    pm = hermetic_pm(autoload=False)
    assert pm.hook is pm.pluggy_manager.hook
    assert pm.pluggy_manager.get_plugin(BUILTIN_PLUGIN_NAME) is builtin
    expected = list(builtin.prunefw_register_criteria())
    assert expected[:3] == [MagnitudeCriterion, PercentileCriterion, RandomCriterion]
    assert pm.pluggy_manager.hook.prunefw_register_criteria() == [expected]
    pm.register(plugin_module("inproc_plugin", [KeepAll]))
    results = pm.pluggy_manager.hook.prunefw_register_criteria()
    assert sorted(results, key=len) == [[KeepAll], expected]
    assert pm.hook_names() == ["prunefw_register_criteria", "prunefw_register_linear_layers"]


def test_in_process_typo_hook_is_refused_and_not_registered():
    module = types.ModuleType("typo_inproc")

    @hookimpl
    def prunefw_register_criterias():
        return [KeepAll]

    module.prunefw_register_criterias = prunefw_register_criterias  # type: ignore[attr-defined]
    pm = hermetic_pm(autoload=False)
    with pytest.raises(PluginError, match="prunefw_register_criterias") as info:
        pm.register(module)
    assert "plugin 'typo_inproc'" in str(info.value)
    assert "Known hooks: prunefw_register_criteria" in str(info.value)
    assert not pm.pluggy_manager.has_plugin("typo_inproc")
    assert CriterionRegistry.from_plugin_manager(pm).names() == BUILTIN_NAMES


def test_hookimpl_with_arguments_not_in_the_spec_is_refused():
    module = types.ModuleType("bad_signature")

    @hookimpl
    def prunefw_register_criteria(config):
        return [KeepAll]

    module.prunefw_register_criteria = prunefw_register_criteria  # type: ignore[attr-defined]
    pm = hermetic_pm(autoload=False)
    with pytest.raises(PluginError, match="plugin 'bad_signature' could not be registered"):
        pm.register(module)
    assert CriterionRegistry.from_plugin_manager(pm).names() == BUILTIN_NAMES


def test_in_process_raising_hook_is_a_plugin_error_naming_it():
    module = types.ModuleType("raising_inproc")

    @hookimpl
    def prunefw_register_criteria():
        raise KeyError("boom")

    module.prunefw_register_criteria = prunefw_register_criteria  # type: ignore[attr-defined]
    pm = hermetic_pm(autoload=False)
    pm.register(module)
    with pytest.raises(PluginError, match="plugin 'raising_inproc' raised in") as info:
        CriterionRegistry.from_plugin_manager(pm)
    assert isinstance(info.value.__cause__, KeyError)


class NamelessCriterion(PruningCriterion):
    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(scores, dtype=torch.bool)


class IntNamedCriterion(NamelessCriterion):
    name = 3  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("result", "detail"),
    [
        (None, "must return a sequence"),
        ("magnitude", "must return a sequence"),
        (42, "must return a sequence"),
        ([object()], "not a subclass of prunefw.PruningCriterion"),
        ([int], "not a subclass of prunefw.PruningCriterion"),
        ([MagnitudeCriterion(amount=0.5)], "not a subclass of prunefw.PruningCriterion"),
        ([NamelessCriterion], "NamelessCriterion has no string 'name'"),
        ([IntNamedCriterion], "IntNamedCriterion has no string 'name'"),
    ],
)
def test_bad_hook_results_are_plugin_errors_naming_the_plugin(result, detail):
    pm = hermetic_pm(autoload=False)
    pm.register(plugin_module("bad_result", result))
    with pytest.raises(PluginError) as info:
        CriterionRegistry.from_plugin_manager(pm)
    assert "plugin 'bad_result'" in str(info.value)
    assert detail in str(info.value)


def test_empty_result_is_allowed():
    pm = hermetic_pm(autoload=False)
    pm.register(plugin_module("empty", []))
    assert CriterionRegistry.from_plugin_manager(pm).names() == BUILTIN_NAMES


def test_in_process_plugin_shadowing_a_builtin_is_a_conflict():
    class OtherMagnitude(KeepAll):
        name = "magnitude"

    pm = hermetic_pm(autoload=False)
    pm.register(plugin_module("shadow", [OtherMagnitude]))
    with pytest.raises(CriterionConflictError) as info:
        CriterionRegistry.from_plugin_manager(pm)
    message = str(info.value)
    assert f"plugin {BUILTIN_PLUGIN_NAME!r} of distribution prunefw" in message
    assert "plugin 'shadow'" in message
    assert "OtherMagnitude" in message


def test_same_builtin_class_from_another_plugin_is_not_a_conflict():
    pm = hermetic_pm(autoload=False)
    pm.register(plugin_module("reexport", [MagnitudeCriterion, KeepAll]))
    registry = CriterionRegistry.from_plugin_manager(pm)
    assert registry.entry("magnitude").plugin.name == BUILTIN_PLUGIN_NAME
    assert registry.entry("keep-all").plugin.name == "reexport"


# ----------------------------------------------------------- import-time behaviour


def run_python(code: str, scenario: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter that sees ``scenario``; return its JSON output."""
    environ = {
        k: v for k, v in os.environ.items() if k not in (DISABLE_AUTOLOAD_ENV, DISABLED_PLUGINS_ENV)
    }
    pythonpath = [str(DATA / scenario), str(ROOT)]
    if environ.get("PYTHONPATH"):
        pythonpath.append(environ["PYTHONPATH"])
    environ["PYTHONPATH"] = os.pathsep.join(pythonpath)
    environ.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_prunefw_does_no_discovery():
    out = run_python(
        """
        import importlib.metadata, json, sys
        import torch  # torch looks up its own entry points at import; not our business

        calls = []
        original = importlib.metadata.Distribution.discover.__func__

        def discover(cls, **kwargs):
            calls.append(kwargs)
            return original(cls, **kwargs)

        importlib.metadata.Distribution.discover = classmethod(discover)
        import prunefw

        after_import = {
            "imported": "prunefw_example_plugin" in sys.modules,
            "discovered": len(calls),
        }
        names = sorted(prunefw.available_criteria())
        print(json.dumps({
            "after_import": after_import,
            "imported": "prunefw_example_plugin" in sys.modules,
            "discovered": len(calls),
            "names": names,
        }))
        """,
        "good",
    )
    assert out["after_import"] == {"imported": False, "discovered": 0}
    assert out["imported"] is True
    assert out["discovered"] > 0
    # (plugins installed in the environment, e.g. prunefw-nm in CI, may be listed too)
    assert set(out["names"]) >= {*BUILTIN_NAMES, EXAMPLE_CRITERION}


@pytest.mark.parametrize(
    "env",
    [{DISABLED_PLUGINS_ENV: "example"}, {DISABLE_AUTOLOAD_ENV: "1"}],
    ids=["disabled-plugins", "disable-autoload"],
)
def test_env_switches_hide_the_plugin_from_available_criteria(env):
    out = run_python(
        """
        import json, sys
        import prunefw
        names = sorted(prunefw.available_criteria())
        print(json.dumps({"names": names, "imported": "prunefw_example_plugin" in sys.modules}))
        """,
        "good",
        **env,
    )
    assert out["imported"] is False
    assert EXAMPLE_CRITERION not in out["names"]
    assert set(out["names"]) >= set(BUILTIN_NAMES)
    if DISABLE_AUTOLOAD_ENV in env:
        assert out["names"] == BUILTIN_NAMES


def test_builtin_names():
    assert BUILTIN_NAMES == [
        "ln-structured",
        "magnitude",
        "percentile",
        "random",
        "row-magnitude",
    ]


def test_sys_exit_at_plugin_import_is_a_plugin_load_error(use_scenario):
    use_scenario("exits")
    with pytest.raises(PluginLoadError, match=r"'exits' of distribution prunefw-exiting") as info:
        build()
    assert isinstance(info.value.__cause__, SystemExit)
    assert f"{DISABLED_PLUGINS_ENV}=exits" in str(info.value)


def test_the_builtin_plugin_cannot_be_disabled():
    with pytest.raises(PluginError, match=rf"{DISABLED_PLUGINS_ENV} names 'prunefw\.builtin'"):
        PluginManager(environ={DISABLED_PLUGINS_ENV: "good, prunefw.builtin"})
