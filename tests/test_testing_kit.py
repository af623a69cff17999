"""The contract test kit (prunefw.testing): built-ins pass it, broken criteria fail it.

Every broken criterion below is registered in-process (``plugin=``), so exactly the
checks it is meant to break fail; the message of each failure is checked too.
"""

from __future__ import annotations

import importlib.metadata
import random
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunefw import (
    MagnitudeCriterion,
    PercentileCriterion,
    PruningCriterion,
    RandomCriterion,
    hookimpl,
)
from prunefw.criteria.base import RankSelection
from prunefw.testing import (
    CONTRACT_CHECKS,
    ContractFailure,
    CriterionContract,
    ModelSnapshot,
    check_criterion,
    context_checks,
    default_calibration_data,
    default_model,
    subject,
)

DATA = Path(__file__).resolve().parent / "data" / "entrypoints"


def plugin_for(*classes: type[PruningCriterion]) -> types.SimpleNamespace:
    """An in-process plugin object registering ``classes``."""

    @hookimpl
    def prunefw_register_criteria() -> list[type[PruningCriterion]]:
        return list(classes)

    return types.SimpleNamespace(prunefw_register_criteria=prunefw_register_criteria)


def failures_of(criterion_class: type[PruningCriterion], make: Callable[[], Any], **kwargs):
    """Run check_criterion, which must fail; return the ContractFailure."""
    kwargs.setdefault("plugin", plugin_for(criterion_class))
    with pytest.raises(ContractFailure) as info:
        check_criterion(criterion_class, make, **kwargs)
    failure = info.value
    assert set(failure.failures) | set(failure.passed) == set(CONTRACT_CHECKS)
    for name, reason in failure.failures.items():
        assert f"- {name}: {reason}" in str(failure)
    return failure


# -- criteria for the tests --------------------------------------------------------------


class RowNormCriterion(PruningCriterion):
    """Structured: prune the output channels (dim 0) of smallest L2 norm."""

    name = "kit-test-row-norm"
    PRUNING_TYPE = "structured"
    dim = 0

    def __init__(self, amount: float = 0.25) -> None:
        self.amount = amount

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        rows = scores.shape[0]
        norms = scores.reshape(rows, -1).norm(dim=1)
        keep = torch.ones(rows, dtype=torch.bool)
        k = round(self.amount * rows)
        if k:
            keep[torch.argsort(norms, stable=True)[:k]] = False
        shape = (rows,) + (1,) * (scores.dim() - 1)
        return keep.reshape(shape).expand_as(scores) & (default_mask != 0)


class ActivationWeighted(PruningCriterion):
    """Calibrated: prune the half with the smallest |w| * ||x_j|| (a tiny Wanda)."""

    name = "kit-test-activation"
    requires_calibration = True

    def __init__(self) -> None:
        self.norms: dict[tuple[int, str], torch.Tensor] = {}
        self.observed = 0

    def reset_calibration(self) -> None:
        self.norms = {}

    def observe(self, module: nn.Module, name: str, inputs: tuple[Any, ...], output: Any) -> None:
        self.observed += 1
        key = (id(module), name)
        self.norms[key] = self.norms.get(key, 0) + (inputs[0].detach() ** 2).sum(dim=0)

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
        return getattr(module, name).detach().abs() * self.norms[(id(module), name)].sqrt()

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[torch.argsort(scores, stable=True)[: scores.numel() // 2]] = False
        return keep


class TooLong(PruningCriterion):
    """Broken: a mask one entry longer than the scores."""

    name = "kit-test-too-long"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.ones(scores.numel() + 1, dtype=torch.bool)


class KeepsEverything(PruningCriterion):
    """Broken: sees the whole tensor ("global") and would un-prune it: returns all-True."""

    name = "kit-test-keeps-everything"
    PRUNING_TYPE = "global"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(scores, dtype=torch.bool)


class UnstructuredKeepAll(PruningCriterion):
    """Prunes nothing; as an unstructured criterion it only sees unpruned entries."""

    name = "kit-test-keep-all"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(scores, dtype=torch.bool)


class CoinFlip(PruningCriterion):
    """Broken: draws from torch's global RNG, not from a seeded generator."""

    name = "kit-test-coin-flip"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.rand(scores.shape) >= 0.3


class PythonCoinFlip(PruningCriterion):
    """Broken: draws from Python's global ``random``."""

    name = "kit-test-python-coin-flip"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return torch.tensor([random.random() >= 0.3 for _ in range(scores.numel())])


class NeverRegistered(PruningCriterion):
    """Fine, except that no plugin registers it."""

    name = "kit-test-never-registered"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return scores >= scores.median()


class ScoresInPlace(PruningCriterion):
    """Broken: modifies the scores it is given."""

    name = "kit-test-scores-in-place"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        scores.mul_(2.0)
        return scores >= scores.median()


class WeightsInPlace(PruningCriterion):
    """Broken: ``abs_()`` on a detached view changes the model's weights."""

    name = "kit-test-weights-in-place"

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
        return getattr(module, name).detach().abs_()

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return scores >= scores.median()


class ScoresAsMask(PruningCriterion):
    """Broken: returns the scores themselves, not a 0/1 mask."""

    name = "kit-test-scores-as-mask"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return scores


class StructuredByEntry(RowNormCriterion):
    """Broken: claims "structured" but prunes single entries."""

    name = "kit-test-structured-by-entry"

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return (scores >= scores.median()) & (default_mask != 0)


def conv_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)
    )


# -- the built-ins pass, through the class --------------------------------------------------


class TestMagnitudeContract(CriterionContract):
    criterion_class = MagnitudeCriterion

    def make_criterion(self) -> MagnitudeCriterion:
        return MagnitudeCriterion(amount=0.3)


class TestPercentileContract(CriterionContract):
    criterion_class = PercentileCriterion

    def make_criterion(self) -> PercentileCriterion:
        return PercentileCriterion(0.1, 0.9)


class TestRandomContract(CriterionContract):
    criterion_class = RandomCriterion

    def make_criterion(self) -> RandomCriterion:
        return RandomCriterion(0.3, seed=0)


class TestStructuredContract(CriterionContract):
    """A structured criterion from an in-process plugin, on a model with a convolution."""

    criterion_class = RowNormCriterion
    plugin = plugin_for(RowNormCriterion)

    def make_criterion(self) -> RowNormCriterion:
        return RowNormCriterion(0.25)

    def make_model(self) -> nn.Module:
        return conv_model()


class TestCalibratedContract(CriterionContract):
    """requires_calibration: the kit's default batches for the default model."""

    criterion_class = ActivationWeighted
    plugin = plugin_for(ActivationWeighted)

    def make_criterion(self) -> ActivationWeighted:
        return ActivationWeighted()


def test_every_check_is_a_test_method():
    methods = sorted(name for name in dir(CriterionContract) if name.startswith("test_"))
    assert methods == sorted(f"test_contract_{name}" for name in CONTRACT_CHECKS)


def test_the_base_class_is_not_collected_but_subclasses_are():
    assert CriterionContract.__test__ is False
    assert TestMagnitudeContract.__test__ is True

    class TestAbstract(CriterionContract):
        __test__ = False

    class TestConcrete(TestAbstract):
        criterion_class = MagnitudeCriterion

    assert TestAbstract.__test__ is False
    assert TestConcrete.__test__ is True


def test_contract_methods_raise_contract_failure_for_their_check():
    class TestBroken(CriterionContract):
        criterion_class = KeepsEverything
        plugin = plugin_for(KeepsEverything)

        def make_criterion(self) -> KeepsEverything:
            return KeepsEverything()

    TestBroken().test_contract_layer_context()
    with pytest.raises(ContractFailure, match="check 'never_unprunes'") as info:
        TestBroken().test_contract_never_unprunes()
    assert list(info.value.failures) == ["never_unprunes"]
    assert isinstance(info.value, AssertionError)


def test_missing_criterion_class_or_make_criterion_is_explained():
    class TestNoClass(CriterionContract):
        pass

    with pytest.raises(TypeError, match="must set criterion_class"):
        TestNoClass().test_contract_layer_context()

    class TestNoFactory(CriterionContract):
        criterion_class = MagnitudeCriterion

    with pytest.raises(ContractFailure, match="must override make_criterion"):
        TestNoFactory().test_contract_layer_context()


# -- the built-ins pass, through the function -----------------------------------------------


@pytest.mark.parametrize(
    ("criterion_class", "make"),
    [
        (MagnitudeCriterion, lambda: MagnitudeCriterion(amount=0.3)),
        (PercentileCriterion, lambda: PercentileCriterion(0.1, 0.9)),
        (RandomCriterion, lambda: RandomCriterion(0.3, seed=0)),
        (MagnitudeCriterion, lambda: MagnitudeCriterion(min_threshold=0.1)),
    ],
    ids=["magnitude", "percentile", "random", "magnitude-threshold"],
)
def test_builtins_pass_check_criterion(criterion_class, make):
    assert check_criterion(criterion_class, make) == list(CONTRACT_CHECKS)


def test_structured_criterion_passes_and_is_refused_globally():
    passed = check_criterion(
        RowNormCriterion,
        RowNormCriterion,
        make_model=conv_model,
        plugin=plugin_for(RowNormCriterion),
    )
    assert passed == list(CONTRACT_CHECKS)


def test_global_check_requires_pruning_type_error_for_structured(monkeypatch):
    class Permissive:
        def __init__(self, model: nn.Module, criteria: Any, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(context_checks, "GlobalPruningContext", Permissive)
    failure = failures_of(RowNormCriterion, RowNormCriterion)
    assert list(failure.failures) == ["global_context"]
    reason = failure.failures["global_context"]
    assert "must refuse a 'structured' criterion with prunefw.errors.PruningTypeError" in reason
    assert "it accepted RowNormCriterion()" in reason


def test_calibrated_criterion_gets_the_default_batches():
    created: list[ActivationWeighted] = []

    def make() -> ActivationWeighted:
        created.append(ActivationWeighted())
        return created[-1]

    assert check_criterion(ActivationWeighted, make, plugin=plugin_for(ActivationWeighted))
    # One calibration: 4 batches, each seen by the 2 Linear layers.
    assert any(crit.observed == 8 for crit in created)


def test_calibration_batches_or_function():
    batches = default_calibration_data(default_model())
    plugin = plugin_for(ActivationWeighted)
    assert check_criterion(
        ActivationWeighted, ActivationWeighted, calibration_data=batches[:1], plugin=plugin
    )
    calls = []

    def data(model: nn.Module) -> list[torch.Tensor]:
        calls.append(model)
        return batches

    check_criterion(ActivationWeighted, ActivationWeighted, calibration_data=data, plugin=plugin)
    assert calls and all(isinstance(model, nn.Sequential) for model in calls)


def test_calibrated_criterion_without_batches_fails_with_a_reason():
    class TestNoBatches(CriterionContract):
        criterion_class = ActivationWeighted
        plugin = plugin_for(ActivationWeighted)

        def make_criterion(self) -> ActivationWeighted:
            return ActivationWeighted()

        def calibration_data(self, model: nn.Module) -> None:
            return None

    TestNoBatches().test_contract_registered()
    with pytest.raises(ContractFailure, match=r"requires_calibration is true.*returned None"):
        TestNoBatches().test_contract_layer_context()


def test_default_calibration_data_and_model():
    model = default_model()
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (model[0].in_features, model[0].out_features, model[2].out_features) == (16, 32, 8)
    first, second = default_calibration_data(model), default_calibration_data(default_model())
    assert len(first) == 4
    assert all(batch.shape == (8, 16) for batch in first)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert CriterionContract.calibration_data(TestMagnitudeContract(), model) is None
    with pytest.raises(ValueError, match="needs a Linear layer"):
        default_calibration_data(nn.Sequential(nn.Conv2d(1, 1, 1)))


def test_an_entry_point_plugin_passes_without_plugin_argument(monkeypatch):
    monkeypatch.syspath_prepend(str(DATA / "good"))
    monkeypatch.delitem(sys.modules, "prunefw_example_plugin", raising=False)
    module = importlib.import_module("prunefw_example_plugin")
    try:
        cls = module.ExampleKeepLargest
        assert check_criterion(cls, cls) == list(CONTRACT_CHECKS)
    finally:
        sys.modules.pop("prunefw_example_plugin", None)


def test_the_kit_leaves_the_global_rngs_alone():
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    with pytest.raises(ContractFailure):
        check_criterion(CoinFlip, CoinFlip, plugin=plugin_for(CoinFlip))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


# -- broken criteria fail, with reasons ------------------------------------------------------


def test_wrong_shaped_mask():
    failure = failures_of(TooLong, TooLong)
    assert {"mask_shape_and_values", "layer_context", "global_context"} <= set(failure.failures)
    assert "registered" in failure.passed
    reason = failure.failures["mask_shape_and_values"]
    assert "must return a bool or 0/1 torch.Tensor of the scores' shape (512,)" in reason
    assert "it returned a mask of shape (513,)" in reason
    assert "InvalidMaskError" in failure.failures["layer_context"]


def test_mask_with_other_values():
    failure = failures_of(ScoresAsMask, ScoresAsMask)
    reason = failure.failures["mask_shape_and_values"]
    assert "it returned a torch.float32 mask with 512 entries that are neither 0 nor 1" in reason


def test_criterion_that_would_unprune():
    failure = failures_of(KeepsEverything, KeepsEverything)
    assert list(failure.failures) == ["never_unprunes"]
    reason = failure.failures["never_unprunes"]
    assert "must never keep an entry that default_mask marks as pruned" in reason
    assert "it returned keep for" in reason


def test_unstructured_criterion_cannot_unprune():
    # It only ever sees the unpruned entries, so "keep everything" just prunes nothing.
    plugin = plugin_for(UnstructuredKeepAll)
    assert check_criterion(UnstructuredKeepAll, UnstructuredKeepAll, plugin=plugin)


@pytest.mark.parametrize(
    ("criterion_class", "make"),
    [
        (CoinFlip, CoinFlip),
        (PythonCoinFlip, PythonCoinFlip),
        (RandomCriterion, lambda: RandomCriterion(0.3)),  # no seed
    ],
    ids=["torch-global-rng", "python-random", "random-without-seed"],
)
def test_nondeterministic_criterion(criterion_class, make):
    plugin = None if criterion_class is RandomCriterion else plugin_for(criterion_class)
    failure = failures_of(criterion_class, make, plugin=plugin)
    assert list(failure.failures) == ["deterministic"]
    reason = failure.failures["deterministic"]
    assert "must prune two equal models identically" in reason
    assert "in the layer context, the masks of 0.weight" in reason


def test_never_registered_criterion():
    failure = failures_of(NeverRegistered, NeverRegistered, plugin=None)
    assert list(failure.failures) == ["registered"]
    reason = failure.failures["registered"]
    assert "must be registered through the prunefw_register_criteria hook" in reason
    assert "no plugin registers 'kit-test-never-registered'" in reason
    assert "magnitude" in reason


def test_plugin_that_registers_another_class():
    failure = failures_of(NeverRegistered, NeverRegistered, plugin=plugin_for(CoinFlip))
    assert list(failure.failures) == ["registered"]
    assert "does the plugin's prunefw_register_criteria return the class?" in str(failure)


def test_name_taken_by_another_plugin():
    class Impostor(NeverRegistered):
        name = "magnitude"

    failure = failures_of(Impostor, Impostor)
    reason = failure.failures["registered"]
    assert "its unique name 'magnitude'" in reason
    assert "CriterionConflictError" in reason


def test_invalid_name():
    class BadName(NeverRegistered):
        name = "Bad Name"

    failure = failures_of(BadName, BadName)
    assert list(failure.failures) == ["registered"]
    assert "must be a valid criterion name" in failure.failures["registered"]


def test_criterion_that_modifies_its_scores():
    failure = failures_of(ScoresInPlace, ScoresInPlace)
    assert list(failure.failures) == ["mask_shape_and_values"]
    reason = failure.failures["mask_shape_and_values"]
    assert "must not modify its arguments in place" in reason
    assert "it changed scores for 0.weight" in reason


def test_criterion_that_modifies_the_weights():
    failure = failures_of(WeightsInPlace, WeightsInPlace)
    assert {"layer_context", "failure_leaves_model_untouched"} <= set(failure.failures)
    assert "must not change the weights" in failure.failures["layer_context"]
    reason = failure.failures["failure_leaves_model_untouched"]
    assert "leave the model bit-identical" in reason
    assert "parameter 'weight' changed" in reason


def test_structured_criterion_that_prunes_entries():
    failure = failures_of(StructuredByEntry, StructuredByEntry)
    reason = failure.failures["mask_shape_and_values"]
    assert "must prune whole channels along dim=0" in reason


def test_broken_make_model():
    failure = failures_of(
        MagnitudeCriterion,
        lambda: MagnitudeCriterion(amount=0.3),
        plugin=None,
        make_model=lambda: "model",
    )
    assert "registered" in failure.passed
    assert "make_model() must return an nn.Module" in failure.failures["layer_context"]


def test_failed_rollback_is_detected(monkeypatch):
    # A context whose prune() forgets to roll back: the kit must notice.
    from prunefw.contexts import LayerPruningContext

    class Leaky(LayerPruningContext):
        def prune(self, calibration_data: Any = None, *, forward: Any = None) -> None:
            self.targets[0].module.leaked = torch.zeros(1)
            super().prune(calibration_data, forward=forward)

    monkeypatch.setattr(subject, "LayerPruningContext", Leaky)
    failure = failures_of(RowNormCriterion, RowNormCriterion)
    reason = failure.failures["failure_leaves_model_untouched"]
    assert "the model changed" in reason
    assert "__dict__ keys changed" in reason


def test_rank_selection_that_disagrees_with_compute_mask():
    class NoStreaming(MagnitudeCriterion):
        name = "kit-test-no-streaming"

        def rank_selection(self, n: int) -> RankSelection:
            return RankSelection(smallest=0)

    failure = failures_of(NoStreaming, lambda: NoStreaming(amount=0.3))
    assert list(failure.failures) == ["global_context"]
    assert "rank_selection(n) must describe the same decision" in str(failure)


def test_broken_make_permanent_is_detected(monkeypatch):
    monkeypatch.setattr(context_checks, "make_permanent", lambda model: model)
    failure = failures_of(MagnitudeCriterion, lambda: MagnitudeCriterion(amount=0.3), plugin=None)
    assert list(failure.failures) == ["remove_and_make_permanent"]
    reason = failure.failures["remove_and_make_permanent"]
    assert "after prunefw.make_permanent after pruning with LayerPruningContext" in reason
    assert "must be a plain Parameter again" in reason


def test_a_shared_instance_is_given_back_unpatched():
    shared = MagnitudeCriterion(amount=0.3)
    before = dict(vars(shared))
    assert check_criterion(MagnitudeCriterion, lambda: shared) == list(CONTRACT_CHECKS)
    assert vars(shared) == before


def test_a_shared_seeded_random_instance_is_not_deterministic():
    shared = RandomCriterion(0.3, seed=0)
    failure = failures_of(RandomCriterion, lambda: shared, plugin=None)
    assert list(failure.failures) == ["deterministic"]
    assert "must return a new, seeded instance each time" in failure.failures["deterministic"]


# -- the snapshot -------------------------------------------------------------------------


@pytest.fixture
def layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def test_snapshot_of_an_unchanged_model_has_no_diff(layer):
    assert ModelSnapshot.take(layer).diff(ModelSnapshot.take(layer)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.weight.data.add_(0.0).neg_(), "parameter 'weight' changed"),
        (lambda m: m.register_buffer("extra", torch.zeros(1)), "buffer 'extra': new"),
        (lambda m: m.register_forward_pre_hook(lambda *a: None), "_forward_pre_hooks changed"),
        (lambda m: m.register_forward_hook(lambda *a: None), "_forward_hooks changed"),
        (lambda m: m.eval(), "attribute 'training' changed"),
        (lambda m: setattr(m, "note", 1), "__dict__ keys changed"),
        (lambda m: m.weight.requires_grad_(False), "parameter 'weight' changed"),
    ],
    ids=["bits", "buffer", "pre-hook", "hook", "training", "attribute", "requires-grad"],
)
def test_snapshot_notices(layer, change, expected):
    before = ModelSnapshot.take(layer)
    change(layer)
    assert any(expected in line for line in before.diff(ModelSnapshot.take(layer)))


def test_snapshot_compares_bits_not_values(layer):
    with torch.no_grad():
        layer.bias.zero_()
    before = ModelSnapshot.take(layer)
    with torch.no_grad():
        layer.bias.neg_()  # 0.0 -> -0.0: equal values, other bits
    assert before.diff(ModelSnapshot.take(layer))


# -- the pytest plugin ---------------------------------------------------------------------


def test_not_auto_loaded_by_pytest(request):
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points.select(group="pytest11"):
            assert "prunefw" not in ep.value, (dist.metadata["Name"], ep)
    # This suite does not opt in, so the plugin and its fixture are absent here.
    assert not request.config.pluginmanager.has_plugin("prunefw.testing")
    with pytest.raises(pytest.FixtureLookupError):
        request.getfixturevalue("prunefw_plugin_manager")


def test_importing_the_kit_does_not_import_pytest():
    # The kit is a library too (check_criterion): only its pytest plugin imports pytest.
    code = "import prunefw.testing, sys; assert 'pytest' not in sys.modules, 'pytest imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_opt_in_pytest_plugin(tmp_path):
    """What a plugin author does: opt in from conftest.py, subclass, use the fixture."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["prunefw.testing"]\n')
    (tmp_path / "test_author.py").write_text(
        textwrap.dedent(
            """
            import torch
            from prunefw import MagnitudeCriterion, PruningCriterion
            from prunefw.plugin_manager import PluginManager
            from prunefw.testing import CriterionContract


            class TestMagnitude(CriterionContract):
                criterion_class = MagnitudeCriterion

                def make_criterion(self):
                    return MagnitudeCriterion(amount=0.5)


            class Unseeded(PruningCriterion):
                name = "magnitude"

                def compute_mask(self, scores, default_mask):
                    return torch.rand(scores.shape) > 0.5


            class TestUnseeded(CriterionContract):
                criterion_class = Unseeded

                def make_criterion(self):
                    return Unseeded()


            def test_fixture(prunefw_plugin_manager):
                assert isinstance(prunefw_plugin_manager, PluginManager)
            """
        )
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    # TestMagnitude: 8 passed; the fixture test passed; TestUnseeded: registered (the name
    # "magnitude" is taken) and deterministic fail, the other 6 pass. The base class is
    # not collected.
    assert "2 failed, 15 passed" in output, output
    assert "FAILED test_author.py::TestUnseeded::test_contract_registered" in output
    assert "FAILED test_author.py::TestUnseeded::test_contract_deterministic" in output
    assert "fails the prunefw criterion contract check 'deterministic'" in output
    assert "CriterionContract::" not in output
