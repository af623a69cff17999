"""Saving: :func:`save_compressed` writes a pruned model in a compressed-tensors sparse format."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ._atomic import _atomic_file, _check_directory, _write_directory
from ._codec import _bitmask_bytes, _compress_24, _compress_bitmask, _is_24
from ._errors import ExportError, NothingToExportError, NotTwoFourError
from ._extras import _ct_config, _ct_helpers, _safetensors, _transformers_model
from ._formats import ALIASES_KEY, BITMASK, CONFIG_KEY, FORMATS, SPARSE_24, WEIGHTS_NAME
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
            ``.safetensors`` file), or a directory holding other weight files.
        MissingExtraError: compressed-tensors or safetensors is not installed.

    Nothing is written unless every check passes; files are written next to their
    destination and then renamed into place.
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
        files = _write_directory(target, model, config, write_weights)
        weights = target / WEIGHTS_NAME
    else:
        _atomic_file(target, write_weights)
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
