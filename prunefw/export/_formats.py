"""The format names, the tensors each stores, and the checkpoint's metadata keys and files.

The key of tied weights stored once is prunefw's, for every safetensors file it
writes: :data:`prunefw.checkpoint.ALIASES_KEY`.
"""

from __future__ import annotations

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
#: The weights file of a model directory (the name ``save_pretrained`` uses).
WEIGHTS_NAME = "model.safetensors"
_CONFIG_NAME = "config.json"
#: Weight files of other saves that would shadow or contradict ours in a directory.
_OTHER_WEIGHTS = (
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
