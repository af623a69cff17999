"""How a contract check fails: :class:`ContractFailure`, and the wording of its reasons."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

__all__ = ["MAX_LISTED", "ContractFailure", "describe_exception", "listed", "requiring"]

#: How many differences a message lists at most.
MAX_LISTED = 8


class ContractFailure(AssertionError):
    """A criterion does not meet prunefw's criterion contract.

    An :class:`AssertionError`, so pytest reports it as a test failure.

    Args:
        message: What the contract requires and what happened.
        failures: ``{check name: reason}`` for every failed check.
        passed: The names of the checks that passed (from
            :func:`~prunefw.testing.check_criterion`).

    Attributes:
        failures: ``{check name: reason}`` for every failed check.
        passed: The names of the checks that passed.

    Example:
        >>> failure = ContractFailure("bad mask", {"mask_shape_and_values": "too long"})
        >>> isinstance(failure, AssertionError), failure.failures, failure.passed
        (True, {'mask_shape_and_values': 'too long'}, [])
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


def describe_exception(exc: BaseException) -> str:
    """Describe ``exc`` in one line: its type, message and notes.

    Example:
        >>> describe_exception(ValueError("bad amount"))
        'ValueError: bad amount'
    """
    notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
    return f"{type(exc).__name__}: {exc}{notes}"


def listed(items: Sequence[str]) -> str:
    """Join ``items`` with commas, showing at most :data:`MAX_LISTED` of them.

    Example:
        >>> listed([str(i) for i in range(10)])
        '0, 1, 2, 3, 4, 5, 6, 7, ... (10 in all)'
    """
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > MAX_LISTED else "")


@contextlib.contextmanager
def requiring(requirement: str) -> Iterator[None]:
    """Turn an unexpected exception into a :class:`ContractFailure` naming ``requirement``.

    A :class:`ContractFailure` raised inside passes through unchanged.

    Args:
        requirement: What the code inside must do, e.g. ``"make_model() must build a
            model"``.

    Raises:
        ContractFailure: The code inside raised another exception (chained).

    Example:
        >>> try:
        ...     with requiring("make_model() must build a model"):
        ...         raise RuntimeError("out of memory")
        ... except ContractFailure as failure:
        ...     print(failure)
        make_model() must build a model; but it raised RuntimeError: out of memory
    """
    __tracebackhide__ = True
    try:
        yield
    except ContractFailure:
        raise
    except Exception as exc:
        raise ContractFailure(f"{requirement}; but it raised {describe_exception(exc)}") from exc
