"""Checkpoint files for the command line: state_dicts only, never arbitrary pickles.

Reading (``--checkpoint``):

* ``*.safetensors``: :func:`safetensors.torch.load_file` (needs the optional
  package ``safetensors``); the criterion history comes from the file's metadata.
* a directory: a Hugging Face model directory, as ``save_pretrained`` or
  ``prunefw prune --out DIR/`` write it: ``model.safetensors.index.json`` and its
  shards, else ``model.safetensors``, else ``pytorch_model.bin.index.json`` and its
  shards, else ``pytorch_model.bin`` (read like any PyTorch file, below). Tensors
  that prunefw stored once for several keys (tied weights, see
  :data:`ALIASES_KEY`) get all their keys back; the history is in
  :data:`HISTORY_FILE`.
* anything else: ``torch.load(path, map_location="cpu", weights_only=True)``,
  which refuses pickled Python objects. The file must hold a state_dict (a mapping
  of names to tensors), or a dict whose ``"state_dict"`` entry is one (the layout
  of many training checkpoints). A whole pickled model (``torch.save(model)``),
  or anything else, is refused with a :class:`~prunefw.errors.CheckpointError`
  that says what was found and how to save a state_dict instead.

Every file prunefw writes carries a sha256 checksum of each tensor (its dtype,
shape and bytes, :func:`tensor_checksum`) under :data:`CHECKSUM_KEY`: in a
safetensors file's (or each shard's) metadata, in a PyTorch file's root
``_metadata`` entry. Reading verifies them: a changed byte, a renamed, lost or
added tensor is a :class:`~prunefw.errors.CheckpointError` naming the file and
the tensor. Files without checksums (written by anything else) load as before. A
truncated or empty file is reported as such.

Writing (``--out``) is atomic: the file is written next to its destination, then
renamed, so an interrupted run never leaves a truncated checkpoint. The format
follows the suffix, like reading; the history goes into the state_dict's metadata
(see :mod:`prunefw.history`), so the file stays a plain state_dict. A directory
(:func:`write_directory`) is written into a temporary directory next to it, then
renamed into place (or, if it exists, moved in file by file). An existing file
keeps its mode; a symlink is written through (:func:`output_path`); errors name
the output, never the temporary file; SIGTERM and SIGHUP remove the temporary
file before the process ends by them; what SIGKILL leaves is removed by a later
write when that is safe (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunefw.errors import CheckpointError, PrunefwError
from prunefw.history import METADATA_KEY, PruningHistory
from prunefw.reparametrization import split_reparametrized_key

__all__ = [
    "ALIASES_KEY",
    "CHECKSUM_KEY",
    "DEFAULT_MAX_SHARD_SIZE",
    "HISTORY_FILE",
    "SAFETENSORS_SUFFIX",
    "STALE_AFTER",
    "Checkpoint",
    "add_checksums",
    "check_directory_output",
    "check_file_output",
    "directory_has_masks",
    "is_directory_path",
    "output_path",
    "read_calibration",
    "read_checkpoint",
    "read_directory_history",
    "remove_stale_temporaries",
    "shard_size",
    "tensor_checksum",
    "verify_directory",
    "write_checkpoint",
    "write_directory",
    "write_shards",
]

SAFETENSORS_SUFFIX = ".safetensors"

#: The criterion history of a model directory (JSON, :meth:`PruningHistory.to_json`).
HISTORY_FILE = "prunefw_history.json"

#: Safetensors metadata key of the tensors stored once for several state_dict keys:
#: a JSON object ``{"lm_head.weight": "transformer.wte.weight", ...}`` (alias: stored key).
ALIASES_KEY = "prunefw.aliases"

#: Metadata key of the tensors' checksums in the files prunefw writes: a JSON object
#: ``{"features.0.weight": "<sha256 hex digest>", ...}`` (see :func:`tensor_checksum`),
#: in a safetensors file's (or shard's) metadata and in a PyTorch file's root
#: ``_metadata`` entry, beside the history. Verified by :func:`read_checkpoint`.
CHECKSUM_KEY = "prunefw.sha256"

#: ``--max-shard-size`` when not given (huggingface_hub's default).
DEFAULT_MAX_SHARD_SIZE = 5_000_000_000

_SAFE_INDEX = "model.safetensors.index.json"
_SAFE_WEIGHTS = "model.safetensors"
_BIN_INDEX = "pytorch_model.bin.index.json"
_BIN_WEIGHTS = "pytorch_model.bin"
#: Files of a previous save that a new one replaces (the rest of a directory is kept).
_STALE = re.compile(
    r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|"
    + re.escape(HISTORY_FILE)
)
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})
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


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception (its first sentence, if the line is long)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(first) > 120 and ". " in first:
        first = first.split(". ")[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


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
                f"{path} is truncated or corrupt: torch.load cannot read it ({_reason(exc)}); "
                "write it again or restore it from a copy"
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch state_dict file (torch.load failed with {_reason(exc)}); "
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


def tensor_checksum(tensor: torch.Tensor) -> str | None:
    """Return the sha256 hex digest of a tensor's dtype, shape and bytes.

    The digest is over ``"<dtype>:<d0>,<d1>,...:"`` (``"float32:10,64:"``) followed
    by the tensor's bytes in C order (native byte order), so a changed byte, dtype
    or shape changes it, and a tensor has the same digest in a PyTorch file and in
    a safetensors file. Tensors without plain bytes (sparse, quantized, meta,
    nested, distributed) have none (``None``): they are written unchecked.

    Example:
        >>> tensor_checksum(torch.zeros(2, dtype=torch.int8))[:16]
        '0f2be2e033f8790f'
    """
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_meta:
        return None
    try:
        data = tensor.detach().resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
        raw = data.view(torch.uint8).numpy()
    except Exception:  # a tensor subclass or layout without plain bytes
        return None
    dtype = str(tensor.dtype).removeprefix("torch.")
    digest = hashlib.sha256(f"{dtype}:{','.join(map(str, tensor.shape))}:".encode())
    digest.update(raw.data)
    return digest.hexdigest()


def _checksums(tensors: Mapping[str, Any]) -> str:
    """The :data:`CHECKSUM_KEY` entry for ``tensors``: JSON of each tensor's digest."""
    sums = {}
    for key, value in tensors.items():
        digest = tensor_checksum(value) if isinstance(value, torch.Tensor) else None
        if digest is not None:
            sums[key] = digest
    return json.dumps(sums, separators=(",", ":"))


_CORRUPT_FIX = "restore it from a copy or write it again"


def _verify(path: Path, tensors: Mapping[str, Any], text: object, *, pytorch: bool) -> None:
    """Check ``tensors`` against the :data:`CHECKSUM_KEY` entry ``text`` (``None``: none).

    Raises:
        CheckpointError: The entry is not a checksum list, or names other tensors
            than the file holds, or a tensor's bytes, dtype or shape changed.
    """
    if text is None:
        return  # a file written by someone else: nothing to check against
    try:
        sums = json.loads(text) if isinstance(text, (str, bytes)) else None
    except (ValueError, RecursionError):
        sums = None
    if not isinstance(sums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in sums.items()
    ):
        raise CheckpointError(
            f"{path} is corrupt: its metadata entry {CHECKSUM_KEY!r} is not the JSON object of "
            f"tensor names and sha256 digests prunefw writes; {_CORRUPT_FIX}"
        )
    for key, expected in sums.items():
        value = tensors.get(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path} is corrupt: prunefw stored a checksum of the tensor {key!r}, which the "
                f"file does not hold (renamed or lost); {_CORRUPT_FIX}"
            )
        if tensor_checksum(value) != expected:
            edited = (
                " (if the tensor was changed on purpose by a program that kept prunefw's "
                f"metadata, delete the entry {CHECKSUM_KEY!r} of the state_dict's "
                "_metadata[''] and save it again)"
                if pytorch
                else ""
            )
            raise CheckpointError(
                f"{path} is corrupt: the tensor {key!r} does not match the sha256 checksum "
                "prunefw stored when it wrote the file (its bytes, dtype or shape changed); "
                f"{_CORRUPT_FIX}{edited}"
            )
    for key in tensors:
        value = tensors[key] if key not in sums else None
        if isinstance(value, torch.Tensor) and tensor_checksum(value):
            raise CheckpointError(
                f"{path} is corrupt: it holds the tensor {key!r}, which has no checksum among "
                f"those prunefw stored when it wrote the file; {_CORRUPT_FIX}"
            )


class _FileTensors(Mapping[str, Any]):
    """The tensors of an open safetensors file, each read when asked for (not kept)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._keys = list(handle.keys())

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


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
        f"{path} is corrupt: it cannot be read as a safetensors file ({_reason(exc)}); "
        f"{_CORRUPT_FIX}"
    )


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
    if (directory / _SAFE_INDEX).is_file():
        shards = sorted(set(_index(directory, _SAFE_INDEX).values()))
        return [directory / shard for shard in shards]
    if (directory / _SAFE_WEIGHTS).is_file():
        return [directory / _SAFE_WEIGHTS]
    if (directory / _BIN_INDEX).is_file():
        shards = sorted(set(_index(directory, _BIN_INDEX).values()))
        return [directory / shard for shard in shards]
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


# --- writing: atomic, mode kept, symlinks followed, nothing left behind on SIGTERM -------------

#: Temporary files and directories older than this (seconds since their last change),
#: of a process that is gone, are removed by the next write of the same output.
STALE_AFTER = 60.0

_TEMP_SUFFIX = ".prunefw-tmp"
_SIGNALS = ("SIGTERM", "SIGHUP")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"


def _temp_path(path: Path) -> Path:
    """``.NAME.HOST-PID.prunefw-tmp`` next to ``path``: whose it is, in its name."""
    return path.with_name(f".{path.name[:150]}.{_host()}-{os.getpid()}{_TEMP_SUFFIX}")


def output_path(path: str | Path) -> Path:
    """The path prunefw writes for ``--out``: ``path``, or the target of the symlink at it.

    An ``--out`` that is a symlink is written *through*: the file (or directory) it
    points to is replaced and the symlink stays, as shell redirection does. A
    dangling symlink gets its target created.

    Raises:
        CheckpointError: ``path`` is empty, or a symlink loop.

    Example:
        >>> output_path("pruned.pt")
        PosixPath('pruned.pt')
    """
    text = str(path)
    if not text.strip():
        raise CheckpointError("the output path is empty: name a file, or a directory ending with /")
    result = Path(text)
    if result.is_symlink():
        target = Path(os.path.realpath(result))
        if target.is_symlink():
            raise CheckpointError(
                f"{result} is a symlink that leads to no file (a loop of symlinks); remove it "
                "or choose another name"
            )
        result = target
    return result


def _existing_ancestor(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _check_parent(path: Path, what: str) -> None:
    """Check that the parent directories of ``path`` exist or can be created."""
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise CheckpointError(
            f"{path}: cannot write {what} there: {ancestor} is a file, not a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"{path}: cannot write {what} there: permission denied ({ancestor} is not writable)"
        )


def check_file_output(path: str | Path) -> Path:
    """Check that a checkpoint file can be written at ``path`` (before any work is done).

    Returns:
        The path to write (see :func:`output_path`).

    Raises:
        CheckpointError: ``path`` is empty, a directory, something other than a
            regular file (a device, a socket), a symlink loop, or under a file
            or an unwritable directory.
    """
    target = output_path(path)
    if target.is_dir():
        raise CheckpointError(
            f"{target} is a directory, so a checkpoint file cannot replace it; end the path "
            "with / to write a model directory into it, or choose a file name"
        )
    if target.exists() and not target.is_file():
        raise CheckpointError(
            f"{target} exists and is not a regular file; prunefw replaces regular files only: "
            "choose another name"
        )
    _check_parent(target, "a checkpoint")
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and, for a directory, what it holds."""
    newest = os.lstat(path).st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what killed runs left while writing ``path``; return what was removed.

    A run killed with SIGKILL (or a power cut) leaves its temporary file or
    directory, ``.NAME.HOST-PID.prunefw-tmp``, next to the output. One is removed
    only when all of this holds: its name is prunefw's for this output, written on
    this host; its process (PID) is gone; it is owned by the current user and is
    not a symlink; nothing in it changed for :data:`STALE_AFTER` seconds. Anything
    else is left alone.
    """
    path = Path(path)
    if os.name != "posix":  # os.kill(pid, 0) terminates processes elsewhere
        return []
    pattern = re.compile(
        rf"\.{re.escape(path.name[:150])}\.{re.escape(_host())}-(\d+){re.escape(_TEMP_SUFFIX)}"
    )
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        stale = path.parent / name
        try:
            info = os.lstat(stale)
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
                continue
            if time.time() - _last_change(stale) < STALE_AFTER:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(stale)
            else:
                stale.unlink()
        except OSError:
            continue
        removed.append(stale)
    return removed


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a temporary file existed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _clean_exit_on_signals(path: Path) -> Iterator[None]:
    """While writing ``path``: SIGTERM and SIGHUP clean up, then act as they would have.

    The signal becomes an exception, so the ``finally`` blocks of the writer
    remove the temporary file; then the previous handlers are restored and the
    signal is raised again: by default the process ends by it (exit status of
    SIGTERM). If the previous handler returns instead, the write is reported as
    interrupted. Signals that were ignored stay ignored; outside the main thread
    (where Python cannot set handlers) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    writing = [True]

    def handler(signum: int, frame: object) -> None:
        if not caught:  # the first one only: the cleanup itself is not interrupted
            caught.append(signum)
            if writing[0]:
                raise _Terminated(signum)

    previous: dict[int, Any] = {}
    for name in _SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN or old is None:  # ignored, or set outside Python: keep it
            continue
        previous[signum] = old
        signal.signal(signum, handler)
    written = False
    try:
        yield
        written = True
    except _Terminated:
        pass
    finally:
        writing[0] = False  # a signal from here on waits for the handlers to be restored
        for signum, old in previous.items():
            signal.signal(signum, old)
        if caught:
            signal.raise_signal(caught[0])  # the previous disposition acts: by default, exit
            if not written:
                raise CheckpointError(
                    f"{path}: not written: interrupted by {signal.Signals(caught[0]).name}"
                )


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or directory) to disk where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(
    path: Path, exc: BaseException, outcome: str = "nothing was written"
) -> CheckpointError:
    """One line for a failed write, naming the output (never the temporary file)."""
    if isinstance(exc, OSError):
        reason = exc.strerror or _reason(exc)
        if isinstance(exc, PermissionError):
            reason += f" (is {path.parent} writable?)"
    else:
        reason = _reason(exc)
    return CheckpointError(f"{path}: cannot write: {reason}; {outcome}")


def _atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write a file with ``write(tmp)``, then rename it to ``path``; return the path written.

    The temporary file is created next to the destination (exclusively, so no
    file or symlink of that name is followed), with the destination's mode if it
    exists (else the usual mode the umask gives); it is flushed to disk, then
    renamed over the destination in one step. A symlink ``path`` is written
    through (:func:`output_path`). On any error, Ctrl-C, SIGTERM or SIGHUP, the
    temporary file is removed and the destination is untouched.

    Raises:
        CheckpointError: See :func:`check_file_output`; or the write failed
            (no space, permissions): the message names ``path``, not the
            temporary file.
    """
    target = check_file_output(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    remove_stale_temporaries(target)
    tmp = _temp_path(target)
    created = False
    with _clean_exit_on_signals(target):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            created = True
            try:
                mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else None
                if mode is None:
                    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask
                else:
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)
            write(tmp)
            os.chmod(tmp, mode)  # writers that replace the file (safetensors) lose it
            _fsync(tmp)
            os.replace(tmp, target)
            created = False
            _fsync(target.parent)
        except (PrunefwError, _Terminated):
            raise
        except Exception as exc:
            raise _write_error(target, exc) from exc
        finally:
            if created:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    return target


def _torch_save(data: Any, tmp: Path) -> None:
    """``torch.save`` into an open file (the archive inside is not named after ``tmp``)."""
    with open(tmp, "wb") as handle:
        torch.save(data, handle)


def write_checkpoint(
    path: str | Path, state_dict: Mapping[str, Any], history: PruningHistory
) -> None:
    """Write ``state_dict`` with ``history`` to ``path``, atomically.

    ``.safetensors`` files are written with safetensors (history in the file's
    metadata); anything else with :func:`torch.save` (history in the state_dict's
    ``_metadata``, see :mod:`prunefw.history`); both with the checksums of the
    tensors (:data:`CHECKSUM_KEY`). An existing file is replaced in one step and
    keeps its mode; a symlink is written through (its target is replaced); see
    :func:`_atomic`.

    Raises:
        CheckpointError: safetensors is missing, or cannot store this state_dict
            (e.g. tensors that share memory); ``path`` cannot be written (see
            :func:`check_file_output`), or the write failed.
    """
    path = output_path(path)
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
        metadata = {CHECKSUM_KEY: _checksums(tensors)}
        if history:
            metadata[METADATA_KEY] = history.to_json()

        def write_safetensors(tmp: Path) -> None:
            try:
                safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
            except Exception as exc:
                if "IoError" in str(exc):  # no space, permissions: a failed write
                    raise
                raise CheckpointError(
                    f"{path}: safetensors cannot store this state_dict ({exc}); write a .pt "
                    "file instead"
                ) from None

        _atomic(path, write_safetensors)
        return
    data = history.attach(state_dict)
    data._metadata[""][CHECKSUM_KEY] = _checksums(data)  # type: ignore[attr-defined]
    _atomic(path, lambda tmp: _torch_save(data, tmp))


def is_directory_path(text: str | Path) -> bool:
    """Whether ``--out`` names a model directory: it ends with ``/`` or is an existing directory.

    Example:
        >>> is_directory_path("pruned/"), is_directory_path("pruned.pt")
        (True, False)
    """
    text = str(text)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def shard_size(text: str) -> int:
    """Parse ``--max-shard-size``: bytes, or a number with KB, MB, GB, TB (or KiB ... TiB).

    An argparse ``type=`` (exit 2 otherwise).

    Example:
        >>> shard_size("5GB"), shard_size("500 kb"), shard_size("2MiB"), shard_size("1000")
        (5000000000, 500000, 2097152, 1000)
    """
    match = _SIZE.fullmatch(text.strip())
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]) if match else 0
    if size <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a size like 5GB, 500MB or a number of bytes, got {text!r}"
        )
    return size


def _hub(path: Path) -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise CheckpointError(
            f"{path}: writing a model directory needs the optional packages of prunefw's "
            "transformers extra: pip install 'prunefw[transformers]'"
        ) from None
    return huggingface_hub


def _store_once(path: Path, state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the tensors to write, each storage once, and the aliases of the others.

    safetensors refuses tensors that share memory ("Some tensors share memory"), e.g.
    GPT-2's ``lm_head.weight``, which *is* ``transformer.wte.weight``. The same view
    of the same memory is written once and the other keys become aliases; another
    view of memory already written (a slice of it) is written as a copy.
    """
    tensors: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[str, int]] = set()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: a model directory stores tensors only (safetensors), and {key!r} is a "
                f"{type(value).__name__}; write a .pt file instead"
            )
        tensor = value.detach()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else 0
        if pointer:
            view = (
                str(tensor.device),
                pointer,
                tensor.storage_offset(),
                tuple(tensor.shape),
                tensor.stride(),
                tensor.dtype,
            )
            if view in views:
                aliases[key] = views[view]
                continue
            views[view] = key
            storage = (str(tensor.device), pointer)
            if storage in storages:
                tensor = tensor.clone()
            storages.add(storage)
        tensors[key] = tensor.contiguous()
    return tensors, aliases


def write_shards(
    directory: str | Path, state_dict: Mapping[str, Any], max_shard_size: int
) -> list[str]:
    """Write ``state_dict`` into ``directory`` as Hugging Face sharded safetensors.

    ``model.safetensors``, or ``model-00001-of-0000N.safetensors`` shards and
    ``model.safetensors.index.json`` when it is larger than ``max_shard_size``
    bytes (split by :func:`huggingface_hub.split_torch_state_dict_into_shards`).
    Tensors that share memory are written once (see :data:`ALIASES_KEY`), so
    :func:`read_checkpoint` gives back every key. Not atomic by itself: use it
    inside :func:`write_directory`.

    Returns:
        The names of the files written.

    Raises:
        CheckpointError: safetensors or huggingface_hub is missing, or a value is
            not a tensor.
    """
    directory = Path(directory)
    hub = _hub(directory)
    safetensors = _safetensors(directory / _SAFE_WEIGHTS, "writing")
    tensors, aliases = _store_once(directory, state_dict)
    split = hub.split_torch_state_dict_into_shards(
        tensors, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    metadata = {"format": "pt"}
    if aliases:
        metadata[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    written = []
    for filename, names in split.filename_to_tensors.items():
        shard = {name: tensors[name] for name in names}
        shard_metadata = {**metadata, CHECKSUM_KEY: _checksums(shard)}
        safetensors.torch.save_file(shard, str(directory / filename), metadata=shard_metadata)
        written.append(filename)
    if split.is_sharded:
        index = {"metadata": dict(split.metadata), "weight_map": split.tensor_to_filename}
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        (directory / _SAFE_INDEX).write_text(text, encoding="utf-8")
        written.append(_SAFE_INDEX)
    return written


def add_checksums(directory: str | Path) -> None:
    """Add :data:`CHECKSUM_KEY` to the metadata of every safetensors file in ``directory``.

    For the files another library wrote (``save_pretrained``) into the temporary
    directory of :func:`write_directory`: the checksums are computed from the
    files as written, one tensor at a time, and each file's header is rewritten
    with them (the tensor bytes are copied as they are, not loaded).

    Raises:
        CheckpointError: safetensors is missing or cannot read a file.
    """
    for file in sorted(Path(directory).glob(f"*{SAFETENSORS_SUFFIX}")):
        safetensors = _safetensors(file, "writing")
        try:
            with safetensors.safe_open(str(file), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                sums = {}
                keys = handle.keys()
                for key in keys:
                    digest = tensor_checksum(handle.get_tensor(key))
                    if digest is not None:
                        sums[key] = digest
        except Exception as exc:
            raise CheckpointError(f"{file}: cannot be read back: {_reason(exc)}") from exc
        metadata[CHECKSUM_KEY] = json.dumps(sums, separators=(",", ":"))
        rewritten = file.with_name(f".{file.name}.checksummed")
        with open(file, "rb") as source, open(rewritten, "wb") as target:
            length = int.from_bytes(source.read(8), "little")
            header = json.loads(source.read(length))
            header["__metadata__"] = metadata
            text = json.dumps(header, separators=(",", ":")).encode()
            text += b" " * (-len(text) % 8)  # safetensors aligns the data on 8 bytes
            target.write(len(text).to_bytes(8, "little") + text)
            shutil.copyfileobj(source, target, 1 << 24)
        os.replace(rewritten, file)


def check_directory_output(path: str | Path) -> Path:
    """Check that a model directory can be written at ``path`` (before any work is done).

    Returns:
        The directory to write (a symlink is followed, see :func:`output_path`).

    Raises:
        CheckpointError: ``path`` is empty, exists and is not a directory, is under
            a file or an unwritable directory, or safetensors or huggingface_hub is
            missing.
    """
    target = output_path(path)
    if target.exists() and not target.is_dir():
        raise CheckpointError(
            f"{target} exists and is not a directory; --out ending with / writes a model "
            "directory (remove the /, or choose another name)"
        )
    _check_parent(target, "a model directory")
    if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise CheckpointError(f"{target}: cannot write a model directory there: permission denied")
    _hub(target)
    _safetensors(target, "writing")
    return target


def _move_in(source: Path, destination: Path) -> None:
    """Replace ``destination`` with ``source`` in one step, keeping its mode if it exists."""
    if destination.is_file():
        os.chmod(source, stat.S_IMODE(destination.stat().st_mode))
    os.replace(source, destination)


def write_directory(
    path: str | Path, history: PruningHistory, fill: Callable[[Path], object]
) -> None:
    """Write a model directory: ``fill(tmp)`` writes its files, then they go into ``path``.

    ``fill`` writes into a new temporary directory next to ``path``; the history
    goes into :data:`HISTORY_FILE` beside them. If ``path`` does not exist, the
    temporary directory is renamed to it (atomic: the directory appears complete
    or not at all). If it exists, each file is moved in (each replaced
    atomically, the shards before their index, each keeping the mode of the file
    it replaces), then the weight files and the history of a previous save that
    the new one does not have are removed; other files (e.g. a tokenizer) are
    kept. A symlink ``path`` is written through. On any error, Ctrl-C, SIGTERM
    or SIGHUP the temporary directory is removed (see :func:`_atomic`).

    Raises:
        CheckpointError: As :func:`check_directory_output`, or the write failed.
    """
    target = check_directory_output(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    remove_stale_temporaries(target)
    tmp = _temp_path(target)
    created = False
    outcome = "nothing was written"
    with _clean_exit_on_signals(target):
        try:
            tmp.mkdir()
            created = True
            fill(tmp)
            if history:
                (tmp / HISTORY_FILE).write_text(history.to_json(), encoding="utf-8")
            for name in os.listdir(tmp):
                _fsync(tmp / name)
            if not target.exists():
                os.replace(tmp, target)
                created = False
                _fsync(target.parent)
                return
            names = sorted(os.listdir(tmp), key=lambda name: (name.endswith(".json"), name))
            outcome = "some files of the directory were replaced, the others not"
            for name in names:
                _move_in(tmp / name, target / name)
            for name in os.listdir(target):
                if name not in names and _STALE.fullmatch(name) and (target / name).is_file():
                    (target / name).unlink()
            _fsync(target)
        except (PrunefwError, _Terminated):
            raise
        except Exception as exc:
            raise _write_error(target, exc, outcome) from exc
        finally:
            if created:
                shutil.rmtree(tmp, ignore_errors=True)


_CALIBRATION_FORMS = (
    "calibration data must be a tensor of inputs (batch dimension first) or a list of input "
    "batches saved with torch.save; a batch is a tensor, a tuple or list of tensors "
    "(positional arguments) or a dict of keyword arguments such as "
    '{"input_ids": ..., "attention_mask": ...}'
)


def _calibration_batch(path: Path, index: int, batch: object) -> object:
    """Check one batch of a calibration list: tensors, tuples of them, or dicts of them."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in batch):
        return tuple(batch)
    if isinstance(batch, Mapping) and batch and all(isinstance(k, str) for k in batch):
        plain = (bool, int, float, str, type(None))
        wrong = [k for k, v in batch.items() if not isinstance(v, (torch.Tensor, *plain))]
        if not wrong:
            return dict(batch)
        return _bad_calibration(
            path,
            f"batch #{index} has the key {wrong[0]!r} whose value is a "
            f"{type(batch[wrong[0]]).__name__}, not a tensor",
        )
    return _bad_calibration(path, f"batch #{index} is a {type(batch).__name__}")


def _bad_calibration(path: Path, found: str) -> Any:
    raise CheckpointError(f"{path}: {_CALIBRATION_FORMS}; {found}")


def read_calibration(path: str | Path, batch_size: int) -> list[Any]:
    """Read calibration inputs: one tensor (split into batches along dim 0) or a list of batches.

    * A tensor, batch dimension first, is split into batches of ``batch_size``
      along dim 0; each batch keeps every dimension, so a ``(N, T)`` tensor of
      token ids gives ``(batch_size, T)`` batches (one batch if ``N <=
      batch_size``), never single rows.
    * A list or tuple is a list of batches, each used as is: a tensor (the
      model's one argument), a tuple or list of tensors (positional arguments),
      or a dict of keyword arguments (``{"input_ids": LongTensor(B, T), ...}``,
      values tensors or plain numbers, strings, booleans, ``None``).
    * A ``.safetensors`` file must hold exactly one tensor (the first form).

    Raises:
        CheckpointError: The file does not hold tensors of these forms, or holds
            pickled objects (e.g. a tokenizer's ``BatchEncoding``: save
            ``[dict(encoding)]`` instead).
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
        obj = _torch_load(
            path,
            fix="save tensors, lists of them or dicts of them, e.g. "
            "torch.save([dict(tokenizer(texts, return_tensors='pt'))], path)",
        )
    if isinstance(obj, torch.Tensor):
        if obj.dim() == 0 or len(obj) == 0:
            raise CheckpointError(f"{path}: the calibration tensor holds no samples")
        return list(obj.split(batch_size))
    if isinstance(obj, (list, tuple)) and obj:
        return [_calibration_batch(path, index, batch) for index, batch in enumerate(obj, 1)]
    if isinstance(obj, Mapping):
        return _bad_calibration(
            path,
            "got a dict: if it is one batch of keyword arguments, save it in a list, "
            "torch.save([batch], path)",
        )
    return _bad_calibration(path, f"got {type(obj).__name__}")
