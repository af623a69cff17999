"""Loading one untrusted file: tensors only, never pickled objects, and failures that say why.

The base of the readers (:mod:`prunefw.cli._reading`, :mod:`prunefw.cli._calibration`):

* a PyTorch file is read with ``torch.load(path, map_location="cpu",
  weights_only=True)`` (:func:`_torch_load`), which refuses pickled Python objects.
  A state_dict file must hold a state_dict (a mapping of names to tensors), or a
  dict whose ``"state_dict"`` entry is one (the layout of many training
  checkpoints, :func:`_state_dict`). A whole pickled model (``torch.save(model)``),
  or anything else, is refused with a :class:`~prunefw.errors.CheckpointError`
  that says what was found and how to save a state_dict instead.
* ``*.safetensors`` files need the optional package ``safetensors``
  (:func:`_safetensors`).

A missing, unreadable, truncated or empty file is reported as such (:func:`_head`,
:func:`_safetensors_problem`), and so is one that cannot be read at all, naming the
file and the reader's reason (:func:`prunefw.errors.exception_reason`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunefw.errors import CheckpointError, exception_reason

__all__ = ["SAFETENSORS_SUFFIX"]

SAFETENSORS_SUFFIX = ".safetensors"

_SAVE_STATE_DICT = "save model.state_dict() instead: torch.save(model.state_dict(), path)"
_CORRUPT_FIX = "restore it from a copy or write it again"


def _safetensors(path: Path, action: str) -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError(
            f"{path}: {action} .safetensors files needs the optional package safetensors: "
            "pip install safetensors (or use a .pt file)"
        ) from None
    return safetensors


def _head(path: Path) -> bytes:
    """The first bytes of ``path`` (errors opening it are a :class:`CheckpointError`)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")
    return head


def _reraise_interrupts(exc: BaseException) -> None:
    """Let interrupts through; anything else a reader raises (a Rust panic too) is ours."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc


def _torch_load(path: Path, fix: str = _SAVE_STATE_DICT) -> Any:
    head = _head(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes, not ours to show
            return torch.load(path, map_location="cpu", weights_only=True)
    except BaseException as exc:
        _reraise_interrupts(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is not None:
            raise CheckpointError(
                f"{path} is not a state_dict: it holds pickled Python objects ({found.group(1)}),"
                " and prunefw never unpickles objects (it loads with torch.load(..., "
                f"weights_only=True)); {fix}"
            ) from None
        if head.startswith((b"PK\x03\x04", b"\x80")):  # a torch zip archive, a legacy pickle
            raise CheckpointError(
                f"{path} is truncated or corrupt: torch.load cannot read it "
                f"({exception_reason(exc)}); write it again or restore it from a copy"
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch state_dict file (torch.load failed with "
            f"{exception_reason(exc)}); prunefw reads files written with "
            "torch.save(model.state_dict(), path) and "
            f"{SAFETENSORS_SUFFIX} files"
        ) from None


def _state_dict(obj: object, path: Path) -> Mapping[str, Any]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of names to "
            f"tensors); {_SAVE_STATE_DICT}"
        )
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"{path} holds a dict with the key {key!r}, not a state_dict; {_SAVE_STATE_DICT}"
            )
        if not isinstance(value, torch.Tensor) and not key.endswith("_extra_state"):
            keys = ", ".join(map(repr, list(obj)[:6])) + (", ..." if len(obj) > 6 else "")
            nested = [
                k
                for k, v in obj.items()
                if isinstance(v, Mapping)
                and v
                and all(isinstance(t, torch.Tensor) for t in v.values())
            ]
            fix = (
                f"its entry {nested[0]!r} looks like a state_dict: save it alone, e.g. "
                f"torch.save(checkpoint[{nested[0]!r}], path)"
                if nested
                else "if one of its entries holds the model's state_dict, save that entry alone"
            )
            raise CheckpointError(
                f"{path} holds a dict ({keys}) whose entry {key!r} is not a tensor "
                f"({type(value).__name__}), so it is not a state_dict; {fix}"
            )
    return obj


def _safetensors_problem(path: Path, size: int, exc: BaseException) -> str:
    """Say why safetensors could not read ``path``: truncated, or corrupt and how."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = handle.read(min(length, 100_000_000)) if size >= 8 else b""
    if size < 8 or 8 + length > size:
        return (
            f"{path} is truncated or corrupt: it holds {size} bytes, too few for the header "
            f"its first bytes announce; {_CORRUPT_FIX}"
        )
    try:
        entries = json.loads(header)
        end = max(
            (int(v["data_offsets"][1]) for k, v in entries.items() if k != "__metadata__"),
            default=0,
        )
    except Exception:  # not even the header reads: the message of safetensors says why
        end = 0
    if 8 + length + end > size:
        return (
            f"{path} is truncated: it holds {size} bytes, its header describes "
            f"{8 + length + end}; {_CORRUPT_FIX}"
        )
    return (
        f"{path} is corrupt: it cannot be read as a safetensors file "
        f"({exception_reason(exc)}); {_CORRUPT_FIX}"
    )
