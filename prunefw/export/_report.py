"""The record :func:`~prunefw.export.save_compressed` returns: what it wrote, and the sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
