"""Argument checks shared by the built-in criteria and the gradual schedule."""

from __future__ import annotations

import math
import numbers

from prunefw.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["as_float", "check_amount", "check_fraction", "check_seed", "count_to_prune"]


def as_float(value: numbers.Real, argument: str, owner: str) -> float:
    """Return ``float(value)``, refusing numbers too large for a float (e.g. ``10**400``).

    Raises:
        InvalidArgumentError: ``value`` does not fit a float.
    """
    try:
        return float(value)
    except OverflowError:
        digits = len(str(abs(int(value)))) if isinstance(value, numbers.Integral) else None
        shown = f"<an int of {digits} digits>" if digits else repr(value)
        raise InvalidArgumentError(
            f"{owner}({argument}={shown}): too large for a float (max about 1.8e308)"
        ) from None


#: The seeds ``torch.Generator.manual_seed`` takes.
SEED_RANGE = (-(2**63), 2**64 - 1)


def check_seed(value: object, argument: str, owner: str) -> int | None:
    """Return ``value`` as an int seed torch accepts, or ``None``.

    Raises:
        InvalidTypeError: Not an int (bools are refused) or None.
        InvalidArgumentError: Outside ``[-2**63, 2**64 - 1]``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(
            f"{owner}({argument}={value!r}): expected an int or None, got {type(value).__name__}"
        )
    seed = int(value)
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise InvalidArgumentError(
            f"{owner}({argument}={value!r}): a seed must be in [-2**63, 2**64 - 1]"
        )
    return seed


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
    result = as_float(value, argument, owner)
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
