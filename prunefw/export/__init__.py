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

The package, one concept a module (all re-exported here):

* ``_errors``: the errors; ``_report``: :class:`ExportReport`, what was written;
* ``_extras``: the optional dependencies, imported lazily;
* ``_formats``: the format names, the tensors each stores, metadata keys, file names;
* ``_state``: the model's state as a permanent model's state_dict, with its masks;
* ``_codec``: compressing and decompressing one weight;
* ``_save``: :func:`save_compressed` and the files of a model directory (written
  atomically by :mod:`prunefw._atomic`, prunefw's one writer);
* ``_load``: :func:`load_compressed` and :func:`load_pretrained`;
* ``_csr``: the sparse kernels (:class:`CsrLinear`, :func:`to_sparse_csr`).

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

from prunefw.checkpoint import ALIASES_KEY as ALIASES_KEY  # importable as before; not in __all__

from ._csr import CSR_MIN_SPARSITY, CsrLinear, to_sparse_csr
from ._errors import (
    CompressedCheckpointError,
    ExportError,
    MissingExtraError,
    NothingToExportError,
    NotTwoFourError,
)
from ._extras import PIP_EXPORT
from ._formats import BITMASK, FORMATS, SPARSE_24
from ._formats import CONFIG_KEY as CONFIG_KEY
from ._formats import WEIGHTS_NAME as WEIGHTS_NAME
from ._load import load_compressed, load_pretrained
from ._report import ExportReport
from ._save import save_compressed

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
