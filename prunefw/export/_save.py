"""Saving: :func:`save_compressed` writes a pruned model in a compressed-tensors sparse format.

A ``.safetensors`` file, or a transformers model's directory (``config.json`` with
the compression config, ``model.safetensors``, ``generation_config.json``), written
atomically by :mod:`prunefw._atomic`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from prunefw._atomic import (
    atomic_directory,
    atomic_file,
    check_file_output,
    check_writable_directory,
)
from prunefw.checkpoint import ALIASES_KEY

from ._codec import _bitmask_bytes, _compress_24, _compress_bitmask, _is_24
from ._errors import ExportError, NothingToExportError, NotTwoFourError
from ._extras import _ct_config, _ct_helpers, _safetensors, _transformers_model
from ._formats import (
    _CONFIG_NAME,
    _OTHER_WEIGHTS,
    BITMASK,
    CONFIG_KEY,
    FORMATS,
    SPARSE_24,
    WEIGHTS_NAME,
)
from ._report import ExportReport
from ._state import _join, _Plain, _plain_state, _prefix


def save_compressed(
    model: nn.Module, path: str | os.PathLike[str], *, format: str | None = None
) -> ExportReport:
    """Write ``model``'s pruned weights compressed, in a compressed-tensors sparse format.

    The compressed weights are the pruned ``weight`` tensors of a masked model
    (those with ``weight_orig``/``weight_mask``, stored as ``orig * mask``: the
    mask's kept entries are the stored values, the mask the bitmask), or, for a
    permanent model (no masks), every ``weight`` with at least 2 dimensions whose
    zeros make the bitmask smaller than the dense tensor. Everything else is stored
    dense. A Parameter shared by several modules (tied weights) is stored once.

    Args:
        model: The pruned model; not modified.
        path: A ``.safetensors`` file, or, for a transformers ``PreTrainedModel``, a
            model directory (created if needed): ``config.json`` with the
            compression config as compressed-tensors writes it, ``model.safetensors``
            and, if the model has one, ``generation_config.json``.
        format: ``"sparse-bitmask"``, ``"sparse-24-bitmask"``, or ``None`` (the 2:4
            format if every compressed weight is 2:4, else the bitmask format).

    Returns:
        An :class:`ExportReport`: the format, the tensors, the file's size and the
        dense size.

    Raises:
        NothingToExportError: The model has no masks and no weight sparse enough
            to gain from compression.
        NotTwoFourError: ``format="sparse-24-bitmask"`` and a compressed weight is
            not 2:4 (the message names it).
        ExportError: An unknown format, or a path that does not fit the model (a
            model that is not a transformers model is written to one
            ``.safetensors`` file), or a directory holding other weight files, or a
            path that exists and is not a directory where a directory goes, or a
            directory where the file goes.
        MissingExtraError: compressed-tensors or safetensors is not installed.
        CheckpointError: ``path`` cannot be written (a special file where the file
            goes, a symlink loop, under a file or an unwritable directory), or the
            write failed (no space, permissions): the message names ``path``.

    Nothing is written unless every check passes. The write is atomic (see
    :mod:`prunefw._atomic`): a file is written next to its destination and then
    renamed into place (an existing file keeps its mode, a symlink is written
    through); a directory's files are written into a temporary directory next to
    it, then it is renamed into place or its files are moved in (other files in it
    are kept). On any error, Ctrl-C, SIGTERM or SIGHUP no temporary file is left behind.
    """
    if format is not None and format not in FORMATS:
        raise ExportError(f"format={format!r}: expected one of {', '.join(map(repr, FORMATS))}")
    target = Path(path)
    directory = target.suffix != ".safetensors"
    if directory and not _transformers_model(model):
        raise ExportError(
            f"{target}: a {type(model).__name__} (not a transformers PreTrainedModel) is written "
            "to one .safetensors file; give a path ending with .safetensors"
        )
    if directory:
        _check_directory(target)
    elif target.is_dir():
        raise ExportError(f"{target} is a directory; a .safetensors path names a file")
    else:
        check_file_output(target)
    what = "prunefw.export.save_compressed"
    safetensors = _safetensors(what)
    config_module = _ct_config(what)
    helpers = _ct_helpers(what)

    plain = _plain_state(model)
    masked = bool(plain.masks)
    candidates = _candidates(plain, masked)
    if not candidates:
        if masked:
            raise NothingToExportError(
                f"{type(model).__name__}: its pruned tensors ({', '.join(sorted(plain.masks))}) "
                "are not weights of at least 2 dimensions, which the sparse formats store; "
                "nothing to compress"
            )
        raise NothingToExportError(
            f"{type(model).__name__} has no pruning masks and no weight with enough zeros to "
            "compress: prune it first (e.g. prunefw.prune_model(model, 'magnitude', 0.5))"
        )
    chosen = _choose_format(candidates, format)
    tensors: dict[str, torch.Tensor] = {}
    compressed_bytes = dense_tensor_bytes = 0
    for key, value in plain.tensors.items():
        keep = candidates.get(key)
        if keep is None:
            tensors[key] = value.detach().cpu().contiguous()
            continue
        compress = _compress_24 if chosen == SPARSE_24 else _compress_bitmask
        prefix = _prefix(key)
        assert prefix is not None
        parts = compress(value.detach().cpu(), keep.cpu(), helpers)
        for name, part in parts.items():
            tensors[_join(prefix, name)] = part
            compressed_bytes += part.numel() * part.element_size()
        dense_tensor_bytes += value.numel() * value.element_size()
    dense_bytes = sum(v.numel() * v.element_size() for v in plain.tensors.values())
    config = _compression_config(config_module, chosen, candidates, plain)
    metadata = {"format": "pt", CONFIG_KEY: json.dumps(config, sort_keys=True)}
    if plain.aliases:
        metadata[ALIASES_KEY] = json.dumps(plain.aliases, sort_keys=True)

    def write_weights(file: Path) -> None:
        safetensors.save_file(tensors, str(file), metadata=metadata)

    if directory:
        names = atomic_directory(target, _directory_files(model, config, write_weights))
        files, weights = tuple(target / name for name in sorted(names)), target / WEIGHTS_NAME
    else:
        atomic_file(target, write_weights)
        files, weights = (target,), target
    return ExportReport(
        path=target,
        format=chosen,
        tensors=tuple(candidates),
        file_bytes=weights.stat().st_size,
        dense_bytes=dense_bytes,
        compressed_tensor_bytes=compressed_bytes,
        dense_tensor_bytes=dense_tensor_bytes,
        files=files,
    )


def _check_directory(path: Path) -> None:
    """Refuse a directory ``path`` that is not one, holds other weights, or cannot be written."""
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} exists and is not a directory")
    if path.is_dir():
        others = [name for name in _OTHER_WEIGHTS if (path / name).exists()]
        others += sorted(p.name for p in path.glob("model-*-of-*.safetensors"))
        if others:
            raise ExportError(
                f"{path} already holds other weights ({', '.join(others)}), which loaders "
                "would read instead of (or beside) the compressed model.safetensors; write to "
                "a new or empty directory"
            )
    check_writable_directory(path)


def _floating_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _directory_files(
    model: nn.Module, config: dict[str, Any], write_weights: Callable[[Path], None]
) -> Callable[[Path], None]:
    """What writes a model directory's files into ``tmp``: configs, then the weights."""

    def fill(tmp: Path) -> None:
        pretrained: Any = model  # a transformers PreTrainedModel
        pretrained.config.save_pretrained(str(tmp))
        data = json.loads((tmp / _CONFIG_NAME).read_text(encoding="utf-8"))
        data[CONFIG_KEY] = config
        dtype = _floating_dtype(model)
        if dtype is not None:  # as save_pretrained records it
            data["dtype"] = str(dtype).removeprefix("torch.")
        (tmp / _CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        generation = getattr(pretrained, "generation_config", None)
        if generation is not None and pretrained.can_generate():
            generation.save_pretrained(str(tmp))
        write_weights(tmp / WEIGHTS_NAME)

    return fill


def _candidates(plain: _Plain, masked: bool) -> dict[str, torch.Tensor]:
    """The weights to compress, with their keep-masks, in state_dict order."""
    found: dict[str, torch.Tensor] = {}
    for key, value in plain.tensors.items():
        if _prefix(key) is None or value.dim() < 2 or not value.is_floating_point():
            continue
        if masked:
            if key in plain.masks:
                found[key] = plain.masks[key]
            continue
        keep = value != 0
        if _bitmask_bytes(value, int(keep.sum())) < value.numel() * value.element_size():
            found[key] = keep
    return found


def _choose_format(candidates: Mapping[str, torch.Tensor], requested: str | None) -> str:
    if requested == BITMASK:
        return BITMASK
    for key, keep in candidates.items():
        ok, why = _is_24(keep)
        if not ok:
            if requested == SPARSE_24:
                raise NotTwoFourError(
                    f"{key} is not 2:4 sparse: {why}; write it with format='sparse-bitmask' "
                    "(or format=None, which picks the bitmask format), or prune it 2:4 first"
                )
            return BITMASK
    return SPARSE_24


def _compression_config(
    config_module: ModuleType,
    chosen: str,
    candidates: Mapping[str, torch.Tensor],
    plain: _Plain,
) -> dict[str, Any]:
    """The ``quantization_config`` block compressed-tensors writes for a sparse model."""
    numel = zeros = 0
    for value in plain.tensors.values():
        if value.is_floating_point():
            numel += value.numel()
            zeros += int((value == 0).sum())
    cls = (
        config_module.Sparse24BitMaskConfig if chosen == SPARSE_24 else config_module.BitmaskConfig
    )
    targets = [_prefix(key) for key in candidates]
    sparsity = cls(targets=targets, ignore=[], global_sparsity=zeros / numel if numel else 0.0)
    import compressed_tensors

    return {
        "quant_method": "compressed-tensors",
        "version": compressed_tensors.__version__,
        "sparsity_config": sparsity.model_dump(),
    }
