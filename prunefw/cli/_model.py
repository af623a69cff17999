"""Building the model named on the command line: ``package.module:factory``.

``--model`` names a callable (a function or an ``nn.Module`` class) that takes no
arguments and returns the model: ``prunefw.examples:digits_mlp``,
``mypackage.models:ResNet``, or a file, ``path/to/models.py:build``. The current
directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from prunefw.errors import InvalidArgumentError

__all__ = ["build_model", "model_spec"]


def model_spec(text: str) -> str:
    """Check the form ``module:attribute`` (an argparse ``type=``: exit 2 otherwise).

    Example:
        >>> model_spec("prunefw.examples:digits_mlp")
        'prunefw.examples:digits_mlp'
    """
    module, sep, attribute = text.rpartition(":")
    if not sep or not module or not attribute or not attribute.replace(".", "_").isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not of the form package.module:factory (e.g. "
            "prunefw.examples:digits_mlp, or path/to/models.py:build)"
        )
    return text


def _import(module_name: str) -> ModuleType:
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise InvalidArgumentError(f"--model: no such file {module_name!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:  # pragma: no cover - .py files always load
            raise InvalidArgumentError(f"--model: cannot import {module_name!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: local modules are importable
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        itself = (
            exc.name is None or module_name == exc.name or module_name.startswith(exc.name + ".")
        )
        missing = "" if itself else f" (it needs {exc.name!r}, which is not installed)"
        raise InvalidArgumentError(
            f"--model: cannot import module {module_name!r}{missing}: {exc}; check the "
            "spelling, install the package, or run from the directory that holds it"
        ) from exc


def build_model(spec: str) -> nn.Module:
    """Import ``spec`` (``module:attribute``), call it without arguments, return the model.

    Raises:
        InvalidArgumentError: The module cannot be imported, has no such attribute,
            the attribute is not callable, calling it failed, or it did not return
            an ``nn.Module``. The message is one line; the original exception is
            chained (``--debug`` shows it).

    Example:
        >>> type(build_model("prunefw.examples:digits_mlp")).__name__
        'DigitsMLP'
    """
    module_name, _, attribute = model_spec(spec).rpartition(":")
    module = _import(module_name)
    obj: object = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidArgumentError(
                f"--model: {module_name!r} has no attribute {attribute!r}{hint}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidArgumentError(
            f"--model: {spec} is not callable ({type(obj).__name__} {obj!r}); name a function "
            "or class that returns the model"
        )
    try:
        model = obj()
    except Exception as exc:
        raise InvalidArgumentError(
            f"--model: calling {spec}() failed: {type(exc).__name__}: {exc} (the factory must "
            "take no arguments)"
        ) from exc
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"--model: {spec}() returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--model MODULE:FACTORY`` option shared by ``prune`` and ``report``."""
    parser.add_argument(
        "--model",
        required=True,
        type=model_spec,
        metavar="MODULE:FACTORY",
        help="import path of a callable that returns the model, e.g. prunefw.examples:digits_mlp",
    )
