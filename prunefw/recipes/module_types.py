"""Module class names in recipes, looked up without importing anything.

A recipe is data, so naming a class in it must not run code. ``module_types`` and
``module_type`` take the name of a ``torch.nn`` class (``"Linear"``) or the dotted
path of a class (``"mypackage.layers.MyBlock"``):

* a plain name must be a ``torch.nn`` module class;
* a dotted name is looked up only among the modules already imported
  (``sys.modules``). While its module is not imported (a recipe is read before the
  model is built), only its top-level package is checked to be installed, and
  the name stays a string that :func:`prunefw.targets.is_module_type` matches
  against the qualified names of the model's classes.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from torch import nn

from prunefw.recipes.messages import did_you_mean, recipe_error

__all__ = ["find_module_class", "module_type_matchers", "torch_module_names"]

_MISSING = object()


def torch_module_names() -> list[str]:
    """Return the names of the ``torch.nn`` module classes, sorted (for suggestions)."""
    return sorted(
        name
        for name, obj in vars(nn).items()
        if isinstance(obj, type) and issubclass(obj, nn.Module)
    )


def find_module_class(name: str) -> type[nn.Module] | None:
    """Return the module class ``name`` names, without importing anything.

    Args:
        name: ``"Linear"`` (a ``torch.nn`` class) or a dotted path such as
            ``"torch.nn.Conv1d"`` or ``"mypackage.layers.MyBlock"``.

    Returns:
        The class, or ``None`` if the module of a dotted name is not imported (yet).

    Raises:
        LookupError: ``name`` does not name an ``nn.Module`` subclass, or the
            top-level package of a dotted name is not installed; the message says why.

    Example:
        >>> find_module_class("Linear"), find_module_class("torch.nn.Conv1d")
        (<class 'torch.nn.modules.linear.Linear'>, <class 'torch.nn.modules.conv.Conv1d'>)
        >>> find_module_class("Linaer")
        Traceback (most recent call last):
        ...
        LookupError: torch.nn has no module class 'Linaer'
    """
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise LookupError(f"{name!r} is not a class name or a dotted path to one")
    if "." in name:
        module_name, _, attribute = name.rpartition(".")
        module = sys.modules.get(module_name)
        if module is None:
            _check_installed(module_name.partition(".")[0])
            return None
        obj = vars(module).get(attribute, _MISSING)
        if obj is _MISSING:
            raise LookupError(f"module {module_name!r} has no attribute {attribute!r}")
    else:
        obj = vars(nn).get(name, _MISSING)
        if obj is _MISSING:
            raise LookupError(f"torch.nn has no module class {name!r}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise LookupError(f"{name!r} is {obj!r}, not an nn.Module subclass")
    return obj


def _check_installed(package: str) -> None:
    """Raise :class:`LookupError` if no top-level module ``package`` can be found.

    Finding a top-level module's spec searches the import path; it runs none of
    the module's code.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise LookupError(f"cannot import {package!r}: no such module is installed")


def module_type_matchers(
    names: Sequence[str], source: str, where: str, key: str
) -> tuple[type[nn.Module] | str, ...]:
    """Turn a recipe's class names into what :func:`~prunefw.targets.select_targets` takes.

    Args:
        names: The names, as written in the recipe.
        source: The recipe's name in messages.
        where: The section or rule, in messages.
        key: The key the names are under (``"module_types"``, ``"module_type"``).

    Returns:
        For each name, its class if :func:`find_module_class` finds it, else the
        name itself (matched by :func:`~prunefw.targets.is_module_type` against the
        qualified names of the model's classes).

    Raises:
        RecipeError: A name that names no module class, with the fix.
    """
    matchers: list[type[nn.Module] | str] = []
    for name in names:
        try:
            cls = find_module_class(name)
        except LookupError as exc:
            raise recipe_error(
                source,
                where,
                f"{key}: {exc}",
                f"{did_you_mean(name, torch_module_names())}use the name of a torch.nn class "
                "(Linear, Conv2d, ...) or the dotted import path of your own class "
                "(mypackage.layers.MyBlock)",
            ) from None
        matchers.append(name if cls is None else cls)
    return tuple(matchers)
