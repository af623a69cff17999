"""The optional dependencies (the ``export`` extra), imported only when a function runs."""

from __future__ import annotations

import sys
from types import ModuleType

from torch import nn

from ._errors import MissingExtraError

#: How to install what this package needs (named in error messages).
PIP_EXPORT = "pip install 'prunefw[export]'"


def _import(name: str, what: str) -> ModuleType:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs the optional package {name.split('.')[0].replace('_', '-')} "
            f"({type(exc).__name__}: {exc}); install it with {PIP_EXPORT}"
        ) from exc


def _safetensors(what: str) -> ModuleType:
    return _import("safetensors.torch", what)


def _ct_config(what: str) -> ModuleType:
    return _import("compressed_tensors.config", what)


def _ct_helpers(what: str) -> ModuleType:
    return _import("compressed_tensors.utils.helpers", what)


def _transformers_model(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (transformers is not imported)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    base = getattr(transformers, "PreTrainedModel", None)
    return isinstance(base, type) and isinstance(model, base)
