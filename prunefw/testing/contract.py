""":class:`CriterionContract`: the contract checks as test methods for pytest to collect.

Plain methods, no pytest API: pytest collects the ``test_contract_*`` methods of a
``Test...`` subclass, and :func:`~prunefw.testing.runner.raise_if_fails` raises
:class:`~prunefw.testing.ContractFailure` (an :class:`AssertionError`) on failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from prunefw.criteria.base import PruningCriterion
from prunefw.testing.defaults import default_calibration, default_model
from prunefw.testing.runner import raise_if_fails
from prunefw.testing.subject import CriterionUnderTest

__all__ = ["CriterionContract"]


class CriterionContract:
    """Subclass in a test module; pytest collects the inherited ``test_contract_*`` methods.

    Set :attr:`criterion_class` and override :meth:`make_criterion`; override
    :meth:`make_model` and :meth:`calibration_data` if the defaults do not fit
    (e.g. N:M criteria need suitable shapes). Name the subclass ``Test...``: pytest
    then runs one test per contract check (see
    :data:`~prunefw.testing.CONTRACT_CHECKS`). This base class itself is not
    collected (``__test__ = False``); subclasses are, unless they set ``__test__``
    themselves.

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
        """Return the model to prune; default :func:`~prunefw.testing.default_model`.

        The kit calls it after ``torch.manual_seed(MODEL_SEED)``, so its weights are
        reproducible.
        """
        return default_model()

    def calibration_data(self, model: nn.Module) -> list[Any] | None:
        """Return calibration batches for ``model``, or ``None``.

        Default: ``None`` unless ``criterion_class.requires_calibration``, then
        :func:`~prunefw.testing.default_calibration_data` (4 seeded batches for the
        first Linear).

        Args:
            model: A model from :meth:`make_model`.
        """
        return default_calibration(self._criterion_class())(model)

    def _criterion_class(self) -> type[PruningCriterion]:
        cls = getattr(self, "criterion_class", None)
        if cls is None:
            raise TypeError(
                f"{type(self).__qualname__} must set criterion_class = <your criterion class>"
            )
        return cls

    def _subject(self) -> CriterionUnderTest:
        return CriterionUnderTest(
            criterion_class=self._criterion_class(),
            make_criterion=self.make_criterion,
            make_model=self.make_model,
            calibration_data=self.calibration_data,
            plugin=self.plugin,
        )

    def test_contract_registered(self) -> None:
        """A plugin registers the class under its valid, unique name."""
        __tracebackhide__ = True
        raise_if_fails("registered", self._subject())

    def test_contract_mask_shape_and_values(self) -> None:
        """``compute_mask`` returns a bool or 0/1 mask of the scores' shape."""
        __tracebackhide__ = True
        raise_if_fails("mask_shape_and_values", self._subject())

    def test_contract_never_unprunes(self) -> None:
        """Pruning on top of earlier masks never revives a pruned entry."""
        __tracebackhide__ = True
        raise_if_fails("never_unprunes", self._subject())

    def test_contract_deterministic(self) -> None:
        """Seeded criteria prune equal models identically, whatever the global RNGs."""
        __tracebackhide__ = True
        raise_if_fails("deterministic", self._subject())

    def test_contract_layer_context(self) -> None:
        """The layer context prunes every tensor with torch's reparametrization."""
        __tracebackhide__ = True
        raise_if_fails("layer_context", self._subject())

    def test_contract_global_context(self) -> None:
        """The global context prunes (unstructured) or raises ``PruningTypeError``."""
        __tracebackhide__ = True
        raise_if_fails("global_context", self._subject())

    def test_contract_remove_and_make_permanent(self) -> None:
        """``prune.remove`` and ``prunefw.make_permanent`` work afterwards."""
        __tracebackhide__ = True
        raise_if_fails("remove_and_make_permanent", self._subject())

    def test_contract_failure_leaves_model_untouched(self) -> None:
        """An exception inside the criterion propagates and changes nothing."""
        __tracebackhide__ = True
        raise_if_fails("failure_leaves_model_untouched", self._subject())
