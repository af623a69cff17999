"""The criterion under test, with its author's factories: what every contract check works on."""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunefw.contexts import GlobalPruningContext, LayerPruningContext, PruningContext
from prunefw.criteria.base import PruningCriterion
from prunefw.targets import PruningTarget, select_targets
from prunefw.testing.defaults import MODEL_SEED
from prunefw.testing.failure import ContractFailure, requiring

__all__ = ["CriterionUnderTest", "seeded_rngs", "shadowed"]


@dataclass
class CriterionUnderTest:
    """A criterion class and its author's factories, checked as the kit calls them.

    Every method builds something new (a model, a criterion, a context) and turns an
    author's mistake into a :class:`~prunefw.testing.ContractFailure` saying what
    the kit expected.

    Attributes:
        criterion_class: The criterion class under test.
        make_criterion: Returns a new, seeded instance of it.
        make_model: Returns the model to prune.
        calibration_data: Returns calibration batches for a model, or ``None``.
        plugin: A plugin object registering the class, or ``None`` for the
            installed entry points.

    Raises:
        TypeError: ``criterion_class`` is not a subclass of
            :class:`~prunefw.PruningCriterion`.

    Example:
        >>> from prunefw import MagnitudeCriterion
        >>> from prunefw.testing import default_model
        >>> subject = CriterionUnderTest(
        ...     MagnitudeCriterion, lambda: MagnitudeCriterion(amount=0.5), default_model,
        ...     lambda model: None)
        >>> [t.label for t in subject.targets(subject.model())]
        ['0.weight', '2.weight']
    """

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
        """The class's qualified name, for messages."""
        return self.criterion_class.__qualname__

    @property
    def unstructured(self) -> bool:
        """Whether the class is ``"unstructured"``, so the global context takes it."""
        return self.criterion_class.PRUNING_TYPE == "unstructured"

    def model(self) -> nn.Module:
        """Build a model with ``make_model()`` under ``torch.manual_seed(MODEL_SEED)``."""
        with (
            requiring("make_model() must build a model"),
            torch.random.fork_rng(devices=[]),
        ):
            torch.manual_seed(MODEL_SEED)
            model = self.make_model()
        if not isinstance(model, nn.Module):
            raise ContractFailure(f"make_model() must return an nn.Module; it returned {model!r}")
        return model

    def criterion(self) -> PruningCriterion:
        """Build a criterion with ``make_criterion()``; it must be a ``criterion_class``."""
        with requiring(f"make_criterion() must build a {self.label}"):
            crit = self.make_criterion()
        if not isinstance(crit, self.criterion_class):
            raise ContractFailure(
                f"make_criterion() must return an instance of {self.label}; it returned {crit!r}"
            )
        return crit

    def targets(self, model: nn.Module) -> list[PruningTarget]:
        """The tensors both contexts prune by default in ``model``."""
        with requiring(
            "make_model() must return a model with at least one Linear or convolution layer "
            "(the tensors both contexts prune by default)"
        ):
            return select_targets(model)

    def batches(self, model: nn.Module) -> list[Any] | None:
        """Calibration batches for ``model``; required if the class requires calibration."""
        with requiring("calibration_data(model) must return batches for the model, or None"):
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
        """A layer context applying ``crit`` to every one of ``targets``."""
        with requiring(f"LayerPruningContext must accept {crit!r} for every target"):
            return LayerPruningContext({(t.module, t.name): crit for t in targets}, model=model)

    def global_context(
        self, model: nn.Module, crit: PruningCriterion, strategy: str = "global_unstructured"
    ) -> GlobalPruningContext:
        """A global context applying ``crit`` to ``model`` with ``strategy``."""
        with requiring(f"GlobalPruningContext(strategy={strategy!r}) must accept {crit!r}"):
            return GlobalPruningContext(model, crit, strategy=strategy)

    def prune(self, ctx: PruningContext, batches: list[Any] | None, what: str) -> None:
        """Run ``ctx.prune(calibration_data=batches)``; ``what`` names it in messages."""
        with requiring(f"{what} must prune the model"):
            ctx.prune(calibration_data=batches)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's, Python's (and numpy's, if imported) global RNGs; restore them after.

    Example:
        >>> import torch
        >>> with seeded_rngs(0):
        ...     first = torch.rand(1)
        >>> with seeded_rngs(0):
        ...     torch.equal(first, torch.rand(1))
        True
    """
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


@contextlib.contextmanager
def shadowed(crit: PruningCriterion, name: str, function: Callable[..., Any]) -> Iterator[None]:
    """Shadow the method ``name`` on the instance ``crit`` (not its class), then restore it.

    Written to the instance ``__dict__`` directly, so frozen criteria work too, and
    restored afterwards, in case ``make_criterion()`` hands out a shared instance.

    Args:
        crit: The criterion instance.
        name: The method to shadow, e.g. ``"compute_mask"``.
        function: What ``crit.<name>`` calls inside the block.
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
