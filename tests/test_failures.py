"""Nothing lost: a prune that fails leaves the model bit-identical and usable."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import make_mlp, model_state
from torch import nn
from torch.nn.utils import prune

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    PruningContext,
    PruningCriterion,
)
from prunefw.contexts import streaming
from prunefw.errors import InvalidArgumentError, InvalidMaskError

# --------------------------------------------------------------------------- helpers

LAYERS = ("0", "2", "4")


def inputs() -> torch.Tensor:
    return torch.randn(4, 20, generator=torch.Generator().manual_seed(123))


def _bits(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().reshape(-1)
        return (str(t.dtype), tuple(value.shape), t.view(torch.uint8).numpy().tobytes())
    return value


def inner_state(model: nn.Module) -> list[Any]:
    """The methods inside every PruningContainer, their attributes by identity and value.

    ``model_state`` sees the container's own attributes (``_pruning_methods``); this
    also covers what the methods it holds refer to (e.g. ``CustomFromMask.mask``).
    """
    state = []
    for qualname, module in model.named_modules():
        for key, hook in module._forward_pre_hooks.items():
            if not isinstance(hook, prune.PruningContainer):
                continue
            for method in hook._pruning_methods:
                state.append(
                    (
                        qualname,
                        key,
                        id(method),
                        sorted((a, id(v), _bits(v)) for a, v in vars(method).items()),
                    )
                )
    return state


def _deepcopy_works(model: nn.Module) -> bool:
    try:
        copy.deepcopy(model)
    except RuntimeError as exc:
        if "graph leaves" not in str(exc):  # torch's known non-leaf deepcopy failure only
            raise
        return False
    return True


class Probe:
    """Everything observable about a model, taken before a failing prune."""

    def __init__(self, model: nn.Module) -> None:
        self.x = inputs()
        self.out = model(self.x).detach().clone()  # runs the pruning hooks first
        # torch alone cannot deep-copy a pruned module; prunefw-pruned ones can.
        self.copyable = _deepcopy_works(model)
        self.state = model_state(model)
        self.inner = inner_state(model)
        self.pruned = prune.is_pruned(model)

    def check(self, model: nn.Module) -> None:
        state = model_state(model)
        changed = sorted(
            k for k in state.keys() | self.state.keys() if state.get(k) != self.state.get(k)
        )
        assert not changed, f"changed by the failed prune: {changed}"
        inner = inner_state(model)
        changed = [a[:2] for a, b in zip(inner, self.inner, strict=False) if a != b]
        assert len(inner) == len(self.inner)
        assert not changed, f"methods inside PruningContainers changed (module, hook id): {changed}"
        assert prune.is_pruned(model) == self.pruned
        out = model(self.x)
        assert torch.equal(out, self.out)
        assert _deepcopy_works(model) == self.copyable
        if self.copyable:
            assert torch.equal(copy.deepcopy(model)(self.x), self.out)
        out.sum().backward()  # autograd still works through the reparametrization
        for module in model.modules():
            if isinstance(module, nn.Linear):
                leaf = module._parameters.get("weight_orig", module._parameters.get("weight"))
                assert leaf is not None and leaf.grad is not None
        model.zero_grad(set_to_none=True)
        # The forward recomputed the pruned ``weight`` attributes: new baseline.
        self.state = model_state(model)
        self.inner = inner_state(model)


def prune_before(model: nn.Sequential, prior: str) -> None:
    """Bring ``model`` into a given pruning state before the failing attempt."""
    if prior in ("once", "twice"):
        GlobalPruningContext(model, MagnitudeCriterion(amount=0.2)).prune()
    if prior == "twice":
        LayerPruningContext(
            {name: MagnitudeCriterion(amount=0.1) for name in LAYERS}, model=model
        ).prune()
    if prior == "torch":
        prune.l1_unstructured(model[0], "weight", amount=0.3)
        prune.random_unstructured(model[2], "weight", amount=0.3)
        prune.l1_unstructured(model[2], "weight", amount=0.3)
        prune.l1_unstructured(model[4], "bias", amount=1)


PRIORS = ["fresh", "once", "twice", "torch"]


def build(scenario: str, model: nn.Sequential, bad: PruningCriterion) -> PruningContext:
    """A context in which ``bad`` is used at the place ``scenario`` names."""

    def good() -> MagnitudeCriterion:
        return MagnitudeCriterion(amount=0.3)

    if scenario == "layer-first":
        return LayerPruningContext({"0": bad, "2": good()}, model=model)
    if scenario == "layer-second-criterion":
        return LayerPruningContext({"0": [good(), bad], "2": good()}, model=model)
    if scenario == "layer-third-module":
        return LayerPruningContext({"0": good(), "2": [good(), good()], "4": bad}, model=model)
    if scenario == "global-first":
        return GlobalPruningContext(model, [bad, good()])
    if scenario == "global-second-criterion":
        return GlobalPruningContext(model, [good(), bad])
    if scenario == "global-third-criterion":
        return GlobalPruningContext(model, [good(), good(), bad])
    raise AssertionError(scenario)


SCENARIOS = [
    "layer-first",
    "layer-second-criterion",
    "layer-third-module",
    "global-first",
    "global-second-criterion",
    "global-third-criterion",
]


class BadMask(PruningCriterion):
    """Returns a mask that is not a 0/1 tensor of the scores' shape."""

    name = "test-bad-mask"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> Any:
        if self.kind == "shape":
            return torch.ones(scores.numel() + 1, dtype=torch.bool)
        if self.kind == "2d":
            return torch.ones(1, scores.numel(), dtype=torch.bool)
        if self.kind == "half":
            return torch.full_like(scores, 0.5)
        if self.kind == "two":
            return torch.full(scores.shape, 2, dtype=torch.int64)
        if self.kind == "negative":
            return -torch.ones_like(scores)
        if self.kind == "nan":
            return torch.full_like(scores, float("nan"))
        if self.kind == "complex":
            return torch.ones(scores.shape, dtype=torch.complex64)
        if self.kind == "list":
            return [True] * scores.numel()
        if self.kind == "none":
            return None
        raise AssertionError(self.kind)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}


BAD_MASKS = {
    "shape": r"returned a mask of shape \(\d+,\); expected a torch\.Tensor of shape \(\d+,\)",
    "2d": r"returned a mask of shape \(1, \d+\)",
    "half": r"returned a mask containing 0\.5 \(\d+ entries not 0 or 1\)",
    "two": r"returned a mask containing 2 ",
    "negative": r"returned a mask containing -1\.0",
    "nan": r"returned a mask containing nan",
    "complex": r"returned a torch\.complex64 mask",
    "list": r"compute_mask returned list; expected a torch\.Tensor",
    "none": r"compute_mask returned NoneType",
}


class Explodes(PruningCriterion):
    """A plugin criterion whose compute_mask raises."""

    name = "test-explodes"

    def __init__(self, factory: Callable[[], BaseException]) -> None:
        self.factory = factory
        self.raised: list[BaseException] = []

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        exc = self.factory()
        self.raised.append(exc)
        raise exc


class ScoresFailOnCall(MagnitudeCriterion):
    """Magnitude scores, except that the ``fail_on``-th call of importance_scores raises."""

    name = "test-scores-fail-on-call"

    def __init__(self, fail_on: int, amount: float = 0.3) -> None:
        super().__init__(amount=amount)
        self.fail_on = fail_on
        self.calls = 0

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor | None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(f"scores failed on call {self.calls}")
        return None


@pytest.fixture
def mask_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[nn.Module, str]]:
    """Record every mask application: ``prune.custom_from_mask`` (also inside
    global_unstructured) and the streaming strategy's ``install_mask``."""
    calls: list[tuple[nn.Module, str]] = []
    real = prune.custom_from_mask

    def spy(module: nn.Module, name: str, mask: torch.Tensor) -> nn.Module:
        calls.append((module, name))
        return real(module, name, mask)

    monkeypatch.setattr(prune, "custom_from_mask", spy)
    # The streaming strategy writes torch's reparametrization with install_mask.
    real_install = streaming.install_mask

    def install_spy(module: nn.Module, name: str, mask: torch.Tensor) -> None:
        calls.append((module, name))
        real_install(module, name, mask)

    monkeypatch.setattr(streaming, "install_mask", install_spy)
    return calls


def prepared(prior: str) -> tuple[nn.Sequential, Probe]:
    model = make_mlp()
    prune_before(model, prior)
    return model, Probe(model)


def check_still_prunable(model: nn.Sequential, prior: str) -> None:
    """The rolled-back model prunes exactly like a model that never saw the failure."""
    reference = make_mlp()
    prune_before(reference, prior)
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.4)).prune()
    GlobalPruningContext(reference, MagnitudeCriterion(amount=0.4)).prune()
    for name in LAYERS:
        got, want = dict(model.named_modules())[name], dict(reference.named_modules())[name]
        assert torch.equal(got.weight_mask, want.weight_mask)
        assert torch.equal(got.weight, want.weight)
    x = inputs()
    assert torch.equal(model(x), reference(x))


# --------------------------------------------------------------------------- bad masks


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kind", sorted(BAD_MASKS))
def test_bad_mask_is_refused_and_model_untouched(kind: str, scenario: str):
    model, probe = prepared("fresh")
    bad = BadMask(kind)
    with pytest.raises(InvalidMaskError, match=BAD_MASKS[kind]) as info:
        build(scenario, model, bad).prune()
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"BadMask(kind={kind!r}).compute_mask")
    probe.check(model)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("kind", ["shape", "half", "list"])
def test_bad_mask_on_already_pruned_model(kind: str, prior: str):
    model, probe = prepared(prior)
    with pytest.raises(InvalidMaskError, match=BAD_MASKS[kind]):
        build("layer-third-module", model, BadMask(kind)).prune()
    probe.check(model)
    with pytest.raises(InvalidMaskError, match=BAD_MASKS[kind]):
        build("global-second-criterion", model, BadMask(kind)).prune()
    probe.check(model)
    check_still_prunable(model, prior)


# --------------------------------------------------------------------------- plugin exceptions


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_plugin_exception_propagates_unchanged(scenario: str, prior: str):
    model, probe = prepared(prior)
    bad = Explodes(lambda: RuntimeError("plugin exploded"))
    with pytest.raises(RuntimeError, match="plugin exploded") as info:
        build(scenario, model, bad).prune()
    assert type(info.value) is RuntimeError
    assert len(bad.raised) == 1
    assert info.value is bad.raised[0]  # the very same exception object
    notes = info.value.__notes__
    assert len(notes) == 1
    assert "Explodes()" in notes[0]
    assert "the model was left unchanged" in notes[0]
    if scenario.startswith("layer"):
        label = "4.weight" if scenario == "layer-third-module" else "0.weight"
        assert f"while applying Explodes() to {label}" in notes[0]
    else:
        assert "Explodes() globally to 3 tensors (0.weight, 2.weight, 4.weight)" in notes[0]
    probe.check(model)
    check_still_prunable(model, prior)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_keyboard_interrupt_rolls_back(scenario: str, prior: str):
    model, probe = prepared(prior)
    bad = Explodes(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        build(scenario, model, bad).prune()
    assert info.value is bad.raised[0]
    probe.check(model)
    check_still_prunable(model, prior)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ValueError("bad value"),
        lambda: MemoryError(),
        lambda: SystemExit(3),
        lambda: InvalidArgumentError("from a plugin"),
    ],
    ids=["ValueError", "MemoryError", "SystemExit", "InvalidArgumentError"],
)
def test_other_exception_types_roll_back(factory: Callable[[], BaseException]):
    for scenario in ("layer-third-module", "global-second-criterion"):
        model, probe = prepared("fresh")
        bad = Explodes(factory)
        with pytest.raises(type(factory())) as info:
            build(scenario, model, bad).prune()
        assert info.value is bad.raised[0]
        probe.check(model)


# --------------------------------------------------------------------------- failures mid-way


@pytest.mark.parametrize("prior", PRIORS)
def test_layer_failure_after_custom_from_mask_ran(
    prior: str, mask_calls: list[tuple[nn.Module, str]]
):
    model, probe = prepared(prior)
    mask_calls.clear()
    crit = ScoresFailOnCall(fail_on=3)
    ctx = LayerPruningContext({name: crit for name in LAYERS}, model=model)
    with pytest.raises(RuntimeError, match="scores failed on call 3") as info:
        ctx.prune()
    assert "to 4.weight" in info.value.__notes__[0]
    assert [(m, n) for m, n in mask_calls] == [(model[0], "weight"), (model[2], "weight")]
    probe.check(model)
    check_still_prunable(model, prior)


@pytest.mark.parametrize("prior", PRIORS)
def test_global_failure_after_custom_from_mask_ran(
    prior: str, mask_calls: list[tuple[nn.Module, str]]
):
    model, probe = prepared(prior)
    mask_calls.clear()
    # 3 targets: calls 1-3 belong to the first criterion, call 4 to the second.
    crit = ScoresFailOnCall(fail_on=4)
    with pytest.raises(RuntimeError, match="scores failed on call 4"):
        GlobalPruningContext(model, [crit, crit]).prune()
    assert len(mask_calls) == 3
    probe.check(model)
    check_still_prunable(model, prior)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("second", [False, True], ids=["in-first", "in-second"])
def test_streaming_failure_after_custom_from_mask_ran(
    prior: str, second: bool, mask_calls: list[tuple[nn.Module, str]]
):
    class FailsAfterMasks(MagnitudeCriterion):
        name = "test-fails-after-masks"

        def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor | None:
            if len(mask_calls) >= 2:
                raise RuntimeError("scores failed after two masks")
            return None

    model, probe = prepared(prior)
    mask_calls.clear()
    criteria: list[PruningCriterion] = [FailsAfterMasks(amount=0.3)]
    if second:
        criteria.insert(0, MagnitudeCriterion(amount=0.3))
    with pytest.raises(RuntimeError, match="scores failed after two masks"):
        GlobalPruningContext(model, criteria, strategy="streaming").prune()
    assert len(mask_calls) >= 2
    probe.check(model)


@pytest.mark.parametrize("prior", PRIORS)
def test_int_amount_larger_than_what_remains(prior: str):
    model, probe = prepared(prior)
    remaining = int(model[2].weight_mask.sum()) if prior != "fresh" else model[2].weight.numel()
    left = remaining - round(0.5 * remaining)
    ctx = LayerPruningContext(
        {
            "0": MagnitudeCriterion(amount=0.5),
            "2": [MagnitudeCriterion(amount=0.5), MagnitudeCriterion(amount=left + 1)],
        },
        model=model,
    )
    message = f"amount={left + 1} is more than the {left} entries still unpruned"
    with pytest.raises(InvalidArgumentError, match=re.escape(message)) as info:
        ctx.prune()
    assert "2.weight" in info.value.__notes__[0]
    probe.check(model)

    total = sum(
        int(m.weight_mask.sum()) if hasattr(m, "weight_mask") else m.weight.numel()
        for m in model
        if isinstance(m, nn.Linear)
    )
    left = total - round(0.5 * total)
    ctx = GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.5), MagnitudeCriterion(amount=left + 1)]
    )
    message = f"amount={left + 1} is more than the {left} entries still unpruned"
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        ctx.prune()
    probe.check(model)
    # Exactly what remains is fine.
    GlobalPruningContext(
        model, [MagnitudeCriterion(amount=0.5), MagnitudeCriterion(amount=left)]
    ).prune()
    assert all(int(model[int(n)].weight_mask.sum()) == 0 for n in LAYERS)


# --------------------------------------------------------------------------- container state


def test_container_methods_restored_exactly():
    model, _ = prepared("twice")
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.1)).prune()
    containers = {name: model[int(name)]._forward_pre_hooks for name in LAYERS}
    before = {
        name: [(k, h, h._pruning_methods) for k, h in hooks.items()]
        for name, hooks in containers.items()
    }
    assert all(len(h._pruning_methods) == 3 for entries in before.values() for (_, h, _) in entries)
    probe = Probe(model)
    for scenario in SCENARIOS:
        with pytest.raises(RuntimeError):
            build(scenario, model, Explodes(lambda: RuntimeError("x"))).prune()
        for name, hooks in containers.items():
            assert model[int(name)]._forward_pre_hooks is hooks  # the same dict object
            after = [(k, h, h._pruning_methods) for k, h in hooks.items()]
            assert len(after) == len(before[name])
            for (k0, h0, m0), (k1, h1, m1) in zip(before[name], after, strict=True):
                assert k0 == k1
                assert h0 is h1
                assert m0 is m1  # the same tuple: no method added
                assert len(m1) == 3
        probe.check(model)


def test_single_hook_restored_not_wrapped_in_container():
    model, probe = prepared("once")
    hooks = {n: list(model[int(n)]._forward_pre_hooks.values()) for n in LAYERS}
    assert all(not isinstance(h[0], prune.PruningContainer) for h in hooks.values())
    with pytest.raises(RuntimeError):
        build("global-second-criterion", model, Explodes(lambda: RuntimeError("x"))).prune()
    for n in LAYERS:
        assert list(model[int(n)]._forward_pre_hooks.values()) == hooks[n]
        assert not isinstance(hooks[n][0], prune.PruningContainer)
    probe.check(model)


def test_fresh_model_gets_its_parameters_back():
    model = make_mlp()
    params = {n: model[int(n)].weight for n in LAYERS}
    probe = Probe(model)
    with pytest.raises(RuntimeError):
        build("layer-third-module", model, Explodes(lambda: RuntimeError("x"))).prune()
    for n in LAYERS:
        module = model[int(n)]
        assert module._parameters["weight"] is params[n]
        assert "weight_orig" not in module._parameters
        assert "weight_mask" not in module._buffers
        assert "__deepcopy__" not in vars(module)
        assert not module._forward_pre_hooks
    assert list(model.state_dict()) == [f"{n}.{k}" for n in LAYERS for k in ("weight", "bias")]
    probe.check(model)


def test_non_target_modules_are_not_touched():
    model = make_mlp()
    # model[4] is not a target; it is pruned by torch and carries a hook.
    prune.l1_unstructured(model[4], "weight", amount=0.5)
    probe = Probe(model)
    ctx = LayerPruningContext(
        {"0": MagnitudeCriterion(amount=0.5), "2": Explodes(lambda: RuntimeError("x"))},
        model=model,
    )
    with pytest.raises(RuntimeError):
        ctx.prune()
    probe.check(model)


def test_optimizer_keeps_working_after_rollback():
    model, _ = prepared("once")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    leaves = [p for p in model.parameters()]
    with pytest.raises(RuntimeError):
        build("global-second-criterion", model, Explodes(lambda: RuntimeError("x"))).prune()
    assert [p for p in model.parameters()] == leaves
    before = model[0].weight_orig.detach().clone()
    model(inputs()).sum().backward()
    optimizer.step()
    assert not torch.equal(model[0].weight_orig.detach(), before)
    model(inputs())
    assert torch.equal(model[0].weight, model[0].weight_orig * model[0].weight_mask)


# --------------------------------------------------------------------------- user hooks


@pytest.mark.parametrize("prior", ["fresh", "once", "twice"])
@pytest.mark.parametrize("scenario", ["layer-third-module", "global-second-criterion"])
def test_user_hook_handles_still_work_after_rollback(scenario: str, prior: str):
    model = make_mlp()
    calls: list[str] = []
    handles = {}
    # Registered before the prior pruning: these sit before the pruning hook.
    handles["early"] = model[2].register_forward_pre_hook(lambda m, a: calls.append("early"))
    prune_before(model, prior)
    handles["plain"] = model[2].register_forward_pre_hook(lambda m, a: calls.append("plain"))
    handles["kwargs"] = model[2].register_forward_pre_hook(
        lambda m, a, kw: calls.append("kwargs"), with_kwargs=True
    )
    handles["first"] = model[2].register_forward_pre_hook(
        lambda m, a: calls.append("first"), prepend=True
    )
    handles["post"] = model[2].register_forward_hook(lambda m, a, o: calls.append("post"))
    probe = Probe(model)
    calls.clear()

    with pytest.raises(RuntimeError):
        build(scenario, model, Explodes(lambda: RuntimeError("x"))).prune()
    probe.check(model)  # runs forward twice (model and its copy)

    calls.clear()
    model(inputs())
    assert calls == ["first", "early", "plain", "kwargs", "post"]
    for name in ("kwargs", "early", "first", "plain", "post"):
        handle = handles.pop(name)
        hook_id = handle.id
        handle.remove()
        assert hook_id not in model[2]._forward_pre_hooks
        assert hook_id not in model[2]._forward_pre_hooks_with_kwargs
        assert hook_id not in model[2]._forward_hooks
        calls.clear()
        model(inputs())
        assert name not in calls
        assert len(calls) == len(handles)
    assert calls == []
    # Only pruning hooks remain.
    assert all(isinstance(h, prune.BasePruningMethod) for h in model[2]._forward_pre_hooks.values())
    assert len(model[2]._forward_pre_hooks) == (0 if prior == "fresh" else 1)


def test_handle_of_a_hook_registered_during_the_failed_prune_is_harmless():
    model = make_mlp()
    handles = []

    class RegistersHook(Explodes):
        name = "test-registers-hook"

        def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
            handles.append(model[0].register_forward_pre_hook(lambda m, a: None))
            return super().compute_mask(scores, default_mask)

    probe = Probe(model)
    ctx = LayerPruningContext(
        {"0": RegistersHook(lambda: RuntimeError("x"))},
        model=model,
    )
    with pytest.raises(RuntimeError):
        ctx.prune()
    probe.check(model)
    (handle,) = handles
    assert handle.id not in model[0]._forward_pre_hooks
    handle.remove()  # a no-op, and no error
    probe.check(model)
