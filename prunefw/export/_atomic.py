"""Writing a checkpoint's files atomically: next to their destination, then renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import ExportError
from ._formats import _CONFIG_NAME, _OTHER_WEIGHTS, CONFIG_KEY, WEIGHTS_NAME


def _atomic_file(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_directory(path: Path) -> None:
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


def _floating_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _write_directory(
    path: Path, model: nn.Module, config: dict[str, Any], write_weights: Callable[[Path], None]
) -> tuple[Path, ...]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
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
        names = sorted(p.name for p in tmp.iterdir())
        if not path.exists():
            os.replace(tmp, path)
        else:
            for name in names:
                os.replace(tmp / name, path / name)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tuple(path / name for name in names)
