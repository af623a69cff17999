"""The errors of :mod:`prunefw.export`: a missing extra, and what cannot be exported or loaded."""

from __future__ import annotations

from prunefw.errors import PrunefwError


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
