"""Writing checkpoints (``--out``): a state_dict file, or a model directory of safetensors shards.

Writing is atomic (see :mod:`prunefw._atomic`): the file is written next to
its destination, then renamed, so an interrupted run never leaves a truncated
checkpoint. The format follows the suffix, like reading; the history goes into
the state_dict's metadata (see :mod:`prunefw.history`), so the file stays a plain
state_dict; the tensors' checksums go with it (see :mod:`prunefw.cli._checksums`).
A directory (:func:`write_directory`) is written into a temporary directory next
to it, then renamed into place (or, if it exists, moved in file by file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from prunefw._atomic import (
    atomic_directory,
    atomic_file,
    check_writable_directory,
    output_path,
)
from prunefw.checkpoint import ALIASES_KEY
from prunefw.cli._checksums import CHECKSUM_KEY, _checksums
from prunefw.cli._loading import SAFETENSORS_SUFFIX, _safetensors
from prunefw.cli._reading import _SAFE_INDEX, _SAFE_WEIGHTS, HISTORY_FILE
from prunefw.errors import CheckpointError
from prunefw.history import METADATA_KEY, PruningHistory

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "check_directory_output",
    "is_directory_path",
    "shard_size",
    "write_checkpoint",
    "write_directory",
    "write_shards",
]

#: ``--max-shard-size`` when not given (huggingface_hub's default).
DEFAULT_MAX_SHARD_SIZE = 5_000_000_000

#: Files of a previous save that a new one replaces (the rest of a directory is kept).
_STALE = re.compile(
    r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|"
    + re.escape(HISTORY_FILE)
)
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


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
    :func:`prunefw._atomic.atomic_file`.

    Raises:
        CheckpointError: safetensors is missing, or cannot store this state_dict
            (e.g. tensors that share memory); ``path`` cannot be written (see
            :func:`prunefw._atomic.check_file_output`), or the write failed.
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

        atomic_file(path, write_safetensors)
        return
    data = history.attach(state_dict)
    data._metadata[""][CHECKSUM_KEY] = _checksums(data)  # type: ignore[attr-defined]
    atomic_file(path, lambda tmp: _torch_save(data, tmp))


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
    Tensors that share memory are written once (see
    :data:`prunefw.checkpoint.ALIASES_KEY`), so
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
    check_writable_directory(target)
    _hub(target)
    _safetensors(target, "writing")
    return target


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
    or SIGHUP the temporary directory is removed (see
    :func:`prunefw._atomic.atomic_directory`).

    Raises:
        CheckpointError: As :func:`check_directory_output`, or the write failed.
    """
    target = check_directory_output(path)

    def fill_with_history(tmp: Path) -> None:
        fill(tmp)
        if history:
            (tmp / HISTORY_FILE).write_text(history.to_json(), encoding="utf-8")

    atomic_directory(target, fill_with_history, stale=_STALE)
