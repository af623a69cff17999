"""Compressed checkpoints: a pruned model in the compressed-tensors sparse formats.

:func:`save_compressed` writes a pruned model, masked or permanent, in the sparse
formats of `compressed-tensors <https://github.com/neuralmagic/compressed-tensors>`_
(the ones llmcompressor writes and vLLM reads): every compressed weight ``X.weight``
becomes

* ``sparse-bitmask`` (any sparsity): ``X.shape`` (int64, the dense shape),
  ``X.compressed`` (the kept values, row-major, in the weight's dtype),
  ``X.bitmask`` (uint8, one bit per entry, rows padded to whole bytes, little bit
  order: ``compressed_tensors.utils.pack_bitmasks``) and ``X.row_offsets`` (int64,
  where each row starts in ``X.compressed``);
* ``sparse-24-bitmask`` (chosen when every compressed weight is 2:4, i.e. keeps at
  most 2 of every 4 consecutive entries of a row): ``X.shape`` (int64, ``(2, 1)``),
  ``X.compressed`` (``(rows, cols / 2)``, exactly 2 values per group) and
  ``X.bitmask``.

Every other tensor is stored as it is. The format is described by the
compressed-tensors config classes (``BitmaskConfig``, ``Sparse24BitMaskConfig``) in a
``quantization_config`` block: in ``config.json`` of a Hugging Face model directory
(exactly where compressed-tensors puts it), and in the file's safetensors metadata.
:func:`load_compressed` reads it back, bit for bit.

**Why prunefw decompresses the files itself.** compressed-tensors 0.20 (the version
this extra installs beside torch 2.13) keeps the sparse *config* classes and the
bitmask packing helpers, but has removed its sparse compressors:
``ModelCompressor.update_config`` writes ``"sparsity_config": {}`` ("sparsity is
removed for now"), ``ModelCompressor.from_compression_config`` refuses Sparse24
("no longer supported as of compressed-tensors>0.14.0"), and transformers 5's
``CompressedTensorsHfQuantizer`` only handles quantization. So
``AutoModelForCausalLM.from_pretrained(directory)`` on this stack ignores the
``sparsity_config``, reports the compressed weights as MISSING and initialises them
at random (measured: logits off by about 0.5 on a tiny Llama). Load the directory
with :func:`load_pretrained` (or build the model and call :func:`load_compressed`);
the tensor layout is unchanged, so stacks whose compressed-tensors still has the
sparse compressors (<= 0.14) read the same files.

``compressed-tensors`` and ``safetensors`` are an optional extra (``pip install
'prunefw[export]'``), imported only when a function here runs.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from torch import nn
    >>> from prunefw import GlobalPruningContext, MagnitudeCriterion
    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    >>> GlobalPruningContext(model, MagnitudeCriterion(amount=0.9)).prune()
    >>> path = Path(tempfile.mkdtemp()) / "model.safetensors"
    >>> report = save_compressed(model, path)
    >>> report.format, report.tensors
    ('sparse-bitmask', ('0.weight', '2.weight'))
    >>> fresh = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    >>> _ = load_compressed(fresh, path)
    >>> torch.equal(fresh[0].weight, model[0].weight)
    True
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.errors import PrunefwError
from prunefw.reparametrization import (
    install_deepcopy_support,
    mask_name,
    orig_name,
    refresh_pruned_tensors,
    release_mask_reference,
    share_mask,
    split_reparametrized_key,
)

__all__ = [
    "BITMASK",
    "CSR_MIN_SPARSITY",
    "FORMATS",
    "PIP_EXPORT",
    "SPARSE_24",
    "CompressedCheckpointError",
    "CsrLinear",
    "ExportError",
    "ExportReport",
    "MissingExtraError",
    "NotTwoFourError",
    "NothingToExportError",
    "load_compressed",
    "load_pretrained",
    "save_compressed",
    "to_sparse_csr",
]

#: How to install what this module needs (named in error messages).
PIP_EXPORT = "pip install 'prunefw[export]'"

#: The unstructured format (compressed-tensors' ``CompressionFormat.sparse_bitmask``).
BITMASK = "sparse-bitmask"
#: The 2:4 format (compressed-tensors' ``CompressionFormat.sparse_24_bitmask``).
SPARSE_24 = "sparse-24-bitmask"
#: The formats :func:`save_compressed` writes.
FORMATS = (BITMASK, SPARSE_24)

#: The tensors each format stores per compressed weight, by suffix of the module name.
_PARAMS = {
    BITMASK: ("shape", "compressed", "bitmask", "row_offsets"),
    SPARSE_24: ("shape", "compressed", "bitmask"),
}
#: config.json / safetensors metadata key of the compression config (compressed-tensors').
CONFIG_KEY = "quantization_config"
#: Safetensors metadata key of the tensors stored once for several state_dict keys:
#: a JSON object ``{"alias key": "stored key"}`` (tied weights).
ALIASES_KEY = "prunefw.aliases"
#: The weights file of a model directory (the name ``save_pretrained`` uses).
WEIGHTS_NAME = "model.safetensors"
_CONFIG_NAME = "config.json"
#: Weight files of other saves that would shadow or contradict ours in a directory.
_OTHER_WEIGHTS = (
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class MissingExtraError(PrunefwError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExportError(PrunefwError, ValueError):
    """A model cannot be written as, or read from, a compressed checkpoint."""


class NothingToExportError(ExportError):
    """The model has no pruning masks and no weight sparse enough to compress."""


class NotTwoFourError(ExportError):
    """The 2:4 format was requested for a weight that is not 2:4 sparse (the message names it)."""


class CompressedCheckpointError(ExportError):
    """A compressed checkpoint is malformed or does not fit the model it is loaded into."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`save_compressed` wrote.

    Attributes:
        path: The file or directory written.
        format: ``"sparse-bitmask"`` or ``"sparse-24-bitmask"``.
        tensors: The compressed weights (state_dict keys, ``"module.weight"``).
        file_bytes: Size on disk of the weights file (``.safetensors``), header
            included.
        dense_bytes: Bytes of the same tensors stored dense (the data a dense
            safetensors file of the permanent model holds, without its small header).
        compressed_tensor_bytes: Bytes of the compressed weights' tensors (values,
            bitmasks, offsets, shapes).
        dense_tensor_bytes: Bytes of those weights stored dense.
        files: Every file written.
    """

    path: Path
    format: str
    tensors: tuple[str, ...]
    file_bytes: int
    dense_bytes: int
    compressed_tensor_bytes: int
    dense_tensor_bytes: int
    files: tuple[Path, ...] = field(default=())

    @property
    def ratio(self) -> float:
        """``file_bytes / dense_bytes``: the file's size relative to the dense tensors."""
        return self.file_bytes / self.dense_bytes if self.dense_bytes else 0.0

    def describe(self) -> str:
        """One line: where, which format, how many tensors, the sizes and their ratio.

        Example:
            >>> from pathlib import Path
            >>> ExportReport(Path("m.safetensors"), "sparse-bitmask", ("0.weight",),
            ...              300 * 2**10, 2**20, 0, 0).describe()
            'm.safetensors: sparse-bitmask, 1 compressed tensor, 0.29 MiB (dense 1.00 MiB: 0.29x)'
        """
        count = len(self.tensors)
        return (
            f"{self.path}: {self.format}, {count} compressed tensor{'s' if count != 1 else ''}, "
            f"{_mib(self.file_bytes)} (dense {_mib(self.dense_bytes)}: {self.ratio:.2f}x)"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


# --- optional dependencies ----------------------------------------------------------------------


def _import(name: str, what: str) -> ModuleType:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs the optional package {name.split('.')[0].replace('_', '-')} "
            f"({type(exc).__name__}: {exc}); install it with {PIP_EXPORT}"
        ) from exc


def _safetensors(what: str) -> ModuleType:
    return _import("safetensors.torch", what)


def _ct_config(what: str) -> ModuleType:
    return _import("compressed_tensors.config", what)


def _ct_helpers(what: str) -> ModuleType:
    return _import("compressed_tensors.utils.helpers", what)


def _transformers_model(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (transformers is not imported)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    base = getattr(transformers, "PreTrainedModel", None)
    return isinstance(base, type) and isinstance(model, base)


# --- reading the model --------------------------------------------------------------------------


@dataclass
class _Plain:
    """The model's state as a permanent model's state_dict, with the masks beside it."""

    tensors: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]  # plain key -> bool keep-mask (pruned tensors only)
    aliases: dict[str, str]  # plain key -> the plain key stored instead


def _identity(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _plain_state(model: nn.Module) -> _Plain:
    """The model's state_dict with ``name_orig``/``name_mask`` pairs as ``name = orig * mask``."""
    state = model.state_dict()
    keys = set(state)
    pairs: dict[str, str] = {}  # orig or mask key -> plain key
    for key in state:
        split = split_reparametrized_key(key, keys)
        if split is not None:
            module_name, name = split
            plain = f"{module_name}.{name}" if module_name else name
            pairs[key] = plain
            pairs[_join(module_name, orig_name(name))] = plain
    tensors: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, value in state.items():
        plain = pairs.get(key, key)
        if plain in tensors or plain in aliases:
            continue
        if key in pairs:  # the first of the orig/mask pair: build the pruned tensor
            module_name, _, name = plain.rpartition(".")
            orig = state[_join(module_name, orig_name(name))]
            mask = state[_join(module_name, mask_name(name))]
            ident = _identity(orig)
            if ident in seen:
                aliases[plain] = seen[ident]
                continue
            seen[ident] = plain
            keep = mask != 0
            masks[plain] = keep
            tensors[plain] = orig * mask
            continue
        ident = _identity(value)
        if ident in seen:
            aliases[plain] = seen[ident]
            continue
        seen[ident] = plain
        tensors[plain] = value
    return _Plain(tensors, masks, aliases)


def _join(module_name: str, name: str) -> str:
    return f"{module_name}.{name}" if module_name else name


def _prefix(key: str) -> str | None:
    """The module name of a ``weight`` key (``"a.b"`` for ``"a.b.weight"``), else ``None``."""
    if key == "weight":
        return ""
    if key.endswith(".weight"):
        return key[: -len(".weight")]
    return None


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """A weight as the 2-D ``(rows, entries per row)`` the formats store."""
    return t.reshape(t.shape[0], -1)


def _bitmask_bytes(t: torch.Tensor, kept: int) -> int:
    rows, cols = _as_rows(t).shape
    return kept * t.element_size() + rows * math.ceil(cols / 8) + rows * 8 + t.dim() * 8


def _is_24(keep: torch.Tensor) -> tuple[bool, str]:
    """Whether a keep-mask keeps at most 2 of every 4 consecutive entries of each row."""
    if keep.dim() != 2:
        return False, f"it has {keep.dim()} dimensions (the 2:4 format stores 2-D weights)"
    rows, cols = keep.shape
    if cols % 4:
        return False, f"its rows have {cols} entries, not a multiple of 4"
    counts = keep.reshape(rows, cols // 4, 4).sum(-1)
    bad = (counts > 2).nonzero()
    if len(bad):
        row, group = (int(v) for v in bad[0])
        return False, (
            f"{len(bad)} groups of 4 keep more than 2 entries, e.g. row {row}, columns "
            f"{4 * group}-{4 * group + 3} keep {int(counts[row, group])}"
        )
    return True, ""


# --- compressing and decompressing one weight ---------------------------------------------------


def _compress_bitmask(
    value: torch.Tensor, keep: torch.Tensor, helpers: ModuleType
) -> dict[str, torch.Tensor]:
    rows = _as_rows(value)
    keep2 = _as_rows(keep)
    counts = keep2.sum(-1)
    return {
        "shape": torch.tensor(list(value.shape), dtype=torch.int64),
        "compressed": rows[keep2].contiguous(),
        "bitmask": helpers.pack_bitmasks(keep2.contiguous()),
        "row_offsets": torch.cumsum(counts, 0) - counts,
    }


def _pad_24(keep: torch.Tensor) -> torch.Tensor:
    """Keep exactly 2 of every 4: add the first dropped entries of groups that keep fewer."""
    groups = keep.reshape(-1, 4).clone()
    missing = 2 - groups.sum(-1, keepdim=True)
    # rank the dropped entries of each group by position: 1, 2, ... (kept ones get 0)
    order = torch.cumsum((~groups).to(torch.int64), dim=-1) * (~groups)
    groups |= (order > 0) & (order <= missing)
    return groups.reshape(keep.shape)


def _compress_24(
    value: torch.Tensor, keep: torch.Tensor, helpers: ModuleType
) -> dict[str, torch.Tensor]:
    keep2 = _pad_24(keep)
    rows, cols = value.shape
    return {
        "shape": torch.tensor(list(value.shape), dtype=torch.int64).reshape(-1, 1),
        "compressed": value[keep2].reshape(rows, cols // 2).contiguous(),
        "bitmask": helpers.pack_bitmasks(keep2.contiguous()),
    }


def _decompress(
    parts: Mapping[str, torch.Tensor], helpers: ModuleType, label: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the dense weight and its keep-mask from a compressed weight's tensors."""
    shape = [int(v) for v in parts["shape"].flatten().tolist()]
    if not shape or any(v < 0 for v in shape):
        raise CompressedCheckpointError(f"{label}.shape holds {shape}, not a tensor shape")
    rows, cols = shape[0], math.prod(shape[1:])
    packed = parts["bitmask"]
    values = parts["compressed"].flatten()
    if packed.dtype != torch.uint8 or tuple(packed.shape) != (rows, math.ceil(cols / 8)):
        raise CompressedCheckpointError(
            f"{label}.bitmask has shape {tuple(packed.shape)} and dtype {packed.dtype}; a "
            f"weight of shape {tuple(shape)} needs uint8 of shape ({rows}, {math.ceil(cols / 8)})"
        )
    keep = helpers.unpack_bitmasks(packed, [rows, cols])
    kept = int(keep.sum())
    if kept != values.numel():
        raise CompressedCheckpointError(
            f"{label}: the bitmask keeps {kept} entries but {label}.compressed holds "
            f"{values.numel()} values"
        )
    dense = torch.zeros(rows, cols, dtype=values.dtype)
    dense[keep] = values
    return dense.reshape(shape), keep.reshape(shape)


# --- save ---------------------------------------------------------------------------------------


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


# --- writing files atomically -------------------------------------------------------------------


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


# --- load ---------------------------------------------------------------------------------------


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


# --- sparse kernels -----------------------------------------------------------------------------

#: The weight sparsity from which torch's CSR matmul beat the dense one for batches of 8
#: and 128 rows (4096 x 4096 float32 weight, CPU, 1 and 2 threads) in
#: ``benchmarks/sparse_kernels.py`` (see docs/deploy.md). Below it CSR was slower at
#: every batch size; for a single row (token-by-token decoding) it was slower at every
#: sparsity with 2 threads.
CSR_MIN_SPARSITY = 0.9


class CsrLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is a ``torch.sparse_csr`` tensor.

    ``forward`` computes ``x @ W.T + b`` with :func:`torch.sparse.mm`. The weight is a
    buffer (no gradient); ``state_dict`` holds it in the CSR layout, which
    ``torch.save`` stores and safetensors does not.

    Args:
        weight: The dense ``(out_features, in_features)`` weight; its zeros are dropped.
        bias: The bias, or ``None``.

    Example:
        >>> import torch
        >>> layer = CsrLinear(torch.tensor([[0.0, 2.0], [1.0, 0.0]]), torch.tensor([0.5, 0.0]))
        >>> layer(torch.tensor([[1.0, 1.0]]))
        tensor([[2.5000, 1.0000]])
    """

    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", weight.detach().to_sparse_csr())
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x @ W.T + b`` for ``x`` of shape ``(..., in_features)``."""
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Sizes, bias and the weight's sparsity."""
        nnz = self.weight._nnz()
        sparsity = 1 - nnz / (self.in_features * self.out_features)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sparsity={sparsity:.2%}"
        )


def to_sparse_csr(model: nn.Module, *, min_sparsity: float = CSR_MIN_SPARSITY) -> list[str]:
    """Replace the very sparse float32 ``nn.Linear`` layers of ``model`` by :class:`CsrLinear`.

    Only where the benchmark showed a gain: an ``nn.Linear`` on the CPU, in float32,
    whose weight (after pruning: ``orig * mask``) has at least ``min_sparsity`` zeros,
    for inputs of several rows (batches or prompts of 8 tokens and more). Below
    :data:`CSR_MIN_SPARSITY` torch's CSR matmul was slower than dense on this CPU at
    every batch size measured, so other layers stay as they are; for one row at a time
    (decoding) it was slower even at 95% with 2 threads: keep such models dense. For
    inference only: the converted layers have no trainable weight and their pruning
    masks are gone (the zeros are the layout).

    Args:
        model: The model; its layers are replaced in place.
        min_sparsity: Convert layers with at least this fraction of zero weights.

    Returns:
        The qualified names of the layers replaced.

    Raises:
        ExportError: ``min_sparsity`` is not in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.masked_fill_(torch.rand(64, 64) < 0.95, 0.0)
        >>> x = torch.randn(3, 64)
        >>> expected = model(x)
        >>> to_sparse_csr(model)
        ['0']
        >>> torch.allclose(model(x), expected, atol=1e-6)
        True
    """
    if not isinstance(min_sparsity, (int, float)) or not 0.0 <= min_sparsity <= 1.0:
        raise ExportError(f"to_sparse_csr(min_sparsity={min_sparsity!r}): expected [0, 1]")
    todo: list[tuple[str, nn.Module, str, nn.Linear]] = []
    for name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if type(child) is not nn.Linear:
                continue
            weight = child.weight.detach()
            if weight.dtype != torch.float32 or weight.device.type != "cpu":
                continue
            if float((weight == 0).sum()) / weight.numel() >= min_sparsity:
                todo.append((_join(name, child_name), parent, child_name, child))
    for _, parent, child_name, child in todo:
        bias = child.bias.detach() if isinstance(child.bias, torch.Tensor) else None
        setattr(parent, child_name, CsrLinear(child.weight.detach(), bias))
    return [label for label, _, _, _ in todo]
