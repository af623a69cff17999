"""Writing a file or a directory atomically: the one writer of the checkpoints prunefw saves.

A file is written next to its destination, then renamed (:func:`atomic_file`), so
an interrupted run never leaves a truncated checkpoint; a directory is filled in a
temporary directory next to it, then renamed or moved in file by file
(:func:`atomic_directory`). An existing file keeps its mode; a symlink is written
through (:func:`output_path`); errors are :class:`~prunefw.errors.CheckpointError`
naming the output, never the temporary file; SIGTERM and SIGHUP remove the
temporary file before the process ends by them (:func:`_clean_exit_on_signals`);
what SIGKILL leaves is removed by a later write when that is safe
(:func:`remove_stale_temporaries`). Used by the ``prunefw`` command
(:mod:`prunefw.cli`) and by :func:`prunefw.export.save_compressed`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prunefw.errors import CheckpointError, PrunefwError, exception_reason

__all__ = [
    "STALE_AFTER",
    "atomic_directory",
    "atomic_file",
    "check_file_output",
    "check_parent",
    "check_writable_directory",
    "output_path",
    "remove_stale_temporaries",
]

#: Temporary files and directories older than this (seconds since their last change),
#: of a process that is gone, are removed by the next write of the same output.
STALE_AFTER = 60.0

_TEMP_SUFFIX = ".prunefw-tmp"
_SIGNALS = ("SIGTERM", "SIGHUP")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"


def _temp_path(path: Path) -> Path:
    """``.NAME.HOST-PID.prunefw-tmp`` next to ``path``: whose it is, in its name."""
    return path.with_name(f".{path.name[:150]}.{_host()}-{os.getpid()}{_TEMP_SUFFIX}")


def output_path(path: str | Path) -> Path:
    """The path prunefw writes for the output ``path``: it, or the target of the symlink at it.

    An output that is a symlink is written *through*: the file (or directory) it
    points to is replaced and the symlink stays, as shell redirection does. A
    dangling symlink gets its target created.

    Raises:
        CheckpointError: ``path`` is empty, or a symlink loop.

    Example:
        >>> output_path("pruned.pt")
        PosixPath('pruned.pt')
    """
    text = str(path)
    if not text.strip():
        raise CheckpointError("the output path is empty: name a file, or a directory ending with /")
    result = Path(text)
    if result.is_symlink():
        target = Path(os.path.realpath(result))
        if target.is_symlink():
            raise CheckpointError(
                f"{result} is a symlink that leads to no file (a loop of symlinks); remove it "
                "or choose another name"
            )
        result = target
    return result


def _existing_ancestor(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_parent(path: Path, what: str) -> None:
    """Check that the parent directories of ``path`` exist or can be created."""
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise CheckpointError(
            f"{path}: cannot write {what} there: {ancestor} is a file, not a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"{path}: cannot write {what} there: permission denied ({ancestor} is not writable)"
        )


def check_writable_directory(target: Path) -> None:
    """Check that files can be written into the directory ``target`` (or that it can be made).

    Raises:
        CheckpointError: ``target`` is under a file or an unwritable directory, or
            is an unwritable directory.
    """
    check_parent(target, "a model directory")
    if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise CheckpointError(f"{target}: cannot write a model directory there: permission denied")


def check_file_output(path: str | Path) -> Path:
    """Check that a checkpoint file can be written at ``path`` (before any work is done).

    Returns:
        The path to write (see :func:`output_path`).

    Raises:
        CheckpointError: ``path`` is empty, a directory, something other than a
            regular file (a device, a socket), a symlink loop, or under a file
            or an unwritable directory.
    """
    target = output_path(path)
    if target.is_dir():
        raise CheckpointError(
            f"{target} is a directory, so a checkpoint file cannot replace it; end the path "
            "with / to write a model directory into it, or choose a file name"
        )
    if target.exists() and not target.is_file():
        raise CheckpointError(
            f"{target} exists and is not a regular file; prunefw replaces regular files only: "
            "choose another name"
        )
    check_parent(target, "a checkpoint")
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` and, for a directory, what it holds."""
    newest = os.lstat(path).st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what killed runs left while writing ``path``; return what was removed.

    A run killed with SIGKILL (or a power cut) leaves its temporary file or
    directory, ``.NAME.HOST-PID.prunefw-tmp``, next to the output. One is removed
    only when all of this holds: its name is prunefw's for this output, written on
    this host; its process (PID) is gone; it is owned by the current user and is
    not a symlink; nothing in it changed for :data:`STALE_AFTER` seconds. Anything
    else is left alone.
    """
    path = Path(path)
    if os.name != "posix":  # os.kill(pid, 0) terminates processes elsewhere
        return []
    pattern = re.compile(
        rf"\.{re.escape(path.name[:150])}\.{re.escape(_host())}-(\d+){re.escape(_TEMP_SUFFIX)}"
    )
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        stale = path.parent / name
        try:
            info = os.lstat(stale)
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
                continue
            if time.time() - _last_change(stale) < STALE_AFTER:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(stale)
            else:
                stale.unlink()
        except OSError:
            continue
        removed.append(stale)
    return removed


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a temporary file existed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _clean_exit_on_signals(path: Path) -> Iterator[None]:
    """While writing ``path``: SIGTERM and SIGHUP clean up, then act as they would have.

    The signal becomes an exception, so the ``finally`` blocks of the writer
    remove the temporary file; then the previous handlers are restored and the
    signal is raised again: by default the process ends by it (exit status of
    SIGTERM). If the previous handler returns instead, the write is reported as
    interrupted. Signals that were ignored stay ignored; outside the main thread
    (where Python cannot set handlers) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    writing = [True]

    def handler(signum: int, frame: object) -> None:
        if not caught:  # the first one only: the cleanup itself is not interrupted
            caught.append(signum)
            if writing[0]:
                raise _Terminated(signum)

    previous: dict[int, Any] = {}
    for name in _SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN or old is None:  # ignored, or set outside Python: keep it
            continue
        previous[signum] = old
        signal.signal(signum, handler)
    written = False
    try:
        yield
        written = True
    except _Terminated:
        pass
    finally:
        writing[0] = False  # a signal from here on waits for the handlers to be restored
        for signum, old in previous.items():
            signal.signal(signum, old)
        if caught:
            signal.raise_signal(caught[0])  # the previous disposition acts: by default, exit
            if not written:
                raise CheckpointError(
                    f"{path}: not written: interrupted by {signal.Signals(caught[0]).name}"
                )


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or directory) to disk where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(
    path: Path, exc: BaseException, outcome: str = "nothing was written"
) -> CheckpointError:
    """One line for a failed write, naming the output (never the temporary file)."""
    if isinstance(exc, OSError):
        reason = exc.strerror or exception_reason(exc)
        if isinstance(exc, PermissionError):
            reason += f" (is {path.parent} writable?)"
    else:
        reason = exception_reason(exc)
    return CheckpointError(f"{path}: cannot write: {reason}; {outcome}")


def _prepare_temporary(target: Path) -> Path:
    """Create the parents of ``target``, remove what killed runs left: the temporary path."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    remove_stale_temporaries(target)
    return _temp_path(target)


def atomic_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write a file with ``write(tmp)``, then rename it to ``path``; return the path written.

    The temporary file is created next to the destination (exclusively, so no
    file or symlink of that name is followed), with the destination's mode if it
    exists (else the usual mode the umask gives); it is flushed to disk, then
    renamed over the destination in one step. A symlink ``path`` is written
    through (:func:`output_path`). On any error, Ctrl-C, SIGTERM or SIGHUP, the
    temporary file is removed and the destination is untouched.

    Raises:
        CheckpointError: See :func:`check_file_output`; or the write failed
            (no space, permissions): the message names ``path``, not the
            temporary file.
    """
    target = check_file_output(path)
    tmp = _prepare_temporary(target)
    created = False
    with _clean_exit_on_signals(target):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            created = True
            try:
                mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else None
                if mode is None:
                    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask
                else:
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)
            write(tmp)
            os.chmod(tmp, mode)  # writers that replace the file (safetensors) lose it
            _fsync(tmp)
            os.replace(tmp, target)
            created = False
            _fsync(target.parent)
        except (PrunefwError, _Terminated):
            raise
        except Exception as exc:
            raise _write_error(target, exc) from exc
        finally:
            if created:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    return target


def _move_in(source: Path, destination: Path) -> None:
    """Replace ``destination`` with ``source`` in one step, keeping its mode if it exists."""
    if destination.is_file():
        os.chmod(source, stat.S_IMODE(destination.stat().st_mode))
    os.replace(source, destination)


def atomic_directory(
    path: str | Path, fill: Callable[[Path], object], stale: re.Pattern[str] | None = None
) -> list[str]:
    """Write a directory: ``fill(tmp)`` writes its files, then they go into ``path``.

    ``path`` is checked by the caller first (e.g. with :func:`check_writable_directory`);
    a symlink ``path`` is written through (:func:`output_path`). ``fill`` writes into
    a new temporary directory next to ``path``. If ``path`` does not exist, the
    temporary directory is renamed to it (atomic: the directory appears complete
    or not at all). If it exists, each file is moved in (each replaced
    atomically, JSON files such as an index or a config last, each keeping the
    mode of the file it replaces), then the files of ``path`` that the new ones
    do not replace and whose names match ``stale`` are removed; other files (e.g.
    a tokenizer) are kept. On any error, Ctrl-C, SIGTERM or SIGHUP the temporary
    directory is removed (as in :func:`atomic_file`).

    Returns:
        The names of the files written, in the order they were moved in.

    Raises:
        CheckpointError: The write failed (no space, permissions): the message
            names ``path``, not the temporary directory, and says whether some
            files were replaced.
    """
    target = output_path(path)
    tmp = _prepare_temporary(target)
    created = False
    outcome = "nothing was written"
    with _clean_exit_on_signals(target):
        try:
            tmp.mkdir()
            created = True
            fill(tmp)
            names = sorted(os.listdir(tmp), key=lambda name: (name.endswith(".json"), name))
            for name in names:
                _fsync(tmp / name)
            if not target.exists():
                os.replace(tmp, target)
                created = False
                _fsync(target.parent)
                return names
            outcome = "some files of the directory were replaced, the others not"
            for name in names:
                _move_in(tmp / name, target / name)
            if stale is not None:
                for name in os.listdir(target):
                    if name not in names and stale.fullmatch(name) and (target / name).is_file():
                        (target / name).unlink()
            _fsync(target)
        except (PrunefwError, _Terminated):
            raise
        except Exception as exc:
            raise _write_error(target, exc, outcome) from exc
        finally:
            if created:
                shutil.rmtree(tmp, ignore_errors=True)
    return names
