"""How a recipe reports a problem: ``<source>: [<where>] <problem>. Fix: <how>``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from prunefw.errors import RecipeError

__all__ = ["did_you_mean", "recipe_error"]


def recipe_error(source: str, where: str, problem: str, fix: str) -> RecipeError:
    """Return the error for a problem in a recipe (the caller raises it).

    Args:
        source: The recipe's name in messages (its file name).
        where: The section or rule: ``"global"``, ``"layer #2"``, ``"schedule"``, ...
        problem: What is wrong.
        fix: How to fix it.

    Returns:
        The :class:`~prunefw.errors.RecipeError`, not raised.

    Example:
        >>> print(recipe_error("r.toml", "layer #2", "unknown key 'mtch'", "use 'match'"))
        r.toml: [layer #2] unknown key 'mtch'. Fix: use 'match'
    """
    return RecipeError(f"{source}: [{where}] {problem}. Fix: {fix}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Suggest the choice closest to ``word``, as the start of a fix.

    Returns:
        ``"did you mean '<choice>'? "``, or ``""`` if no choice is close.

    Example:
        >>> did_you_mean("mtch", ["match", "module_type"])
        "did you mean 'match'? "
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""
