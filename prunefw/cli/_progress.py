"""Progress bars for the command line: rich bars on a terminal, nothing otherwise.

A :class:`ProgressBars` is a :class:`~prunefw.recipes.Tracker`: it wraps an
iterable and shows a bar on stderr while it is consumed. Bars are shown only when
stderr is a terminal, :mod:`rich` is installed and ``--quiet`` was not given;
otherwise the iterables pass through untouched and nothing is printed. Bars are
transient: they disappear when the work is done, so logs and piped output stay
clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import IO, Any, TypeVar

__all__ = ["ProgressBars", "progress_enabled"]

_T = TypeVar("_T")


def _rich_installed() -> bool:
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


def progress_enabled(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Whether to show progress bars on ``stream`` (default: stderr).

    Example:
        >>> import io
        >>> progress_enabled(False, io.StringIO())  # not a terminal
        False
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty()) and _rich_installed()


class ProgressBars:
    """Show rich progress bars while iterables are consumed (a context manager).

    Args:
        enabled: Show bars; if false, :meth:`__call__` returns its iterable as is.
        stream: Where bars go (default: stderr).

    Example:
        >>> with ProgressBars(enabled=False) as track:
        ...     list(track(range(3), "counting", 3))
        [0, 1, 2]
    """

    def __init__(self, *, enabled: bool, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self._progress: Any = None

    def __enter__(self) -> ProgressBars:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
                # stdout stays stdout: results must not end up in the bars' stream
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(
        self, items: Iterable[_T], description: str, total: int | None = None
    ) -> Iterable[_T]:
        """Yield ``items`` while a bar called ``description`` counts them (``total`` if known)."""
        if self._progress is None:
            return items
        return self._track(items, description, total)

    def _track(self, items: Iterable[_T], description: str, total: int | None) -> Iterator[_T]:
        progress = self._progress
        task = progress.add_task(description, total=total)
        try:
            for item in items:
                yield item
                progress.advance(task)
        finally:
            progress.remove_task(task)
