"""Argument checks shared by the built-in criteria and the gradual schedule."""

from __future__ import annotations

import math
import numbers

from prunefw.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["check_amount", "check_fraction", "count_to_prune"]


def check_fraction(value: object, argument: str, owner: str) -> float:
    """Return ``value`` as a float in ``[0, 1]`` or raise naming ``owner(argument=...)``.

    Args:
        value: The value given by the user.
        argument: The argument's name, for the message.
        owner: The class or function name, for the message.

    Returns:
        ``float(value)``.

    Raises:
        InvalidTypeError: ``value`` is not a real number (bools are refused).
        InvalidArgumentError: ``value`` is NaN or outside ``[0, 1]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(
            f"{owner}({argument}={value!r}): expected a float in [0, 1], got {type(value).__name__}"
        )
    result = float(value)
    if math.isnan(result) or not 0.0 <= result <= 1.0:
        raise InvalidArgumentError(
            f"{owner}({argument}={value!r}): must be a fraction in [0, 1] (e.g. 0.2 for 20%)"
        )
    return result


def check_amount(value: object, argument: str, owner: str) -> float | int:
    """Validate an amount the way torch's ``L1Unstructured`` does.

    Args:
        value: A float fraction in ``[0, 1]`` or a non-negative int count.
        argument: The argument's name, for the message.
        owner: The class or function name, for the message.

    Returns:
        The value, as ``float`` for fractions and ``int`` for counts.

    Raises:
        InvalidTypeError: ``value`` is neither a real number nor an integer.
        InvalidArgumentError: A fraction outside ``[0, 1]`` or a negative count.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(
            f"{owner}({argument}={value!r}): expected a float fraction in [0, 1] or a "
            f"non-negative int count, got {type(value).__name__}"
        )
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise InvalidArgumentError(f"{owner}({argument}={value!r}): a count must be >= 0")
        return int(value)
    return check_fraction(value, argument, owner)


def count_to_prune(amount: float | int, n: int, owner: str) -> int:
    """Convert an amount to a number of entries out of ``n``: ``round(amount * n)``.

    Args:
        amount: A validated amount (see :func:`check_amount`).
        n: How many entries are candidates.
        owner: Who asks, for the message.

    Returns:
        The exact number of entries to prune.

    Raises:
        InvalidArgumentError: An int count larger than ``n``.
    """
    if isinstance(amount, int):
        if amount > n:
            raise InvalidArgumentError(
                f"{owner}: amount={amount} is more than the {n} entries still unpruned"
            )
        return amount
    return round(amount * n)
