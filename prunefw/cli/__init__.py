"""The ``prunefw`` command line (also ``python -m prunefw``).

One module per sub-command, each with an ``add_parser(commands)`` function:

* ``prunefw prune`` (:mod:`prunefw.cli.prune`): apply a recipe to a model, save it.
* ``prunefw report`` (:mod:`prunefw.cli.report`): per-tensor sparsity and criterion history.
* ``prunefw demo`` (:mod:`prunefw.cli.demo`): the main job: train on the digits,
  prune with several criteria and sparsities, compare accuracies.
* ``prunefw plugins`` (:mod:`prunefw.cli.plugins`): installed plugins and their criteria.
* ``prunefw export`` (:mod:`prunefw.cli.export`): a pruned model as a compressed checkpoint.

Every sub-command also takes ``--debug`` (tracebacks on errors) and ``--quiet``
(no progress bars or status messages), before or after its name.

Exit codes: 0 success, 1 error (one line on stderr; ``--debug`` for the
traceback), 2 usage error (argparse's message), 130 interrupted. Code a command
runs (a model factory, a plugin) that calls ``sys.exit()`` is an error too (exit
1), never a silent exit with its code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from prunefw._version import __version__
from prunefw.cli import demo, export, plugins, prune, report
from prunefw.errors import PrunefwError

__all__ = ["SUBCOMMANDS", "build_parser", "error_line", "main"]

SUBCOMMANDS = (prune, report, export, demo, plugins)


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Sub-parsers default to SUPPRESS so they do not overwrite a value given
    # before the sub-command: `prunefw --debug prune ...` and `prunefw prune --debug`.
    default = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks on errors"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress bars or status messages",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``prunefw`` command."""
    parser = argparse.ArgumentParser(
        prog="prunefw",
        description="Prune PyTorch models with plugin-provided criteria.",
        epilog="exit codes: 0 ok, 1 error, 2 usage error",
    )
    parser.add_argument("--version", action="version", version=f"prunefw {__version__}")
    _common_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    seen = set()
    for sub in commands.choices.values():
        if id(sub) not in seen:
            seen.add(id(sub))
            _common_options(sub, top=False)
    return parser


def error_line(exc: BaseException) -> str:
    """Describe ``exc`` on one line, with the notes contexts attach (what was being pruned).

    Example:
        >>> from prunefw.errors import TargetError
        >>> error_line(TargetError("no tensor"))
        'no tensor'
        >>> error_line(KeyError("x"))
        "unexpected KeyError: 'x' (rerun with --debug for the traceback)"
    """
    text = str(exc)
    notes = [str(note) for note in getattr(exc, "__notes__", ())]
    if notes:
        text = f"{text} ({'; '.join(notes)})"
    if not isinstance(exc, (PrunefwError, OSError)):
        text = f"unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        0 on success, 1 on error, 130 if interrupted (argparse exits with 2 itself
        on a usage error). With ``--debug`` errors propagate with their traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("prunefw: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `prunefw report ... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except SystemExit as exc:  # argparse exits above; this is code the command ran
        if args.debug:
            raise
        print(
            f"prunefw: error: unexpected exit: code that prunefw {args.command} ran called "
            f"sys.exit({exc.code!r}) (SystemExit) before the command finished (rerun with "
            "--debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"prunefw: error: {error_line(exc)}", file=sys.stderr)
        return 1
