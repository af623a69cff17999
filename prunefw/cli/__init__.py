"""The ``prunefw`` command line (also ``python -m prunefw``).

One module per sub-command, each with an ``add_parser(commands)`` function:

* ``prunefw demo`` (:mod:`prunefw.cli.demo`): the main job on a built-in example.
* ``prunefw plugins`` (:mod:`prunefw.cli.plugins`): installed plugins and their criteria.

Exit codes: 0 success, 1 error (one line on stderr; ``--debug`` for the
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prunefw.cli import demo, plugins
from prunefw.errors import PrunefwError

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (demo, plugins)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``prunefw`` command."""
    parser = argparse.ArgumentParser(
        prog="prunefw", description="Prune PyTorch models with plugin-provided criteria."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        0 on success, 1 on error, 2 on a usage error (argparse exits with 2 itself).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PrunefwError as exc:
        if args.debug:
            raise
        print(f"prunefw: error: {exc}", file=sys.stderr)
        return 1
