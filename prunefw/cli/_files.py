"""Checkpoint files for the command line: state_dicts only, never arbitrary pickles.

Reading (``--checkpoint``):

* ``*.safetensors``: :func:`safetensors.torch.load_file` (needs the optional
  package ``safetensors``); the criterion history comes from the file's metadata.
* anything else: ``torch.load(path, map_location="cpu", weights_only=True)``,
  which refuses pickled Python objects. The file must hold a state_dict (a mapping
  of names to tensors), or a dict whose ``"state_dict"`` entry is one (the layout
  of many training checkpoints). A whole pickled model (``torch.save(model)``),
  or anything else, is refused with a :class:`~prunefw.errors.CheckpointError`
  that says what was found and how to save a state_dict instead.

Writing (``--out``) is atomic: the file is written next to its destination, then
renamed, so an interrupted run never leaves a truncated checkpoint. The format
follows the suffix, like reading; the history goes into the state_dict's metadata
(see :mod:`prunefw.history`), so the file stays a plain state_dict.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunefw.errors import CheckpointError
from prunefw.history import METADATA_KEY, PruningHistory

__all__ = [
    "SAFETENSORS_SUFFIX",
    "Checkpoint",
    "read_calibration",
    "read_checkpoint",
    "write_checkpoint",
]

SAFETENSORS_SUFFIX = ".safetensors"
_SAVE_STATE_DICT = "save model.state_dict() instead: torch.save(model.state_dict(), path)"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds.

    Attributes:
        state_dict: The tensors by state_dict key.
        history: The criterion history stored with them (empty if none).
    """

    state_dict: Mapping[str, Any]
    history: PruningHistory


def _safetensors(path: Path, action: str) -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError(
            f"{path}: {action} .safetensors files needs the optional package safetensors: "
            "pip install safetensors (or use a .pt file)"
        ) from None
    return safetensors


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes, not ours to show
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is not None:
            raise CheckpointError(
                f"{path} is not a state_dict: it holds pickled Python objects ({found.group(1)}),"
                " and prunefw never unpickles objects (it loads with torch.load(..., "
                f"weights_only=True)); {_SAVE_STATE_DICT}"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a PyTorch state_dict file (torch.load failed with {reason}); "
            f"prunefw reads files written with torch.save(model.state_dict(), path) and "
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


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a state_dict file (``.pt``-style or ``.safetensors``) and its history.

    Raises:
        CheckpointError: Missing or unreadable file, pickled objects, or content
            that is not a state_dict; the message says what to do instead.
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        safetensors = _safetensors(path, "reading")
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        try:
            tensors = safetensors.torch.load_file(str(path), device="cpu")
            with safetensors.safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as exc:
            raise CheckpointError(f"{path} cannot be read as a safetensors file: {exc}") from None
        text = metadata.get(METADATA_KEY)
        history = PruningHistory() if text is None else PruningHistory.from_json(text)
        return Checkpoint(OrderedDict(tensors), history)
    obj = _torch_load(path)
    state_dict = _state_dict(obj, path)
    history = PruningHistory.from_state_dict(state_dict)
    return Checkpoint(state_dict, history)


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_checkpoint(
    path: str | Path, state_dict: Mapping[str, Any], history: PruningHistory
) -> None:
    """Write ``state_dict`` with ``history`` to ``path``, atomically.

    ``.safetensors`` files are written with safetensors (history in the file's
    metadata); anything else with :func:`torch.save` (history in the state_dict's
    ``_metadata``, see :mod:`prunefw.history`).

    Raises:
        CheckpointError: safetensors is missing, or cannot store this state_dict
            (e.g. tensors that share memory).
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        safetensors = _safetensors(path, "writing")
        tensors = {}
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(
                    f"{path}: safetensors stores tensors only, and {key!r} is a "
                    f"{type(value).__name__}; write a .pt file instead"
                )
            tensors[key] = value.detach().contiguous()
        metadata = {METADATA_KEY: history.to_json()} if history else None

        def write_safetensors(tmp: Path) -> None:
            try:
                safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
            except Exception as exc:
                raise CheckpointError(
                    f"{path}: safetensors cannot store this state_dict ({exc}); write a .pt "
                    "file instead"
                ) from None

        _atomic(path, write_safetensors)
        return
    data = history.attach(state_dict)
    _atomic(path, lambda tmp: torch.save(data, tmp))


def read_calibration(path: str | Path, batch_size: int) -> list[torch.Tensor]:
    """Read calibration inputs: one tensor (split into batches along dim 0) or a list of batches.

    A ``.safetensors`` file must hold exactly one tensor; a torch file may hold a
    tensor or a list/tuple of tensors (each one batch, used as is).

    Raises:
        CheckpointError: The file does not hold tensors of that form.
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        tensors = read_checkpoint(path).state_dict
        if len(tensors) != 1:
            raise CheckpointError(
                f"{path}: a calibration .safetensors file holds exactly one tensor (the "
                f"inputs, batch dimension first), found {len(tensors)}"
            )
        obj: object = next(iter(tensors.values()))
    else:
        obj = _torch_load(path)
    if isinstance(obj, torch.Tensor):
        if obj.dim() == 0 or len(obj) == 0:
            raise CheckpointError(f"{path}: the calibration tensor holds no samples")
        return list(obj.split(batch_size))
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return list(obj)
    raise CheckpointError(
        f"{path}: calibration data must be a tensor of inputs (batch dimension first) or a "
        f"list of input batches saved with torch.save, got {type(obj).__name__}"
    )
