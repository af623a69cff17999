"""Calibration files (``--calibration``): the inputs criteria that need activations run on.

One tensor of inputs (split into batches), or a list of batches (tensors, tuples
of them, or dicts of keyword arguments), saved with ``torch.save`` or as a
one-tensor ``.safetensors`` file; read without unpickling objects (see
:mod:`prunefw.cli._loading`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from prunefw.cli._loading import SAFETENSORS_SUFFIX, _torch_load
from prunefw.cli._reading import read_checkpoint
from prunefw.errors import CheckpointError

__all__ = ["read_calibration"]

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
