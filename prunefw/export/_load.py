"""Loading: :func:`load_compressed` into a model, :func:`load_pretrained` for a model directory."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.checkpoint import ALIASES_KEY
from prunefw.reparametrization import (
    install_deepcopy_support,
    orig_name,
    refresh_pruned_tensors,
    release_mask_reference,
    share_mask,
    split_reparametrized_key,
)

from ._codec import _decompress
from ._errors import CompressedCheckpointError
from ._extras import _ct_helpers, _import, _safetensors
from ._formats import (
    _CONFIG_NAME,
    _PARAMS,
    BITMASK,
    CONFIG_KEY,
    FORMATS,
    SPARSE_24,
    WEIGHTS_NAME,
)
from ._state import _identity, _join


@dataclass
class _Loaded:
    tensors: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]  # plain key -> keep-mask, for decompressed weights
    aliases: dict[str, str]


def _read(path: Path, model: nn.Module, what: str) -> _Loaded:
    """Read and decompress a compressed checkpoint (nothing is loaded into the model)."""
    safetensors = _safetensors(what)
    helpers = _ct_helpers(what)
    config: dict[str, Any] | None = None
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        config_file = path / _CONFIG_NAME
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8")).get(CONFIG_KEY)
    else:
        weights = path
    if not weights.is_file():
        raise CompressedCheckpointError(
            f"{path}: no {WEIGHTS_NAME} in this directory"
            if path.is_dir()
            else f"no such file: {path}"
        )
    try:
        with safetensors.safe_open(str(weights), framework="pt") as file:
            metadata = file.metadata() or {}
            raw = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CompressedCheckpointError(f"{weights}: not a safetensors file ({exc})") from exc
    if config is None and CONFIG_KEY in metadata:
        config = json.loads(metadata[CONFIG_KEY])
    aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    sparsity = (config or {}).get("sparsity_config") or {}
    fmt = sparsity.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise CompressedCheckpointError(
            f"{path}: sparsity format {fmt!r} is not one prunefw reads ({', '.join(FORMATS)})"
        )
    prefixes = _compressed_prefixes(raw, model, sparsity)
    tensors: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for prefix in prefixes:
        params = _PARAMS[fmt] if fmt else _params_found(raw, prefix)
        parts = {}
        for name in params:
            key = _join(prefix, name)
            if key not in raw:
                raise CompressedCheckpointError(f"{weights}: {key} is missing")
            parts[name] = raw[key]
            used.add(key)
        label = _join(prefix, "weight")
        tensors[label], masks[label] = _decompress(parts, helpers, _join(str(weights), prefix))
    for key, value in raw.items():
        if key not in used:
            tensors[key] = value
    return _Loaded(tensors, masks, aliases)


def _params_found(raw: Mapping[str, torch.Tensor], prefix: str) -> tuple[str, ...]:
    return _PARAMS[BITMASK] if _join(prefix, "row_offsets") in raw else _PARAMS[SPARSE_24]


def _compressed_prefixes(
    raw: Mapping[str, torch.Tensor], model: nn.Module, sparsity: Mapping[str, Any]
) -> list[str]:
    """The module names whose weight the file stores compressed."""
    present = [key[: -len(".compressed")] for key in raw if key.endswith(".compressed")]
    present += [""] if "compressed" in raw else []
    targets = sparsity.get("targets")
    if not targets:
        return [p for p in present if _join(p, "bitmask") in raw and _join(p, "shape") in raw]
    match = _import("compressed_tensors.utils.match", "prunefw.export.load_compressed")
    matched = {
        name for name, _ in match.match_named_modules(model, targets, sparsity.get("ignore"))
    }
    return [p for p in present if p in matched]


def load_compressed(
    model: nn.Module, path: str | os.PathLike[str], *, masks: bool = False
) -> nn.Module:
    """Load a checkpoint written by :func:`save_compressed` into ``model``, bit for bit.

    ``model`` is built the same way as the saved one. Its Parameters and buffers
    are filled in place (same objects). Into a **masked** model (one with
    ``weight_orig``/``weight_mask``), each compressed weight fills ``weight_orig``
    with the stored values and ``weight_mask`` with the bitmask; into a plain model
    it fills ``weight`` with the pruned weights (zeros where pruned), the same values
    ``make_permanent`` gives. With ``masks=True`` a plain model gets torch's pruning
    reparametrization back (``prune.custom_from_mask`` with each bitmask), so you
    can go on training with the sparsity kept.

    The values are bit-identical to the saved model's (``orig * mask``) except for
    the sign of pruned zeros: torch computes ``-w * 0 = -0.0`` for a pruned negative
    weight, the formats store no value there and it comes back as ``+0.0``
    (``torch.equal`` holds). A 2:4 file keeps exactly 2 entries of every group of 4:
    where a mask kept fewer, the extra stored entries come back as kept zeros.

    Args:
        model: The model to load into.
        path: A ``.safetensors`` file or a model directory written by
            :func:`save_compressed` (or by compressed-tensors <= 0.14 in these
            formats).
        masks: Re-create the pruning masks of a plain model from the bitmasks.

    Returns:
        ``model``, for chaining.

    Raises:
        CompressedCheckpointError: The file is malformed, or does not fit the
            model (a missing or unexpected tensor, a different shape); the model is
            unchanged.
        MissingExtraError: compressed-tensors or safetensors is not installed.
    """
    source = Path(path)
    loaded = _read(source, model, "prunefw.export.load_compressed")
    state = model.state_dict(keep_vars=True)
    keys = set(state)
    pairs: dict[str, tuple[str, str]] = {}  # plain key -> (orig key, mask key)
    for key in state:
        split = split_reparametrized_key(key, keys)
        if split is not None:
            pairs[_join(*split)] = (_join(split[0], orig_name(split[1])), key)
    paired = {key for pair in pairs.values() for key in pair}
    stored = {alias: loaded.tensors.get(key) for alias, key in loaded.aliases.items()}
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for plain, (orig_key, mask_key) in pairs.items():
        value = _value(loaded, stored, plain, source)
        _check_shape(state[orig_key], value, plain, source)
        keep = loaded.masks.get(plain)
        plan.append((state[orig_key], value))
        plan.append((state[mask_key], value != 0 if keep is None else keep))
    for key in state:
        if key in paired:
            continue
        value = _value(loaded, stored, key, source, state)
        if value is None:
            continue  # a tied alias the file left out; filled through its twin
        _check_shape(state[key], value, key, source)
        plan.append((state[key], value))
    unexpected = sorted(set(loaded.tensors) - set(pairs) - (keys - paired))
    if unexpected:
        raise CompressedCheckpointError(
            f"{source} does not fit {type(model).__name__}: it has tensors the model does not "
            f"({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''})"
        )
    with torch.no_grad():
        for destination, value in plan:
            destination.copy_(value)
    for module in model.modules():
        refresh_pruned_tensors(module)
    if masks:
        _restore_masks(model, loaded, state)
    return model


def _value(
    loaded: _Loaded,
    stored: Mapping[str, torch.Tensor | None],
    key: str,
    source: Path,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Any:
    if key in loaded.tensors:
        return loaded.tensors[key]
    if stored.get(key) is not None:
        return stored[key]
    if state is not None and _tied_in_model(key, state, loaded):
        return None
    raise CompressedCheckpointError(
        f"{source} does not fit the model: it has no {key} (written from another model?)"
    )


def _tied_in_model(key: str, state: Mapping[str, torch.Tensor], loaded: _Loaded) -> bool:
    """Whether the model's ``key`` shares its tensor with another key the file holds."""
    ident = _identity(state[key])
    return any(
        other != key and other in loaded.tensors and _identity(value) == ident
        for other, value in state.items()
    )


def _check_shape(destination: torch.Tensor, value: torch.Tensor, key: str, source: Path) -> None:
    if tuple(destination.shape) != tuple(value.shape):
        raise CompressedCheckpointError(
            f"{source} does not fit the model: {key} has shape {tuple(value.shape)} in the file, "
            f"{tuple(destination.shape)} in the model"
        )


def _restore_masks(model: nn.Module, loaded: _Loaded, state: Mapping[str, torch.Tensor]) -> None:
    """Give the plain weights the file compressed torch's reparametrization with their bitmask."""
    by_parameter: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is not None:
            by_parameter.setdefault(id(weight), []).append(module)
    for key, keep in loaded.masks.items():
        if key not in state or not isinstance(state[key], nn.Parameter):
            continue  # already masked: the mask was loaded
        modules = by_parameter.get(id(state[key]), [])
        if not modules:
            continue
        first, *others = modules
        prune.custom_from_mask(first, "weight", keep)
        release_mask_reference(first, "weight")
        install_deepcopy_support(first)
        if others:
            share_mask(first, "weight", [(m, "weight") for m in others])
            for other in others:
                install_deepcopy_support(other)


def load_pretrained(path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Build the transformers model of a compressed model directory and load it.

    The class is the config's ``architectures[0]`` (else
    ``AutoModelForCausalLM``), built from ``config.json`` without the compression
    config; then :func:`load_compressed` fills its weights. Nothing is downloaded.

    Args:
        path: A directory written by :func:`save_compressed`.
        **kwargs: Passed to :func:`load_compressed` (``masks=True``).

    Returns:
        The model, in eval mode.

    Raises:
        CompressedCheckpointError: No ``config.json``, or transformers does not know
            the architecture.
        MissingExtraError: transformers, compressed-tensors or safetensors is missing.
    """
    directory = Path(path)
    transformers = _import("transformers", "prunefw.export.load_pretrained")
    config_file = directory / _CONFIG_NAME
    if not config_file.is_file():
        raise CompressedCheckpointError(f"{directory}: no {_CONFIG_NAME}, so not a model directory")
    config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    if hasattr(config, CONFIG_KEY):
        delattr(config, CONFIG_KEY)  # the sparse formats are read below, not by transformers
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else transformers.AutoModelForCausalLM
    if cls is None:
        raise CompressedCheckpointError(
            f"{directory}: transformers {transformers.__version__} has no {names[0]}"
        )
    model = cls.from_config(config) if hasattr(cls, "_model_mapping") else cls._from_config(config)
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    model.eval()
    return load_compressed(model, directory, **kwargs)
