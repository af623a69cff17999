"""The contract test kit for criterion plugins: does a criterion behave like prunefw expects?

prunefw runs every criterion through the same machinery (the adapter
``cls.PruningMethod``, torch's ``PruningContainer``, both contexts, the rollback of
failed pruning). This module checks a criterion class against that contract, one
check per item (:data:`CONTRACT_CHECKS`):

* ``registered``: a plugin registers the class through the
  ``prunefw_register_criteria`` hook under a valid, unique name, so that
  ``CriterionRegistry.get(cls.name) is cls``;
* ``mask_shape_and_values``: ``compute_mask`` returns a bool or 0/1 tensor of the
  scores' shape (for ``"unstructured"`` criteria: the flat 1-D scores of the
  still-unpruned entries), does not modify its inputs, and a ``"structured"``
  criterion prunes whole channels along its ``dim``;
* ``never_unprunes``: pruning again on top of earlier masks never revives an
  entry, and the criterion never returns "keep" for an entry its ``default_mask``
  marks as pruned (torch's ``PruningContainer`` takes the mask of ``"structured"``
  and ``"global"`` methods as it is);
* ``deterministic``: two instances from ``make_criterion()`` prune two models from
  ``make_model()`` identically, whatever the state of the global RNGs;
* ``layer_context``: :class:`~prunefw.LayerPruningContext` prunes every tensor
  with torch's reparametrization, keeping the weights and adding a valid mask;
* ``global_context``: the same for :class:`~prunefw.GlobalPruningContext` (and its
  ``"streaming"`` strategy if the criterion has a ``rank_selection``) if
  ``PRUNING_TYPE == "unstructured"``; otherwise the global context refuses the
  criterion with :class:`~prunefw.errors.PruningTypeError`;
* ``remove_and_make_permanent``: :func:`torch.nn.utils.prune.remove` and
  :func:`prunefw.make_permanent` work afterwards and keep the pruned values;
* ``failure_leaves_model_untouched``: if the criterion raises (in ``compute_mask``
  or ``importance_scores``), the error propagates and the model is bit-identical
  to before (parameters, buffers, hooks, attributes, ``state_dict``).

Criteria with ``requires_calibration = True`` are pruned with calibration batches
(``ctx.prune(calibration_data=batches)``); by default 4 seeded batches of
``torch.randn(8, in_features)`` for the first ``Linear`` of the model.

The kit is an opt-in pytest plugin. In the plugin's ``conftest.py``::

    pytest_plugins = ["prunefw.testing"]

which also provides the fixture ``prunefw_plugin_manager`` (a fresh
:class:`~prunefw.plugin_manager.PluginManager`). Then, in a test module, subclass
:class:`CriterionContract`; pytest runs one ``test_contract_<check>`` per check::

    from prunefw.testing import CriterionContract
    from prunefw_mine import MyCriterion


    class TestMyCriterionContract(CriterionContract):
        criterion_class = MyCriterion

        def make_criterion(self) -> MyCriterion:
            return MyCriterion(amount=0.5, seed=0)

Outside pytest (or in one test), :func:`check_criterion` runs every check and
raises :class:`ContractFailure` listing every failed one.

Example:
    A criterion registered by an in-process plugin object passes every check:

    >>> import torch
    >>> from prunefw import PruningCriterion, hookimpl
    >>> from prunefw.testing import CONTRACT_CHECKS, ContractFailure, check_criterion
    >>> class KeepLarge(PruningCriterion):
    ...     '''Prune the entries whose importance is below the median.'''
    ...     name = "keep-large"
    ...     def compute_mask(self, scores, default_mask):
    ...         return scores >= scores.median()
    >>> class Plugin:
    ...     @hookimpl
    ...     def prunefw_register_criteria(self):
    ...         return [KeepLarge]
    >>> check_criterion(KeepLarge, KeepLarge, plugin=Plugin()) == list(CONTRACT_CHECKS)
    True

    A broken one fails, and the error says which checks failed and why:

    >>> class TooLong(KeepLarge):
    ...     '''Returns a mask one entry too long.'''
    ...     name = "too-long"
    ...     def compute_mask(self, scores, default_mask):
    ...         return torch.ones(scores.numel() + 1, dtype=torch.bool)
    >>> class BrokenPlugin:
    ...     @hookimpl
    ...     def prunefw_register_criteria(self):
    ...         return [TooLong]
    >>> try:
    ...     check_criterion(TooLong, TooLong, plugin=BrokenPlugin())
    ... except ContractFailure as failure:
    ...     print(failure.passed)
    ...     print(failure.failures["mask_shape_and_values"])  # doctest: +NORMALIZE_WHITESPACE
    ['registered']
    compute_mask(scores, default_mask) must return a bool or 0/1 torch.Tensor of the scores'
    shape (512,) (unstructured criterion, 0.weight); it returned a mask of shape (513,)
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.calibration import calibrate
from prunefw.contexts import GlobalPruningContext, LayerPruningContext, PruningContext
from prunefw.contexts.base import importance_scores
from prunefw.criteria.base import PruningCriterion
from prunefw.criteria.random import RandomCriterion
from prunefw.errors import PruningTypeError, UnknownCriterionError
from prunefw.permanence import make_permanent
from prunefw.plugin_manager import DISABLED_PLUGINS_ENV, PluginManager
from prunefw.registry import CRITERION_NAME_PATTERN, CriterionRegistry
from prunefw.reparametrization import pruned_tensor_names
from prunefw.targets import PruningTarget, select_targets

__all__ = [
    "CONTRACT_CHECKS",
    "MODEL_SEED",
    "ContractFailure",
    "CriterionContract",
    "ModelSnapshot",
    "check_criterion",
    "default_calibration_data",
    "default_model",
]

#: The contract checks, in the order :func:`check_criterion` runs them. Each is a
#: ``test_contract_<name>`` method of :class:`CriterionContract`.
CONTRACT_CHECKS: tuple[str, ...] = (
    "registered",
    "mask_shape_and_values",
    "never_unprunes",
    "deterministic",
    "layer_context",
    "global_context",
    "remove_and_make_permanent",
    "failure_leaves_model_untouched",
)

#: The seed of torch's global RNG while the kit calls ``make_model()``.
MODEL_SEED = 0
#: The seeds of torch's and Python's global RNGs while the checks run; the
#: ``deterministic`` check runs its two prunings under two different ones.
_CHECK_SEED = 0
_DETERMINISM_SEEDS = (1, 2)
#: The kit's own earlier pruning in ``never_unprunes``: a seeded random 25%.
_PRIOR_RATIO = 0.25
_PRIOR_SEED = 1234
#: How many differences a message lists at most.
_MAX_LISTED = 8


class ContractFailure(AssertionError):
    """A criterion does not meet prunefw's criterion contract.

    An :class:`AssertionError`, so pytest reports it as a test failure.

    Args:
        message: What the contract requires and what happened.
        failures: ``{check name: reason}`` for every failed check.
        passed: The names of the checks that passed (from :func:`check_criterion`).

    Attributes:
        failures: ``{check name: reason}`` for every failed check.
        passed: The names of the checks that passed.
    """

    def __init__(
        self,
        message: str,
        failures: Mapping[str, str] | None = None,
        passed: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.failures: dict[str, str] = dict(failures or {})
        self.passed: list[str] = list(passed)


# -- defaults ----------------------------------------------------------------------------


def default_model() -> nn.Sequential:
    """Build the kit's default model: ``Linear(16, 32), ReLU(), Linear(32, 8)``.

    The weights come from ``torch.manual_seed(MODEL_SEED)``; the caller's global RNG
    state is left as it was.

    Returns:
        A new, seeded model.

    Example:
        >>> import torch
        >>> torch.equal(default_model()[0].weight, default_model()[0].weight)
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MODEL_SEED)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def default_calibration_data(model: nn.Module) -> list[torch.Tensor]:
    """Make 4 seeded batches ``torch.randn(8, in_features)`` for ``model``'s first Linear.

    Args:
        model: A model whose first :class:`~torch.nn.Linear` (in ``model.modules()``
            order) takes the model's input.

    Returns:
        Four batches of shape ``(8, in_features)`` in that layer's dtype.

    Raises:
        ValueError: ``model`` has no Linear layer; give your own calibration data.

    Example:
        >>> [tuple(batch.shape) for batch in default_calibration_data(default_model())]
        [(8, 16), (8, 16), (8, 16), (8, 16)]
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise ValueError(
            f"the default calibration data needs a Linear layer to size its batches, and "
            f"{type(model).__name__} has none: override calibration_data(model) (or pass "
            "calibration_data= to check_criterion) with batches for your model"
        )
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(8, first.in_features, generator=generator, dtype=first.weight.dtype)
        for _ in range(4)
    ]


# -- bit-level model snapshots -----------------------------------------------------------


class _Bits:
    """A tensor's dtype, shape and raw bytes, compared bit for bit."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.dtype = tensor.dtype
        self.shape = tuple(tensor.shape)
        self.data: torch.Tensor | None
        try:
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            self.data = flat.view(torch.uint8).clone()
        except (RuntimeError, NotImplementedError):  # meta, quantized, ...: no raw bytes
            self.data = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Bits):
            return NotImplemented
        if self.data is None or other.data is None:
            return self.dtype == other.dtype and self.shape == other.shape
        return (
            self.dtype == other.dtype
            and self.shape == other.shape
            and torch.equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{str(self.dtype).removeprefix('torch.')} tensor of shape {self.shape}>"


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return _Bits(a) == _Bits(b)


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_pre_hooks_always_called",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _value(value: object) -> object:
    """What a snapshot records for an attribute: identity, plus the bits of tensors."""
    if isinstance(value, torch.Tensor) and value.layout == torch.strided:
        return (id(value), type(value).__name__, value.requires_grad, _Bits(value))
    return (id(value), type(value).__name__)


@dataclass(frozen=True)
class ModelSnapshot:
    """Everything about a model that pruning may change, comparable bit for bit.

    Per module: its type, the keys of its ``__dict__`` and the identity of every
    value there (tensors also by dtype, shape and raw bytes); every parameter and
    buffer by identity, ``requires_grad`` and raw bytes (buffers also by
    persistence); every hook dict (forward pre-hooks, forward hooks, ...) by keys
    and hook identity, pruning hooks also by their attributes. For the whole
    model: the ``state_dict`` keys, in order, and the raw bytes of every value.

    Attributes:
        entries: The recorded values, by description.

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> before = ModelSnapshot.take(layer)
        >>> before.diff(ModelSnapshot.take(layer))
        []
        >>> with torch.no_grad():
        ...     _ = layer.bias.add_(1.0)
        >>> before.diff(ModelSnapshot.take(layer))  # doctest: +NORMALIZE_WHITESPACE
        ["module '' (Linear): parameter 'bias' changed",
         "state_dict: value of 'bias' changed"]
    """

    entries: dict[str, object]

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        """Record the state of ``model`` and all its submodules.

        Args:
            model: The model.

        Returns:
            The snapshot.
        """
        entries: dict[str, object] = {}
        for qualname, module in model.named_modules(remove_duplicate=False):
            where = f"module {qualname!r} ({type(module).__name__})"
            attributes = vars(module)
            entries[f"{where}: type"] = type(module)
            entries[f"{where}: __dict__ keys"] = tuple(sorted(attributes))
            for key, value in attributes.items():
                if key not in ("_parameters", "_buffers", "_modules", *_HOOK_DICTS):
                    entries[f"{where}: attribute {key!r}"] = _value(value)
            for key, param in module._parameters.items():
                entries[f"{where}: parameter {key!r}"] = _value(param)
            for key, buffer in module._buffers.items():
                persistent = key not in module._non_persistent_buffers_set
                entries[f"{where}: buffer {key!r}"] = (_value(buffer), persistent)
            for hooks in _HOOK_DICTS:
                value = attributes.get(hooks)
                if value is None:
                    continue
                entries[f"{where}: {hooks}"] = (id(value), [(k, id(h)) for k, h in value.items()])
                for key, hook in value.items():
                    if isinstance(hook, prune.BasePruningMethod):
                        state = sorted((a, id(v)) for a, v in vars(hook).items())
                        entries[f"{where}: {hooks}[{key}] attributes"] = state
        state_dict = model.state_dict()
        entries["state_dict: keys"] = tuple(state_dict)
        for key, value in state_dict.items():
            recorded = _Bits(value) if isinstance(value, torch.Tensor) else value
            entries[f"state_dict: value of {key!r}"] = recorded
        return cls(entries)

    def diff(self, other: ModelSnapshot) -> list[str]:
        """Describe how ``other`` differs from this snapshot (empty if identical).

        Args:
            other: A later snapshot of the same model.

        Returns:
            One line per difference, in this snapshot's order, then additions.
        """
        lines = []
        for key, value in self.entries.items():
            if key not in other.entries:
                lines.append(f"{key}: gone")
            elif other.entries[key] != value:
                lines.append(f"{key} changed")
        lines.extend(f"{key}: new" for key in other.entries if key not in self.entries)
        return lines


# -- the checks --------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
    return f"{type(exc).__name__}: {exc}{notes}"


@contextlib.contextmanager
def _step(requirement: str) -> Iterator[None]:
    """Turn an unexpected exception into a :class:`ContractFailure` naming ``requirement``."""
    __tracebackhide__ = True
    try:
        yield
    except ContractFailure:
        raise
    except Exception as exc:
        raise ContractFailure(f"{requirement}; but it raised {_describe(exc)}") from exc


@contextlib.contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's, Python's (and numpy's, if imported) global RNGs; restore them after."""
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            if numpy is not None:
                numpy.random.seed(seed)
            yield
    finally:
        random.setstate(python_state)
        if numpy is not None:
            numpy.random.set_state(numpy_state)


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


@dataclass
class _Subject:
    """A criterion class and the author's factories; what every check works on."""

    criterion_class: type[PruningCriterion]
    make_criterion: Callable[[], PruningCriterion]
    make_model: Callable[[], nn.Module]
    calibration_data: Callable[[nn.Module], Iterable[Any] | None]
    plugin: object | None = None

    def __post_init__(self) -> None:
        cls = self.criterion_class
        if not (isinstance(cls, type) and issubclass(cls, PruningCriterion)):
            raise TypeError(
                f"criterion_class must be a subclass of prunefw.PruningCriterion, got {cls!r}"
            )

    @property
    def label(self) -> str:
        return self.criterion_class.__qualname__

    @property
    def unstructured(self) -> bool:
        return self.criterion_class.PRUNING_TYPE == "unstructured"

    def model(self) -> nn.Module:
        with (
            _step("make_model() must build a model"),
            torch.random.fork_rng(devices=[]),
        ):
            torch.manual_seed(MODEL_SEED)
            model = self.make_model()
        if not isinstance(model, nn.Module):
            raise ContractFailure(f"make_model() must return an nn.Module; it returned {model!r}")
        return model

    def criterion(self) -> PruningCriterion:
        with _step(f"make_criterion() must build a {self.label}"):
            crit = self.make_criterion()
        if not isinstance(crit, self.criterion_class):
            raise ContractFailure(
                f"make_criterion() must return an instance of {self.label}; it returned {crit!r}"
            )
        return crit

    def targets(self, model: nn.Module) -> list[PruningTarget]:
        with _step(
            "make_model() must return a model with at least one Linear or convolution layer "
            "(the tensors both contexts prune by default)"
        ):
            return select_targets(model)

    def batches(self, model: nn.Module) -> list[Any] | None:
        with _step("calibration_data(model) must return batches for the model, or None"):
            data = self.calibration_data(model)
            batches = None if data is None else list(data)
        if batches is None and self.criterion_class.requires_calibration:
            raise ContractFailure(
                f"{self.label}.requires_calibration is true, so the kit prunes with "
                "calibration batches; but calibration_data(model) returned None. Return "
                "batches for make_model()'s model"
            )
        return batches

    def layer_context(
        self, model: nn.Module, targets: Sequence[PruningTarget], crit: PruningCriterion
    ) -> LayerPruningContext:
        with _step(f"LayerPruningContext must accept {crit!r} for every target"):
            return LayerPruningContext({(t.module, t.name): crit for t in targets}, model=model)

    def global_context(
        self, model: nn.Module, crit: PruningCriterion, strategy: str = "global_unstructured"
    ) -> GlobalPruningContext:
        with _step(f"GlobalPruningContext(strategy={strategy!r}) must accept {crit!r}"):
            return GlobalPruningContext(model, crit, strategy=strategy)

    def prune(self, ctx: PruningContext, batches: list[Any] | None, what: str) -> None:
        with _step(f"{what} must prune the model"):
            ctx.prune(calibration_data=batches)


def _weights(targets: Sequence[PruningTarget]) -> dict[str, torch.Tensor]:
    return {t.label: getattr(t.module, t.name).detach().clone() for t in targets}


def _check_pruned(
    targets: Sequence[PruningTarget], weights: Mapping[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """Check torch's reparametrization on every target; return copies of the masks."""
    masks = {}
    for t in targets:
        module, name, label = t.module, t.name, t.label
        orig = module._parameters.get(name + "_orig")
        mask = module._buffers.get(name + "_mask")
        if orig is None or mask is None or name not in pruned_tensor_names(module):
            raise ContractFailure(
                f"after {where}, {label} must be pruned with torch's reparametrization "
                f"({name}_orig parameter, {name}_mask buffer, pruning forward pre-hook); "
                f"it has parameters {sorted(module._parameters)}, buffers "
                f"{sorted(module._buffers)}, pruning hooks for {pruned_tensor_names(module)}"
            )
        if not _same_bits(orig, weights[label]):
            raise ContractFailure(
                f"{where} must not change the weights (only add a mask); {label}_orig "
                "differs from the weights before pruning (does the criterion modify "
                "a tensor in place, e.g. in importance_scores?)"
            )
        if mask.shape != orig.shape or not bool(((mask == 0) | (mask == 1)).all()):
            raise ContractFailure(
                f"after {where}, {label}_mask must hold 0/1 values in the shape "
                f"{tuple(orig.shape)}; it has shape {tuple(mask.shape)} and values "
                f"{sorted(set(mask.detach().reshape(-1).tolist()))[:_MAX_LISTED]}"
            )
        if not torch.equal(getattr(module, name), orig * mask):
            raise ContractFailure(
                f"after {where}, {label} must equal {name}_orig * {name}_mask; it does not"
            )
        masks[label] = mask.detach().clone()
    return masks


def _check_registered(s: _Subject) -> None:
    cls = s.criterion_class
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not CRITERION_NAME_PATTERN.fullmatch(name):
        raise ContractFailure(
            f"{s.label}.name must be a valid criterion name (lowercase letters, digits, "
            f"'_', '-' and '.', starting with a letter); it is {name!r}"
        )
    if s.plugin is None:
        how = "the plugin manager (entry points of the 'prunefw' group loaded)"
        with _step(f"{how} must load the installed plugins"):
            pm = PluginManager(autoload=True)
    else:
        how = "a fresh PluginManager(autoload=False) with the given plugin"
        pm = PluginManager(autoload=False)
        with _step(f"the given plugin {s.plugin!r} must register on {how}"):
            pm.register(s.plugin)
    requirement = (
        f"{s.label} must be registered through the prunefw_register_criteria hook under "
        f"its unique name {name!r}"
    )
    with _step(f"{requirement}; building the registry from {how}"):
        registry = CriterionRegistry.from_plugin_manager(pm)
    try:
        entry = registry.entry(name)
    except UnknownCriterionError:
        blocked = os.environ.get(DISABLED_PLUGINS_ENV, "").strip()
        hint = (
            "install the plugin's distribution (e.g. pip install -e .), or set plugin = "
            "<your plugin module> to check an in-process plugin"
            if s.plugin is None
            else "does the plugin's prunefw_register_criteria return the class?"
        )
        if blocked:
            hint += f"; note {DISABLED_PLUGINS_ENV}={blocked!r} blocks entry points"
        raise ContractFailure(
            f"{requirement}; no plugin registers {name!r} on {how} (registered: "
            f"{', '.join(registry.names())}): {hint}"
        ) from None
    if entry.cls is not cls:
        raise ContractFailure(
            f"{requirement}; {name!r} is registered to {entry.cls.__module__}."
            f"{entry.cls.__qualname__} (by {entry.plugin.origin}), not to "
            f"{cls.__module__}.{cls.__qualname__}"
        )


def _scores(crit: PruningCriterion, target: PruningTarget) -> torch.Tensor:
    """The scores the adapter hands to ``compute_mask`` for an unpruned tensor."""
    scores = importance_scores(crit, target)
    weights = getattr(target.module, target.name).detach()
    scores = weights.abs() if scores is None else scores
    return scores.reshape(-1) if crit.PRUNING_TYPE == "unstructured" else scores


def _check_mask_shape_and_values(s: _Subject) -> None:
    model = s.model()
    targets = s.targets(model)
    batches = s.batches(model)
    crit = s.criterion()
    if crit.requires_calibration:
        with _step("calibration (reset_calibration, then observe per forward) must run"):
            calibrate(model, [(crit, targets)], batches)
    structured = crit.PRUNING_TYPE == "structured"
    dim = getattr(crit, "dim", None)
    if structured and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise ContractFailure(
            f"a 'structured' criterion must have an int attribute dim (the channel "
            f"dimension torch's PruningContainer slices); {crit!r} has dim={dim!r}"
        )
    for target in targets:
        with _step(f"importance_scores must return None or scores for {target.label}"):
            scores = _scores(crit, target)
        default_mask = torch.ones_like(scores)
        saved_scores, saved_mask = scores.clone(), default_mask.clone()
        shape = tuple(scores.shape)
        with _step(f"compute_mask must return a mask for {target.label}"):
            mask = crit.compute_mask(scores, default_mask)
        requirement = (
            f"compute_mask(scores, default_mask) must return a bool or 0/1 torch.Tensor of "
            f"the scores' shape {shape} ({crit.PRUNING_TYPE} criterion, {target.label})"
        )
        if not isinstance(mask, torch.Tensor):
            raise ContractFailure(f"{requirement}; it returned {type(mask).__name__}")
        if tuple(mask.shape) != shape:
            raise ContractFailure(f"{requirement}; it returned a mask of shape {tuple(mask.shape)}")
        if mask.is_complex():
            raise ContractFailure(f"{requirement}; it returned a {mask.dtype} mask")
        if mask.dtype != torch.bool:
            bad = ~((mask == 0) | (mask == 1))
            if bool(bad.any()):
                examples = [repr(v) for v in mask[bad].reshape(-1)[:3].tolist()]
                raise ContractFailure(
                    f"{requirement}; it returned a {mask.dtype} mask with {int(bad.sum())} "
                    f"entries that are neither 0 nor 1 (e.g. {', '.join(examples)})"
                )
        changed = [
            argument
            for argument, now, saved in (
                ("scores", scores, saved_scores),
                ("default_mask", default_mask, saved_mask),
            )
            if not _same_bits(now, saved)
        ]
        if changed:
            raise ContractFailure(
                f"compute_mask must not modify its arguments in place (torch may hand it "
                f"views of the module's mask); it changed {' and '.join(changed)} for "
                f"{target.label}"
            )
        if structured:
            assert isinstance(dim, int)
            if not -len(shape) <= dim < len(shape):
                raise ContractFailure(
                    f"a 'structured' criterion's dim must index the pruned tensor; "
                    f"{crit!r} has dim={dim}, {target.label} has shape {shape}"
                )
            kept = (mask != 0).movedim(dim, 0).reshape(shape[dim], -1)
            mixed = (kept.any(dim=1) & ~kept.all(dim=1)).nonzero().reshape(-1).tolist()
            if mixed:
                raise ContractFailure(
                    f"a 'structured' criterion must prune whole channels along dim={dim} "
                    f"of an unpruned tensor; on {target.label} its mask keeps part of "
                    f"channel(s) {_listed([str(i) for i in mixed])}"
                )


@contextlib.contextmanager
def _patched(crit: PruningCriterion, name: str, function: Callable[..., Any]) -> Iterator[None]:
    """Shadow the method ``name`` on the instance ``crit`` (not its class), then restore it.

    Written to the instance ``__dict__`` directly, so frozen criteria work too, and
    restored afterwards, in case ``make_criterion()`` hands out a shared instance.
    """
    attributes = vars(crit)
    missing = object()
    previous = attributes.get(name, missing)
    attributes[name] = function
    try:
        yield
    finally:
        if previous is missing:
            attributes.pop(name, None)
        else:
            attributes[name] = previous


def _check_never_unprunes(s: _Subject) -> None:
    model = s.model()
    targets = s.targets(model)
    batches = s.batches(model)
    prior = RandomCriterion(_PRIOR_RATIO, seed=_PRIOR_SEED)
    s.prune(
        LayerPruningContext({(t.module, t.name): prior for t in targets}, model=model),
        None,
        f"the kit's earlier pruning ({prior!r} in a layer context)",
    )
    masks = _masks_of(targets)
    crit = s.criterion()
    calls: list[tuple[torch.Tensor, object]] = []  # (default_mask, returned mask)
    original = crit.compute_mask

    def recording(scores: torch.Tensor, default_mask: torch.Tensor) -> Any:
        before = default_mask.detach().clone()
        mask = original(scores, default_mask)
        calls.append((before, mask.detach().clone() if isinstance(mask, torch.Tensor) else mask))
        return mask

    for step in ("once", "again"):
        where = f"pruning {step} with {crit!r} in a layer context, on top of earlier masks"
        with _patched(crit, "compute_mask", recording):
            s.prune(s.layer_context(model, targets, crit), batches, where)
        for default_mask, mask in calls:
            if not isinstance(mask, torch.Tensor) or mask.shape != default_mask.shape:
                continue  # the adapter refuses it; mask_shape_and_values says why
            revived = int(((default_mask == 0) & (mask != 0)).sum())
            if revived:
                pruned = int((default_mask == 0).sum())
                raise ContractFailure(
                    f"compute_mask must never keep an entry that default_mask marks as "
                    f"pruned (combine with it, e.g. mask & (default_mask != 0)): torch's "
                    f"PruningContainer takes the mask of a {crit.PRUNING_TYPE!r} method as "
                    f"it is. When {where}, it returned keep for {revived} of the {pruned} "
                    f"entries its default_mask of shape {tuple(default_mask.shape)} marks "
                    "as pruned"
                )
        calls.clear()
        new_masks = _masks_of(targets)
        for label, mask in new_masks.items():
            revived = int(((masks[label] == 0) & (mask != 0)).sum())
            if revived:
                raise ContractFailure(
                    f"an entry pruned earlier must stay pruned; after {where}, {revived} "
                    f"pruned entries of {label} are kept again"
                )
        masks = new_masks


def _masks_of(targets: Sequence[PruningTarget]) -> dict[str, torch.Tensor]:
    return {t.label: getattr(t.module, t.name + "_mask").detach().clone() for t in targets}


def _check_deterministic(s: _Subject) -> None:
    def run(seed: int) -> tuple[dict[str, _Bits], dict[str, dict[str, torch.Tensor]]]:
        masks = {}
        with _seeded_rngs(seed):
            model = s.model()
            weights = {key: _Bits(value) for key, value in model.state_dict().items()}
            targets = s.targets(model)
            crit = s.criterion()
            s.prune(s.layer_context(model, targets, crit), s.batches(model), "the layer context")
            masks["the layer context"] = _masks_of(targets)
            if s.unstructured:
                model = s.model()
                targets = s.targets(model)
                crit = s.criterion()
                s.prune(s.global_context(model, crit), s.batches(model), "the global context")
                masks["the global context"] = _masks_of(targets)
        return weights, masks

    first_model, first = run(_DETERMINISM_SEEDS[0])
    second_model, second = run(_DETERMINISM_SEEDS[1])
    if first_model != second_model:
        differ = [key for key in first_model if first_model[key] != second_model.get(key)]
        raise ContractFailure(
            "make_model() must build the same model every time (the kit calls it after "
            f"torch.manual_seed({MODEL_SEED})); two calls built models whose state_dicts "
            f"differ: {_listed(differ or sorted(set(second_model) - set(first_model)))}"
        )
    for where, masks in first.items():
        differ = [
            f"{label} ({int((masks[label] != second[where][label]).sum())} entries)"
            for label in masks
            if not torch.equal(masks[label], second[where][label])
        ]
        if differ:
            raise ContractFailure(
                "two criteria from make_criterion() must prune two equal models "
                "identically (make_criterion() must return a new, seeded instance each "
                "time, which must not depend on the global RNGs); in "
                f"{where}, the masks of {_listed(differ)} differ between two runs with "
                "different global RNG states"
            )


def _check_layer_context(s: _Subject) -> None:
    model = s.model()
    targets = s.targets(model)
    weights = _weights(targets)
    crit = s.criterion()
    where = f"LayerPruningContext({{each target: {crit!r}}}, model=model).prune()"
    s.prune(s.layer_context(model, targets, crit), s.batches(model), where)
    _check_pruned(targets, weights, where)


def _check_global_context(s: _Subject) -> None:
    model = s.model()
    crit = s.criterion()
    if not s.unstructured:
        before = ModelSnapshot.take(model)
        requirement = (
            f"GlobalPruningContext must refuse a {crit.PRUNING_TYPE!r} criterion with "
            "prunefw.errors.PruningTypeError"
        )
        try:
            GlobalPruningContext(model, crit)
        except PruningTypeError:
            pass
        except Exception as exc:
            raise ContractFailure(f"{requirement}; it raised {_describe(exc)}") from exc
        else:
            raise ContractFailure(f"{requirement}; it accepted {crit!r}")
        changes = before.diff(ModelSnapshot.take(model))
        if changes:
            raise ContractFailure(
                f"{requirement} and leave the model untouched; changed: {_listed(changes)}"
            )
        return
    counts = {}
    strategies = ["global_unstructured"]
    if type(crit).rank_selection is not PruningCriterion.rank_selection:
        strategies.append("streaming")
    for strategy in strategies:
        if strategy != strategies[0]:
            model, crit = s.model(), s.criterion()
        targets = s.targets(model)
        weights = _weights(targets)
        where = f"GlobalPruningContext(model, {crit!r}, strategy={strategy!r}).prune()"
        s.prune(s.global_context(model, crit, strategy), s.batches(model), where)
        masks = _check_pruned(targets, weights, where)
        counts[strategy] = sum(int((mask == 0).sum()) for mask in masks.values())
    if len(set(counts.values())) > 1:
        raise ContractFailure(
            "rank_selection(n) must describe the same decision as compute_mask, so both "
            "global strategies prune the same number of entries; they pruned "
            + ", ".join(f"{count} ({strategy})" for strategy, count in counts.items())
        )


def _check_removed(
    targets: Sequence[PruningTarget], pruned: Mapping[str, torch.Tensor], where: str
) -> None:
    for t in targets:
        module, name = t.module, t.name
        param = module._parameters.get(name)
        leftovers = [k for k in (name + "_orig",) if k in module._parameters]
        leftovers += [k for k in (name + "_mask",) if k in module._buffers]
        if not isinstance(param, nn.Parameter) or leftovers or name in pruned_tensor_names(module):
            raise ContractFailure(
                f"after {where}, {t.label} must be a plain Parameter again (no {name}_orig, "
                f"{name}_mask or pruning hook); it is {type(param).__name__}, leftovers "
                f"{leftovers}, pruning hooks for {pruned_tensor_names(module)}"
            )
        if not _same_bits(param, pruned[t.label]):
            raise ContractFailure(
                f"after {where}, {t.label} must hold the pruned values (weight_orig * "
                "weight_mask); it holds other values"
            )


def _check_remove_and_make_permanent(s: _Subject) -> None:
    runs: list[tuple[str, Callable[[nn.Module], PruningContext]]] = [
        ("LayerPruningContext", lambda m: s.layer_context(m, s.targets(m), s.criterion()))
    ]
    if s.unstructured:
        runs.append(("GlobalPruningContext", lambda m: s.global_context(m, s.criterion())))
    for context, build in runs:
        for how in ("torch.nn.utils.prune.remove", "prunefw.make_permanent"):
            model = s.model()
            keys = sorted(model.state_dict())
            targets = s.targets(model)
            s.prune(build(model), s.batches(model), context)
            pruned = {t.label: getattr(t.module, t.name).detach().clone() for t in targets}
            where = f"{how} after pruning with {context}"
            with _step(f"{how} must work after pruning with {context}"):
                if how == "prunefw.make_permanent":
                    make_permanent(model)
                else:
                    for t in targets:
                        prune.remove(t.module, t.name)
            _check_removed(targets, pruned, where)
            if prune.is_pruned(model) or sorted(model.state_dict()) != keys:
                raise ContractFailure(
                    f"after {where}, the model must not be pruned any more and have the "
                    f"state_dict keys of the unpruned model {keys}; it has "
                    f"{sorted(model.state_dict())}"
                )


class _ProbeError(Exception):
    """Raised by the kit inside the criterion to check the rollback."""


def _check_failure_leaves_model_untouched(s: _Subject) -> None:
    for context in ("layer", "global") if s.unstructured else ("layer",):
        for method in ("compute_mask", "importance_scores"):
            _check_rollback(s, context, method)


def _check_rollback(s: _Subject, context: str, method: str) -> None:
    """Make ``method`` of the criterion raise inside ``context``; check prune() rolls back."""
    model = s.model()
    targets = s.targets(model)
    batches = s.batches(model)
    crit = s.criterion()
    ctx: PruningContext
    if context == "layer":
        ctx = s.layer_context(model, targets, crit)
    else:
        ctx = s.global_context(model, crit)
    # Raise on the last call, after the other targets were pruned: both methods run once
    # per target, except the global compute_mask, which runs once for all of them.
    fail_on = 1 if (context, method) == ("global", "compute_mask") else len(targets)
    probe = _ProbeError(f"raised by the contract kit in {method} (call {fail_on})")
    original = getattr(crit, method)
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == fail_on:
            raise probe
        return original(*args, **kwargs)

    requirement = (
        "when the criterion raises, prune() must re-raise that exception and leave the "
        f"model bit-identical; the kit made {crit!r}.{method} raise on call {fail_on} in "
        f"the {context} context"
    )
    before = ModelSnapshot.take(model)
    with _patched(crit, method, failing):
        try:
            ctx.prune(calibration_data=batches)
        except _ProbeError as exc:
            if exc is not probe:
                raise ContractFailure(f"{requirement}, but another error came out") from exc
        except Exception as exc:
            when = "after" if calls >= fail_on else "before"
            raise ContractFailure(
                f"{requirement}, but prune() raised {_describe(exc)} instead ({when} the "
                "kit's exception)"
            ) from exc
        else:
            raise ContractFailure(
                f"{requirement}, but prune() returned normally: {method} was called only "
                f"{calls} time(s)"
            )
    changes = before.diff(ModelSnapshot.take(model))
    if changes:
        raise ContractFailure(f"{requirement}, but the model changed: {_listed(changes)}")


_CHECKS: dict[str, Callable[[_Subject], None]] = {
    "registered": _check_registered,
    "mask_shape_and_values": _check_mask_shape_and_values,
    "never_unprunes": _check_never_unprunes,
    "deterministic": _check_deterministic,
    "layer_context": _check_layer_context,
    "global_context": _check_global_context,
    "remove_and_make_permanent": _check_remove_and_make_permanent,
    "failure_leaves_model_untouched": _check_failure_leaves_model_untouched,
}
assert tuple(_CHECKS) == CONTRACT_CHECKS


def _run(name: str, subject: _Subject) -> tuple[str, BaseException] | None:
    """Run one check with seeded global RNGs; return ``(reason, exception)`` if it failed."""
    try:
        with _seeded_rngs(_CHECK_SEED):
            _CHECKS[name](subject)
    except ContractFailure as failure:
        return str(failure), failure
    except Exception as exc:  # the check itself could not run
        return f"the check could not run: {_describe(exc)}", exc
    return None


def _fail_one(name: str, subject: _Subject) -> None:
    __tracebackhide__ = True
    result = _run(name, subject)
    if result is not None:
        reason, exc = result
        raise ContractFailure(
            f"{subject.label} fails the prunefw criterion contract check {name!r}: {reason}",
            {name: reason},
        ) from exc


# -- the public API ----------------------------------------------------------------------


def check_criterion(
    criterion_class: type[PruningCriterion],
    make_criterion: Callable[[], PruningCriterion],
    *,
    make_model: Callable[[], nn.Module] | None = None,
    calibration_data: Callable[[nn.Module], Iterable[Any] | None] | Iterable[Any] | None = None,
    plugin: object | None = None,
) -> list[str]:
    """Run every contract check on ``criterion_class``, outside pytest.

    Args:
        criterion_class: The criterion class under test.
        make_criterion: Returns a new, deterministic (seeded) instance; called
            many times.
        make_model: Returns the model to prune (default :func:`default_model`);
            called many times, always after ``torch.manual_seed(MODEL_SEED)``.
        calibration_data: Batches for criteria with ``requires_calibration``:
            either a function of the model returning them, or the batches
            themselves (reused for every pruning). Default: ``None`` unless the
            criterion requires calibration, then :func:`default_calibration_data`.
        plugin: A plugin object (e.g. a module) registering ``criterion_class``; it
            is registered on a fresh ``PluginManager(autoload=False)`` for the
            ``registered`` check. Default: the installed entry points are used.

    Returns:
        The names of the checks that passed: every one of :data:`CONTRACT_CHECKS`.

    Raises:
        ContractFailure: One or more checks failed; its message lists every failed
            check with its reason (also in ``failures``).
        TypeError: ``criterion_class`` is not a criterion class.

    Example:
        >>> from prunefw import MagnitudeCriterion
        >>> passed = check_criterion(MagnitudeCriterion, lambda: MagnitudeCriterion(amount=0.3))
        >>> passed[:2]
        ['registered', 'mask_shape_and_values']
    """
    __tracebackhide__ = True
    calibration: Callable[[nn.Module], Iterable[Any] | None]
    if calibration_data is None:
        calibration = _default_calibration(criterion_class)
    elif callable(calibration_data):
        calibration = calibration_data
    else:
        calibration = _fixed_batches(list(calibration_data))
    subject = _Subject(
        criterion_class=criterion_class,
        make_criterion=make_criterion,
        make_model=make_model or default_model,
        calibration_data=calibration,
        plugin=plugin,
    )
    passed, failures = [], {}
    for name in CONTRACT_CHECKS:
        result = _run(name, subject)
        if result is None:
            passed.append(name)
        else:
            failures[name] = result[0]
    if failures:
        lines = "\n".join(f"- {name}: {reason}" for name, reason in failures.items())
        raise ContractFailure(
            f"{subject.label} fails {len(failures)} of {len(CONTRACT_CHECKS)} prunefw "
            f"criterion contract checks:\n{lines}",
            failures,
            passed,
        )
    return passed


def _fixed_batches(batches: list[Any]) -> Callable[[nn.Module], list[Any]]:
    def calibration(model: nn.Module) -> list[Any]:
        return batches

    return calibration


def _default_calibration(
    criterion_class: type[PruningCriterion],
) -> Callable[[nn.Module], list[torch.Tensor] | None]:
    def calibration(model: nn.Module) -> list[torch.Tensor] | None:
        if not getattr(criterion_class, "requires_calibration", False):
            return None
        return default_calibration_data(model)

    return calibration


class CriterionContract:
    """Subclass in a test module; pytest collects the inherited ``test_contract_*`` methods.

    Set :attr:`criterion_class` and override :meth:`make_criterion`; override
    :meth:`make_model` and :meth:`calibration_data` if the defaults do not fit
    (e.g. N:M criteria need suitable shapes). Name the subclass ``Test...``: pytest
    then runs one test per contract check (see :data:`CONTRACT_CHECKS`). This base
    class itself is not collected (``__test__ = False``); subclasses are, unless
    they set ``__test__`` themselves.

    Attributes:
        criterion_class: The criterion class under test (required).
        plugin: A plugin object registering :attr:`criterion_class`, registered
            in-process on a fresh ``PluginManager(autoload=False)`` for the
            ``registered`` check; ``None`` (default): the installed entry points.

    Example:
        >>> from prunefw import MagnitudeCriterion
        >>> class TestMagnitude(CriterionContract):
        ...     criterion_class = MagnitudeCriterion
        ...     def make_criterion(self):
        ...         return MagnitudeCriterion(amount=0.3)
        >>> TestMagnitude.__test__, CriterionContract.__test__
        (True, False)
        >>> TestMagnitude().test_contract_never_unprunes()
    """

    __test__: ClassVar[bool] = False
    criterion_class: ClassVar[type[PruningCriterion]]
    plugin: ClassVar[object | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in vars(cls):
            cls.__test__ = True

    def make_criterion(self) -> PruningCriterion:
        """Return a new, deterministic (seeded) instance of :attr:`criterion_class`.

        Raises:
            NotImplementedError: Not overridden.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must override make_criterion() to return a seeded "
            "instance of its criterion_class"
        )

    def make_model(self) -> nn.Module:
        """Return the model to prune; default :func:`default_model`.

        The kit calls it after ``torch.manual_seed(MODEL_SEED)``, so its weights are
        reproducible.
        """
        return default_model()

    def calibration_data(self, model: nn.Module) -> list[Any] | None:
        """Return calibration batches for ``model``, or ``None``.

        Default: ``None`` unless ``criterion_class.requires_calibration``, then
        :func:`default_calibration_data` (4 seeded batches for the first Linear).

        Args:
            model: A model from :meth:`make_model`.
        """
        return _default_calibration(self._criterion_class())(model)

    def _criterion_class(self) -> type[PruningCriterion]:
        cls = getattr(self, "criterion_class", None)
        if cls is None:
            raise TypeError(
                f"{type(self).__qualname__} must set criterion_class = <your criterion class>"
            )
        return cls

    def _subject(self) -> _Subject:
        return _Subject(
            criterion_class=self._criterion_class(),
            make_criterion=self.make_criterion,
            make_model=self.make_model,
            calibration_data=self.calibration_data,
            plugin=self.plugin,
        )

    def test_contract_registered(self) -> None:
        """A plugin registers the class under its valid, unique name."""
        __tracebackhide__ = True
        _fail_one("registered", self._subject())

    def test_contract_mask_shape_and_values(self) -> None:
        """``compute_mask`` returns a bool or 0/1 mask of the scores' shape."""
        __tracebackhide__ = True
        _fail_one("mask_shape_and_values", self._subject())

    def test_contract_never_unprunes(self) -> None:
        """Pruning on top of earlier masks never revives a pruned entry."""
        __tracebackhide__ = True
        _fail_one("never_unprunes", self._subject())

    def test_contract_deterministic(self) -> None:
        """Seeded criteria prune equal models identically, whatever the global RNGs."""
        __tracebackhide__ = True
        _fail_one("deterministic", self._subject())

    def test_contract_layer_context(self) -> None:
        """The layer context prunes every tensor with torch's reparametrization."""
        __tracebackhide__ = True
        _fail_one("layer_context", self._subject())

    def test_contract_global_context(self) -> None:
        """The global context prunes (unstructured) or raises ``PruningTypeError``."""
        __tracebackhide__ = True
        _fail_one("global_context", self._subject())

    def test_contract_remove_and_make_permanent(self) -> None:
        """``prune.remove`` and ``prunefw.make_permanent`` work afterwards."""
        __tracebackhide__ = True
        _fail_one("remove_and_make_permanent", self._subject())

    def test_contract_failure_leaves_model_untouched(self) -> None:
        """An exception inside the criterion propagates and changes nothing."""
        __tracebackhide__ = True
        _fail_one("failure_leaves_model_untouched", self._subject())


@pytest.fixture
def prunefw_plugin_manager() -> PluginManager:
    """A fresh :class:`~prunefw.plugin_manager.PluginManager`, as users get it.

    It honours ``PRUNEFW_DISABLE_PLUGIN_AUTOLOAD`` and ``PRUNEFW_DISABLED_PLUGINS``;
    entry points load on first use. Available with
    ``pytest_plugins = ["prunefw.testing"]``.
    """
    return PluginManager()
