"""The criterion registry and the public ``criterion`` / ``available_criteria`` API."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import prunefw
from prunefw import (
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
    available_criteria,
    criterion,
    hookimpl,
)
from prunefw.criteria.ln_structured import LnStructuredCriterion
from prunefw.criteria.row_magnitude import RowMagnitudeCriterion
from prunefw.errors import (
    CriterionConflictError,
    InvalidArgumentError,
    InvalidTypeError,
    PluginError,
    PrunefwError,
    UnknownCriterionError,
)
from prunefw.plugin_manager import BUILTIN_PLUGIN_NAME, PluginInfo, PluginManager
from prunefw.registry import CRITERION_NAME_PATTERN, CriterionRegistry, RegisteredCriterion

BUILTINS = {
    "ln-structured": LnStructuredCriterion,
    "magnitude": MagnitudeCriterion,
    "percentile": PercentileCriterion,
    "random": RandomCriterion,
    "row-magnitude": RowMagnitudeCriterion,
}
ALPHA = PluginInfo("alpha", "prunefw-alpha", "1.0", "prunefw_alpha", "active")
BETA = PluginInfo("beta", "prunefw-beta", "2.0", "prunefw_beta", "active")


class KeepAll(PruningCriterion):
    name = "keep-all"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(scores, dtype=torch.bool)


class OtherKeepAll(KeepAll):
    pass


def entry(cls: type[PruningCriterion], plugin: PluginInfo = ALPHA, name: str | None = None):
    return RegisteredCriterion(cls.name if name is None else name, cls, plugin)


def sample_registry() -> CriterionRegistry:
    return CriterionRegistry(
        [
            entry(RandomCriterion, BETA),
            entry(KeepAll, ALPHA),
            entry(MagnitudeCriterion, BETA),
        ]
    )


# ------------------------------------------------------------------ the public API


def test_criterion_builds_the_builtin_with_its_config():
    crit = criterion("magnitude", min_threshold=0.1)
    assert type(crit) is MagnitudeCriterion
    reference = MagnitudeCriterion(min_threshold=0.1)
    assert crit.config() == reference.config() == {"min_threshold": 0.1}
    assert repr(crit) == repr(reference)
    assert crit is not criterion("magnitude", min_threshold=0.1)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("magnitude", {"amount": 0.3}, MagnitudeCriterion(amount=0.3)),
        ("magnitude", {"amount": 5}, MagnitudeCriterion(amount=5)),
        ("percentile", {"lower": 0.1, "upper": 0.9}, PercentileCriterion(lower=0.1, upper=0.9)),
        ("random", {"prune_ratio": 0.25, "seed": 3}, RandomCriterion(0.25, seed=3)),
    ],
)
def test_criterion_by_name_equals_direct_construction(name, kwargs, expected):
    crit = criterion(name, **kwargs)
    assert type(crit) is type(expected)
    assert crit.config() == expected.config()
    assert type(crit)(**crit.config()).config() == crit.config()


def test_criterion_result_prunes_like_the_direct_one():
    scores = torch.tensor([0.3, 0.05, 0.2, 0.09, 0.5])
    ones = torch.ones(5)
    got = criterion("magnitude", min_threshold=0.1).compute_mask(scores, ones)
    assert torch.equal(got, MagnitudeCriterion(min_threshold=0.1).compute_mask(scores, ones))
    assert got.tolist() == [True, False, True, False, True]


def test_unknown_criterion_lists_the_known_names():
    with pytest.raises(UnknownCriterionError, match="unknown criterion 'nope'") as info:
        criterion("nope")
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, PrunefwError)
    known = ", ".join(sorted(available_criteria()))
    assert f"known criteria: {known}" in str(err)
    for name in BUILTINS:
        assert name in str(err)


@pytest.mark.parametrize("name", [None, 3, ("magnitude",), ["magnitude"], "Magnitude", ""])
def test_criterion_with_a_non_name_is_unknown(name):
    with pytest.raises(UnknownCriterionError, match="known criteria: "):
        criterion(name)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("magnitude", {"min_threshold": -1.0}, InvalidArgumentError, "min_threshold=-1.0"),
        ("magnitude", {"min_threshold": 0.1, "amount": 0.5}, InvalidArgumentError, "exactly one"),
        ("magnitude", {}, InvalidArgumentError, "exactly one"),
        ("magnitude", {"min_threshold": "0.1"}, InvalidTypeError, "MagnitudeCriterion"),
        ("magnitude", {"amount": 1.5}, InvalidArgumentError, "amount"),
        ("random", {"prune_ratio": 2.0}, InvalidArgumentError, "prune_ratio"),
        ("random", {"prune_ratio": 0.5, "seed": 1.5}, InvalidTypeError, "seed"),
        ("magnitude", {"treshold": 0.1}, TypeError, "treshold"),
    ],
)
def test_bad_arguments_raise_the_criterions_own_error(name, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        criterion(name, **kwargs)
    assert not isinstance(info.value, UnknownCriterionError)
    with pytest.raises(error, match=match):
        BUILTINS[name](**kwargs)


def test_available_criteria_has_the_builtins_and_is_a_fresh_dict():
    found = available_criteria()
    assert list(found) == sorted(found)
    for name, cls in BUILTINS.items():
        assert found[name] is cls
    found.clear()
    assert set(BUILTINS) <= set(available_criteria())
    assert prunefw.available_criteria is available_criteria
    assert prunefw.criterion is criterion


# ------------------------------------------------------------------- the registry


def test_names_are_sorted_and_iteration_follows_them():
    registry = sample_registry()
    assert registry.names() == ["keep-all", "magnitude", "random"]
    assert list(registry) == registry.names()
    assert len(registry) == 3
    assert repr(registry) == "CriterionRegistry(['keep-all', 'magnitude', 'random'])"


def test_membership():
    registry = sample_registry()
    assert "keep-all" in registry
    assert "magnitude" in registry
    assert "percentile" not in registry
    assert "Magnitude" not in registry
    assert 3 not in registry
    assert None not in registry


def test_as_dict_is_sorted_and_a_copy():
    registry = sample_registry()
    mapping = registry.as_dict()
    assert mapping == {
        "keep-all": KeepAll,
        "magnitude": MagnitudeCriterion,
        "random": RandomCriterion,
    }
    assert list(mapping) == ["keep-all", "magnitude", "random"]
    mapping["evil"] = OtherKeepAll
    del mapping["magnitude"]
    assert registry.names() == ["keep-all", "magnitude", "random"]
    assert registry.as_dict() is not registry.as_dict()


def test_entry_get_and_create():
    registry = sample_registry()
    item = registry.entry("keep-all")
    assert item == RegisteredCriterion("keep-all", KeepAll, ALPHA)
    assert item.plugin.distribution == "prunefw-alpha"
    assert item.plugin.version == "1.0"
    assert registry.entry("magnitude").plugin.distribution == "prunefw-beta"
    assert registry.get("random") is RandomCriterion
    made = registry.create("magnitude", amount=0.5)
    assert type(made) is MagnitudeCriterion
    assert made.config() == {"amount": 0.5}
    assert isinstance(registry.create("keep-all"), KeepAll)


@pytest.mark.parametrize("method", ["entry", "get", "create"])
def test_unknown_name_lists_the_known_ones(method):
    registry = sample_registry()
    with pytest.raises(UnknownCriterionError) as info:
        getattr(registry, method)("percentile")
    assert "'percentile'" in str(info.value)
    assert "known criteria: keep-all, magnitude, random" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_unhashable_name_is_unknown_not_a_type_error():
    with pytest.raises(UnknownCriterionError, match=r"unknown criterion \['magnitude'\]"):
        sample_registry().get(["magnitude"])  # type: ignore[arg-type]


def test_empty_registry():
    registry = CriterionRegistry([])
    assert registry.names() == []
    assert len(registry) == 0
    assert registry.as_dict() == {}
    with pytest.raises(UnknownCriterionError, match="unknown criterion 'magnitude'"):
        registry.get("magnitude")


def test_entries_can_come_from_any_iterable():
    registry = CriterionRegistry(entry(cls) for cls in (KeepAll, MagnitudeCriterion))
    assert registry.names() == ["keep-all", "magnitude"]


def test_same_class_registered_twice_is_not_an_error_and_the_first_wins():
    registry = CriterionRegistry(
        [entry(KeepAll, ALPHA), entry(MagnitudeCriterion, BETA), entry(KeepAll, BETA)]
    )
    assert len(registry) == 2
    assert registry.entry("keep-all").plugin is ALPHA


def test_same_class_from_two_in_process_plugins_is_not_an_error():
    def plugin():
        class Plugin:
            @hookimpl
            def prunefw_register_criteria(self):
                return [KeepAll, MagnitudeCriterion]

        return Plugin()

    pm = PluginManager(autoload=False)
    pm.register(plugin(), name="first")
    pm.register(plugin(), name="second")
    registry = CriterionRegistry.from_plugin_manager(pm)
    assert registry.names() == [
        "keep-all",
        "ln-structured",
        "magnitude",
        "percentile",
        "random",
        "row-magnitude",
    ]
    assert registry.entry("keep-all").plugin.name in {"first", "second"}
    assert registry.entry("magnitude").plugin.name == BUILTIN_PLUGIN_NAME


def test_different_classes_under_one_name_conflict_naming_both_plugins():
    with pytest.raises(CriterionConflictError) as info:
        CriterionRegistry([entry(KeepAll, ALPHA), entry(OtherKeepAll, BETA, "keep-all")])
    err = info.value
    assert isinstance(err, PluginError)
    message = str(err)
    assert "'keep-all'" in message
    assert "entry point 'alpha' of distribution prunefw-alpha 1.0" in message
    assert "entry point 'beta' of distribution prunefw-beta 2.0" in message
    assert f"{__name__}.KeepAll" in message
    assert f"{__name__}.OtherKeepAll" in message


def test_registry_from_builtins_only():
    registry = CriterionRegistry.from_plugin_manager(PluginManager(autoload=False))
    assert registry.as_dict() == BUILTINS
    for name in BUILTINS:
        plugin = registry.entry(name).plugin
        assert plugin.name == BUILTIN_PLUGIN_NAME
        assert plugin.distribution == "prunefw"
        assert plugin.version == prunefw.__version__
        assert plugin.status == "active"


# --------------------------------------------------------------------- valid names

NAME_START = string.ascii_lowercase
NAME_REST = string.ascii_lowercase + string.digits + "_-."


def is_valid_name(name: str) -> bool:
    """The documented rule, written independently of the registry's regex."""
    return len(name) >= 1 and name[0] in NAME_START and all(char in NAME_REST for char in name[1:])


@given(
    st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(NAME_START),
        st.text(alphabet=NAME_REST, max_size=20),
    )
)
@settings(max_examples=60, deadline=None)
def test_every_documented_name_is_accepted(name):
    registry = CriterionRegistry([entry(KeepAll, name=name)])
    assert registry.names() == [name]
    assert CRITERION_NAME_PATTERN.fullmatch(name)


@given(st.text(alphabet=NAME_REST + string.ascii_uppercase + " !/\n\té0", max_size=12))
@settings(max_examples=150, deadline=None)
def test_names_are_accepted_exactly_when_valid(name):
    if is_valid_name(name):
        assert CriterionRegistry([entry(KeepAll, name=name)]).names() == [name]
    else:
        with pytest.raises(PluginError, match="invalid name") as info:
            CriterionRegistry([entry(KeepAll, name=name)])
        assert "entry point 'alpha' of distribution prunefw-alpha 1.0" in str(info.value)
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    "name", ["", "Bad Name!", "1abc", "-x", ".x", "_x", "Magnitude", "a b", "é", "a/b", "a\n"]
)
def test_invalid_names_are_refused(name):
    with pytest.raises(PluginError, match="invalid name"):
        CriterionRegistry([entry(KeepAll, name=name)])
