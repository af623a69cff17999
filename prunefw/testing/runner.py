"""Running the contract checks: :func:`check_criterion` and :data:`CONTRACT_CHECKS`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from prunefw.criteria.base import PruningCriterion
from prunefw.testing.context_checks import (
    check_failure_leaves_model_untouched,
    check_global_context,
    check_layer_context,
    check_remove_and_make_permanent,
)
from prunefw.testing.criterion_checks import (
    check_deterministic,
    check_mask_shape_and_values,
    check_never_unprunes,
    check_registered,
)
from prunefw.testing.defaults import default_calibration, default_model
from prunefw.testing.failure import ContractFailure, describe_exception
from prunefw.testing.subject import CriterionUnderTest, seeded_rngs

__all__ = ["CONTRACT_CHECKS", "check_criterion", "raise_if_fails", "run_check"]

#: The contract checks, in the order :func:`check_criterion` runs them. Each is a
#: ``test_contract_<name>`` method of :class:`~prunefw.testing.CriterionContract`.
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

_CHECKS: dict[str, Callable[[CriterionUnderTest], None]] = {
    "registered": check_registered,
    "mask_shape_and_values": check_mask_shape_and_values,
    "never_unprunes": check_never_unprunes,
    "deterministic": check_deterministic,
    "layer_context": check_layer_context,
    "global_context": check_global_context,
    "remove_and_make_permanent": check_remove_and_make_permanent,
    "failure_leaves_model_untouched": check_failure_leaves_model_untouched,
}
assert tuple(_CHECKS) == CONTRACT_CHECKS

#: The seed of torch's and Python's global RNGs while a check runs (the
#: ``deterministic`` check runs its two prunings under two other ones).
_CHECK_SEED = 0


def run_check(name: str, subject: CriterionUnderTest) -> tuple[str, BaseException] | None:
    """Run the check ``name`` with seeded global RNGs.

    Args:
        name: One of :data:`CONTRACT_CHECKS`.
        subject: The criterion under test.

    Returns:
        ``None`` if the check passed, else ``(reason, exception)``: a
        :class:`~prunefw.testing.ContractFailure`, or the exception that kept the
        check from running.
    """
    try:
        with seeded_rngs(_CHECK_SEED):
            _CHECKS[name](subject)
    except ContractFailure as failure:
        return str(failure), failure
    except Exception as exc:  # the check itself could not run
        return f"the check could not run: {describe_exception(exc)}", exc
    return None


def raise_if_fails(name: str, subject: CriterionUnderTest) -> None:
    """Run the check ``name`` (see :func:`run_check`); raise if it fails.

    Raises:
        ContractFailure: The check failed; chained to its reason.
    """
    __tracebackhide__ = True
    result = run_check(name, subject)
    if result is not None:
        reason, exc = result
        raise ContractFailure(
            f"{subject.label} fails the prunefw criterion contract check {name!r}: {reason}",
            {name: reason},
        ) from exc


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
        make_model: Returns the model to prune (default
            :func:`~prunefw.testing.default_model`); called many times, always after
            ``torch.manual_seed(MODEL_SEED)``.
        calibration_data: Batches for criteria with ``requires_calibration``:
            either a function of the model returning them, or the batches
            themselves (reused for every pruning). Default: ``None`` unless the
            criterion requires calibration, then
            :func:`~prunefw.testing.default_calibration_data`.
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
        calibration = default_calibration(criterion_class)
    elif callable(calibration_data):
        calibration = calibration_data
    else:
        calibration = _fixed_batches(list(calibration_data))
    subject = CriterionUnderTest(
        criterion_class=criterion_class,
        make_criterion=make_criterion,
        make_model=make_model or default_model,
        calibration_data=calibration,
        plugin=plugin,
    )
    passed, failures = [], {}
    for name in CONTRACT_CHECKS:
        result = run_check(name, subject)
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
