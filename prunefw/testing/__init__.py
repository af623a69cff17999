"""The contract test kit for criterion plugins: does a criterion behave like prunefw expects?

prunefw runs every criterion through the same machinery (the adapter
``cls.PruningMethod``, torch's ``PruningContainer``, both contexts, the rollback of
failed pruning). This package checks a criterion class against that contract, one
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
  ``"streaming"`` strategy if the criterion ``supports_streaming()``) if
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
:class:`~prunefw.plugin_manager.PluginManager`), registered from
:mod:`prunefw.testing.pytest_plugin` by this package's ``pytest_configure`` hook.
That is the only module of the kit that imports pytest; ``import prunefw.testing``
does not.

Then, in a test module, subclass :class:`CriterionContract`; pytest runs one
``test_contract_<check>`` per check::

    from prunefw.testing import CriterionContract
    from prunefw_mine import MyCriterion


    class TestMyCriterionContract(CriterionContract):
        criterion_class = MyCriterion

        def make_criterion(self) -> MyCriterion:
            return MyCriterion(amount=0.5, seed=0)

Outside pytest (or in one test), :func:`check_criterion` runs every check and
raises :class:`ContractFailure` listing every failed one.

The kit's modules, one concept each:

* :mod:`~prunefw.testing.runner`: :func:`check_criterion` and :data:`CONTRACT_CHECKS`;
* :mod:`~prunefw.testing.contract`: :class:`CriterionContract`, the checks as test
  methods;
* :mod:`~prunefw.testing.criterion_checks`: the checks on what the criterion decides
  (``registered`` to ``deterministic``);
* :mod:`~prunefw.testing.context_checks`: the checks on what the contexts do with it
  (``layer_context`` to ``failure_leaves_model_untouched``);
* :mod:`~prunefw.testing.subject`: the criterion under test with the author's
  factories, what every check works on;
* :mod:`~prunefw.testing.failure`: :class:`ContractFailure` and the wording of
  reasons;
* :mod:`~prunefw.testing.snapshot`: :class:`ModelSnapshot`, bit-level model state;
* :mod:`~prunefw.testing.defaults`: :func:`default_model` and
  :func:`default_calibration_data`;
* :mod:`~prunefw.testing.pytest_plugin`: the fixture.

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

from typing import TYPE_CHECKING, Any

from prunefw.testing.contract import CriterionContract
from prunefw.testing.defaults import MODEL_SEED, default_calibration_data, default_model
from prunefw.testing.failure import ContractFailure
from prunefw.testing.runner import CONTRACT_CHECKS, check_criterion
from prunefw.testing.snapshot import ModelSnapshot

if TYPE_CHECKING:
    import pytest

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


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's fixtures when a conftest opts in to ``prunefw.testing``.

    A pytest hook: it runs only if pytest loads this package as a plugin
    (``pytest_plugins = ["prunefw.testing"]``). The fixtures live in
    :mod:`prunefw.testing.pytest_plugin`, so that importing the kit does not import
    pytest. (Not a ``pytest_plugins`` list here: pytest also honours that when it
    merely collects this module's doctests.)
    """
    config.pluginmanager.import_plugin("prunefw.testing.pytest_plugin")


def __getattr__(name: str) -> Any:
    """Import the fixture ``prunefw_plugin_manager`` (and so pytest) only when asked for."""
    if name == "prunefw_plugin_manager":
        from prunefw.testing import pytest_plugin

        return pytest_plugin.prunefw_plugin_manager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
