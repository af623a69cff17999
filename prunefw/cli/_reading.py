"""Reading checkpoints and model directories (``--checkpoint``): state_dicts only, never pickles.

* ``*.safetensors``: :func:`safetensors.torch.load_file` (needs the optional
  package ``safetensors``); the criterion history comes from the file's metadata.
* a directory: a Hugging Face model directory, as ``save_pretrained`` or
  ``prunefw prune --out DIR/`` write it: ``model.safetensors.index.json`` and its
  shards, else ``model.safetensors``, else ``pytorch_model.bin.index.json`` and its
  shards, else ``pytorch_model.bin`` (read like any PyTorch file, below). Tensors
  that prunefw stored once for several keys (tied weights, see
  :data:`prunefw.checkpoint.ALIASES_KEY`) get all their keys back; the history is in
  :data:`HISTORY_FILE`.
* anything else: ``torch.load(path, map_location="cpu", weights_only=True)``,
  which refuses pickled Python objects (see :mod:`prunefw.cli._loading`). The
  file must hold a state_dict, or a dict whose ``"state_dict"`` entry is one.

The checksums prunefw stored with the tensors are verified (see
:mod:`prunefw.cli._checksums`); files without checksums (written by anything else)
load as before. A truncated or empty file is reported as such.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunefw.checkpoint import ALIASES_KEY
from prunefw.cli._checksums import CHECKSUM_KEY, _FileTensors, _verify
from prunefw.cli._loading import (
    _CORRUPT_FIX,
    SAFETENSORS_SUFFIX,
    _head,
    _reraise_interrupts,
    _safetensors,
    _safetensors_problem,
    _state_dict,
    _torch_load,
)
from prunefw.errors import CheckpointError
from prunefw.history import METADATA_KEY, PruningHistory
from prunefw.reparametrization import split_reparametrized_key

__all__ = [
    "HISTORY_FILE",
    "Checkpoint",
    "directory_has_masks",
    "read_checkpoint",
    "read_directory_history",
    "verify_directory",
]

#: The criterion history of a model directory (JSON, :meth:`PruningHistory.to_json`).
HISTORY_FILE = "prunefw_history.json"

_SAFE_INDEX = "model.safetensors.index.json"
_SAFE_WEIGHTS = "model.safetensors"
_BIN_INDEX = "pytorch_model.bin.index.json"
_BIN_WEIGHTS = "pytorch_model.bin"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds.

    Attributes:
        state_dict: The tensors by state_dict key.
        history: The criterion history stored with them (empty if none).
    """

    state_dict: Mapping[str, Any]
    history: PruningHistory


def verify_directory(directory: str | Path) -> None:
    """Verify the checksums of a model directory's weight files, one tensor at a time.

    For a directory that another library loads (``from_pretrained``): the files
    prunefw wrote are checked first, so a corrupted one is an error, not a model
    with other weights. Files without checksums pass.

    Raises:
        CheckpointError: A weight file is unreadable, truncated or corrupt.
    """
    for file in _weight_files(Path(directory)):
        if file.suffix != SAFETENSORS_SUFFIX:
            _read_pytorch(file)
            continue
        safetensors = _safetensors(file, "reading")
        _head(file)
        try:
            with safetensors.safe_open(str(file), framework="pt") as handle:
                text = (handle.metadata() or {}).get(CHECKSUM_KEY)
                _verify(file, _FileTensors(handle), text, pytorch=False)
        except CheckpointError:
            raise
        except BaseException as exc:
            _reraise_interrupts(exc)
            raise CheckpointError(_safetensors_problem(file, file.stat().st_size, exc)) from None


def _root_metadata(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = getattr(state_dict, "_metadata", None)
    root = metadata.get("", {}) if isinstance(metadata, Mapping) else {}
    return root if isinstance(root, Mapping) else {}


def _read_pytorch(path: Path) -> Mapping[str, Any]:
    """Read a PyTorch state_dict file and verify its checksums (if prunefw wrote them)."""
    state_dict = _state_dict(_torch_load(path), path)
    _verify(path, state_dict, _root_metadata(state_dict).get(CHECKSUM_KEY), pytorch=True)
    return state_dict


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read one safetensors file, verify its checksums: its tensors and its metadata."""
    safetensors = _safetensors(path, "reading")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    _head(path)
    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except BaseException as exc:  # a panic of the Rust reader too (not an Exception)
        _reraise_interrupts(exc)
        raise CheckpointError(_safetensors_problem(path, path.stat().st_size, exc)) from None
    _verify(path, tensors, metadata.get(CHECKSUM_KEY), pytorch=False)
    return tensors, metadata


def _aliases(path: Path, metadata: Mapping[str, str]) -> dict[str, str]:
    text = metadata.get(ALIASES_KEY)
    if text is None:
        return {}
    try:
        aliases = json.loads(text)
    except (ValueError, RecursionError):
        aliases = None
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise CheckpointError(
            f"{path}: the metadata entry {ALIASES_KEY!r} is not a JSON object of key names"
        )
    return aliases


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a state_dict file (``.pt``-style or ``.safetensors``) or model directory.

    Raises:
        CheckpointError: Missing, unreadable, empty or truncated file, pickled
            objects, content that is not a state_dict, or tensors that do not
            match the checksums prunefw stored with them; the message names the
            file (and the tensor) and says what to do instead.
    """
    path = Path(path)
    if path.is_dir():
        return _read_directory(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        tensors, metadata = _read_safetensors(path)
        text = metadata.get(METADATA_KEY)
        history = PruningHistory() if text is None else PruningHistory.from_json(text, source=path)
        return Checkpoint(OrderedDict(tensors), history)
    state_dict = _read_pytorch(path)
    history = PruningHistory.from_state_dict(state_dict, source=path)
    return Checkpoint(state_dict, history)


def _index(directory: Path, name: str) -> dict[str, str]:
    """Read a Hugging Face ``*.index.json``: its ``weight_map`` (tensor name: shard file)."""
    index = directory / name
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise CheckpointError(f"{index} cannot be read as JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{index} cannot be read as JSON: nested too deeply") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f'{index} has no "weight_map" of tensor names to shard files, so it is not a '
            "Hugging Face checkpoint index"
        )
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or shard.startswith("."):
            raise CheckpointError(
                f"{index} names the shard {shard!r}, which is not a file of {directory} "
                "(prunefw reads shards next to their index only)"
            )
        if not (directory / shard).is_file():
            raise CheckpointError(f"{index} names the shard {shard!r}, which {directory} lacks")
    return weight_map


def _weight_map(directory: Path) -> tuple[Path | None, dict[str, str]]:
    """The index :func:`_weight_files` follows and its ``weight_map`` (none: ``None, {}``)."""
    if (directory / _SAFE_INDEX).is_file():
        return directory / _SAFE_INDEX, _index(directory, _SAFE_INDEX)
    if not (directory / _SAFE_WEIGHTS).is_file() and (directory / _BIN_INDEX).is_file():
        return directory / _BIN_INDEX, _index(directory, _BIN_INDEX)
    return None, {}


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory, in the order transformers prefers them."""
    index, weight_map = _weight_map(directory)
    if index is not None:
        return [directory / shard for shard in sorted(set(weight_map.values()))]
    if (directory / _SAFE_WEIGHTS).is_file():
        return [directory / _SAFE_WEIGHTS]
    if (directory / _BIN_WEIGHTS).is_file():
        return [directory / _BIN_WEIGHTS]
    raise CheckpointError(
        f"{directory} is a directory without model weights: prunefw reads {_SAFE_WEIGHTS}, "
        f"{_SAFE_INDEX} with its shards, or {_BIN_WEIGHTS} (as save_pretrained or prunefw "
        "prune --out DIR/ write them)"
    )


def _read_directory(directory: Path) -> Checkpoint:
    state_dict: OrderedDict[str, Any] = OrderedDict()
    aliases: dict[str, str] = {}
    history_text: tuple[Path, str] | None = None
    found_in: dict[str, str] = {}
    for file in _weight_files(directory):
        if file.suffix == SAFETENSORS_SUFFIX:
            tensors, metadata = _read_safetensors(file)
            aliases.update(_aliases(file, metadata))
            if history_text is None and METADATA_KEY in metadata:
                history_text = (file, metadata[METADATA_KEY])
        else:
            tensors = dict(_read_pytorch(file))
        for key, value in tensors.items():
            if key in state_dict:
                raise CheckpointError(f"{directory}: the tensor {key!r} is in two shards")
            state_dict[key] = value
            found_in[key] = file.name
    index, weight_map = _weight_map(directory)
    for key, shard in weight_map.items():
        if found_in.get(key) != shard:  # a lost tensor, or an index that lies
            raise CheckpointError(
                f"{index} lists the tensor {key!r} in {shard!r}, which does not hold it; the "
                f"directory is corrupt or incomplete: {_CORRUPT_FIX}"
            )
    for alias, stored in aliases.items():
        if stored not in state_dict:
            raise CheckpointError(
                f"{directory}: {alias!r} is stored as {stored!r}, which no shard holds"
            )
        state_dict.setdefault(alias, state_dict[stored])
    history = read_directory_history(directory)
    if not history and history_text is not None:  # e.g. a prunefw .safetensors file moved in
        history = PruningHistory.from_json(history_text[1], source=history_text[0])
    return Checkpoint(state_dict, history)


def read_directory_history(directory: str | Path) -> PruningHistory:
    """Read the criterion history of a model directory (empty if it has none).

    Raises:
        CheckpointError: :data:`HISTORY_FILE` is there but is not a history.
    """
    file = Path(directory) / HISTORY_FILE
    if not file.is_file():
        return PruningHistory()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: cannot read: {exc}") from None
    return PruningHistory.from_json(text, source=file)


def _keys(file: Path) -> set[str]:
    """The state_dict keys of one weight file, without reading its tensors if it can."""
    if file.suffix != SAFETENSORS_SUFFIX:
        return set(_state_dict(_torch_load(file), file))
    safetensors = _safetensors(file, "reading")
    try:
        with safetensors.safe_open(str(file), framework="pt") as handle:
            keys = set(handle.keys())
            metadata = handle.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{file} cannot be read as a safetensors file: {exc}") from None
    return keys | set(_aliases(file, metadata))


def directory_has_masks(directory: str | Path) -> bool:
    """Whether a model directory holds pruning masks (``weight_orig``/``weight_mask`` pairs).

    Such a directory is what ``prunefw prune --out DIR/`` writes without
    ``--permanent``: transformers' ``from_pretrained`` would re-initialise its
    pruned tensors, so prunefw builds the model from the config and loads the
    weights with :func:`prunefw.load_pruned_state_dict`.

    Raises:
        CheckpointError: The directory has no weights, or they cannot be read.
    """
    keys: set[str] = set()
    for file in _weight_files(Path(directory)):
        keys |= _keys(file)
    return any(split_reparametrized_key(key, keys) is not None for key in keys)
