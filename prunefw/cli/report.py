"""``prunefw report``: per-tensor sparsity and criterion history of a model or checkpoint.

Builds the model from ``--model`` (a factory, a Hugging Face model directory or
config file), loads ``--checkpoint`` if given (a file or a model directory; pruned
checkpoints with masks and plain ones alike, through
:func:`prunefw.load_pruned_state_dict`), and prints one row per parameter:
module, tensor, shape, parameters, zeros, sparsity and the criteria that pruned
it (from the history stored in the checkpoint, see :mod:`prunefw.history`),
then the totals. A rich table on a terminal, plain text when piped, JSON with
``--json``: ``{"tensors": [...], "total": {...}}``, each tensor with the fields
of :meth:`prunefw.SparsityReport.to_dict` plus ``history``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from prunefw._table import format_table
from prunefw.checkpoint import load_pruned_state_dict
from prunefw.cli._model import add_model_argument, build_model, check_hf_model, hf_model_path
from prunefw.cli._reading import (
    directory_has_masks,
    read_checkpoint,
    read_directory_history,
    verify_directory,
)
from prunefw.errors import CheckpointError
from prunefw.history import HistoryEntry, PruningHistory
from prunefw.sparsity import sparsity_report

__all__ = [
    "COLUMNS",
    "add_parser",
    "load_model",
    "plain_table",
    "print_report",
    "report_data",
    "rich_table",
    "run",
]

#: The table's columns.
COLUMNS = ("module", "tensor", "shape", "parameters", "zeros", "sparsity", "criterion history")


def load_model(spec: str, checkpoint: Path | None) -> tuple[nn.Module, PruningHistory]:
    """Build the model ``spec`` names and load ``checkpoint`` into it, with its history.

    A Hugging Face model directory is loaded with its weights and history, except
    when ``checkpoint`` is given (its config builds the model, the checkpoint's
    weights go in) or when it holds pruning masks (the model is built from its
    config and the masked weights are loaded with
    :func:`prunefw.load_pruned_state_dict`). Tied weights that a checkpoint
    stores once (as ``save_pretrained`` does) are filled in from their twin.

    Raises:
        InvalidArgumentError: The model cannot be built.
        CheckpointError: The checkpoint cannot be read or does not fit the model.
    """
    source = hf_model_path(spec)
    masked = False
    if source is not None and source.is_dir() and checkpoint is None:
        check_hf_model(source)  # a bad config is reported before anything about weights
        masked = directory_has_masks(source)
    model = build_model(spec, weights=checkpoint is None and not masked)
    if masked:
        checkpoint = source
    if checkpoint is None:
        if source is not None and source.is_dir():
            verify_directory(source)  # from_pretrained read it: check what prunefw wrote
            return model, read_directory_history(source)
        return model, PruningHistory()
    saved = read_checkpoint(checkpoint)
    try:
        load_pruned_state_dict(model, _with_tied_weights(model, saved.state_dict))
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint} does not fit {spec}: {exc}") from exc
    return model, saved.history


def _with_tied_weights(model: nn.Module, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Fill in the keys of tied weights that ``state_dict`` stores under one name only.

    ``save_pretrained`` writes GPT-2's ``transformer.wte.weight`` but not
    ``lm_head.weight``, the same Parameter; a strict load would call it missing.
    """
    expected = model.state_dict(keep_vars=True)
    missing = [key for key in expected if key not in state_dict]
    if not missing:
        return state_dict
    by_pointer: dict[tuple[int, tuple[int, ...]], str] = {}
    for key, value in expected.items():
        if key in state_dict and isinstance(value, torch.Tensor) and value.numel():
            by_pointer.setdefault((value.data_ptr(), tuple(value.shape)), key)
    filled = OrderedDict(state_dict)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        filled._metadata = metadata  # type: ignore[attr-defined]
    for key in missing:
        value = expected[key]
        twin = by_pointer.get((value.data_ptr(), tuple(value.shape))) if value.numel() else None
        if twin is not None:
            filled[key] = state_dict[twin]
    return filled


def report_data(
    model: nn.Module,
    history: PruningHistory,
    *,
    pruned_only: bool = False,
    labels: set[str] | None = None,
) -> dict[str, Any]:
    """Return the report as JSON-ready data: ``{"tensors": [...], "total": {...}}``.

    Args:
        model: The model.
        history: Its criterion history; each tensor gets a ``history`` list of
            ``{"criterion", "config", "scope"}`` entries.
        pruned_only: Only tensors that carry a pruning reparametrization.
        labels: Only these tensors (``"module.tensor"``); totals are over the
            tensors listed.

    Example:
        >>> from torch import nn
        >>> data = report_data(nn.Linear(2, 3), PruningHistory())
        >>> [(t["name"], t["numel"], t["history"]) for t in data["tensors"]]
        [('bias', 3, []), ('weight', 6, [])]
        >>> data["total"]
        {'numel': 9, 'zeros': 0, 'sparsity': 0.0}
    """
    data = sparsity_report(model, pruned_only=pruned_only).to_dict()
    tensors = []
    for tensor in data["tensors"]:
        label = f"{tensor['module']}.{tensor['name']}" if tensor["module"] else tensor["name"]
        if labels is not None and label not in labels:
            continue
        tensor["history"] = [entry.to_dict() for entry in history.get(label)]
        tensors.append(tensor)
    if labels is not None:
        numel = sum(t["numel"] for t in tensors)
        zeros = sum(t["zeros"] for t in tensors)
        data["total"] = {
            "numel": numel,
            "zeros": zeros,
            "sparsity": zeros / numel if numel else 0.0,
        }
    data["tensors"] = tensors
    return data


def _history_text(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "-"
    return " then ".join(HistoryEntry.from_dict(entry).describe() for entry in entries)


def _rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for t in data["tensors"]:
        rows.append(
            (
                t["module"] or "(model)",
                t["name"],
                "x".join(map(str, t["shape"])) or "scalar",
                str(t["numel"]),
                str(t["zeros"]),
                f"{t['sparsity']:.2%}",
                _history_text(t["history"]),
            )
        )
    total = data["total"]
    rows.append(
        ("total", "", "", str(total["numel"]), str(total["zeros"]), f"{total['sparsity']:.2%}", "")
    )
    return rows


def plain_table(data: dict[str, Any]) -> str:
    """Format :func:`report_data` output as an aligned plain-text table.

    Example:
        >>> from torch import nn
        >>> print(plain_table(report_data(nn.Linear(2, 1), PruningHistory())))
        module   tensor  shape  parameters  zeros  sparsity  criterion history
        -------  ------  -----  ----------  -----  --------  -----------------
        (model)  bias    1               1      0     0.00%  -
        (model)  weight  1x2             2      0     0.00%  -
        -------  ------  -----  ----------  -----  --------  -----------------
        total                            3      0     0.00%
    """
    rows = [COLUMNS, *_rows(data)]
    return format_table(rows, right={3, 4, 5}, rules_after={0, len(rows) - 2})


def rich_table(data: dict[str, Any]) -> Any:
    """Return :func:`report_data` output as a :class:`rich.table.Table` (rich must be installed)."""
    from rich.table import Table

    table = Table(title="sparsity report", title_justify="left")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="right" if index in (3, 4, 5) else "left")
    rows = _rows(data)
    for row in rows[:-1]:
        table.add_row(*row)
    table.add_section()
    table.add_row(*rows[-1], style="bold")
    return table


def _use_rich(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def print_report(data: dict[str, Any], *, as_json: bool, stream: IO[str] | None = None) -> None:
    """Print ``data`` as JSON, a rich table (terminal with rich installed) or plain text."""
    stream = sys.stdout if stream is None else stream
    if as_json:
        print(json.dumps(data, indent=2), file=stream)
    elif _use_rich(stream):
        from rich.console import Console

        Console(file=stream).print(rich_table(data))
    else:
        print(plain_table(data), file=stream)


def run(args: argparse.Namespace) -> int:
    """Print the report; return the exit code."""
    model, history = load_model(args.model, args.checkpoint)
    print_report(report_data(model, history, pruned_only=args.pruned_only), as_json=args.json)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command to ``commands``."""
    parser = commands.add_parser(
        "report",
        help="per-tensor sparsity and criterion history of a model or checkpoint",
        description=(
            "Print one row per parameter (module, tensor, shape, parameters, zeros, sparsity, "
            "criterion history) and the totals: a table on a terminal, plain text when piped, "
            "JSON with --json."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="state_dict file (.pt or .safetensors) or Hugging Face model directory, pruned or not",
    )
    parser.add_argument(
        "--pruned-only", action="store_true", help="only tensors that carry pruning masks"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)
