"""Checksums of the tensors in the files prunefw writes: computing, storing, verifying them.

Every file prunefw writes carries a sha256 checksum of each tensor (its dtype,
shape and bytes, :func:`tensor_checksum`) under :data:`CHECKSUM_KEY`: in a
safetensors file's (or each shard's) metadata, in a PyTorch file's root
``_metadata`` entry. Reading verifies them (:func:`_verify`, called by
:mod:`prunefw.cli._reading`): a changed byte, a renamed, lost or added tensor is a
:class:`~prunefw.errors.CheckpointError` naming the file and the tensor. Files
without checksums (written by anything else) load as before. The files another
library writes into a model directory get theirs afterwards (:func:`add_checksums`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from prunefw.cli._loading import _CORRUPT_FIX, SAFETENSORS_SUFFIX, _safetensors
from prunefw.errors import CheckpointError, exception_reason

__all__ = [
    "CHECKSUM_KEY",
    "add_checksums",
    "tensor_checksum",
]

#: Metadata key of the tensors' checksums in the files prunefw writes: a JSON object
#: ``{"features.0.weight": "<sha256 hex digest>", ...}`` (see :func:`tensor_checksum`),
#: in a safetensors file's (or shard's) metadata and in a PyTorch file's root
#: ``_metadata`` entry, beside the history. Verified by :func:`read_checkpoint`.
CHECKSUM_KEY = "prunefw.sha256"


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
                metadata[CHECKSUM_KEY] = _checksums(_FileTensors(handle))
        except Exception as exc:
            raise CheckpointError(f"{file}: cannot be read back: {exception_reason(exc)}") from exc
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
