"""Plain-text tables for reports and listings."""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["format_table"]


def format_table(
    rows: Sequence[Sequence[str]],
    *,
    right: Collection[int] = (),
    rules_after: Collection[int] = (0,),
) -> str:
    """Format rows of cells as aligned columns separated by two spaces.

    Args:
        rows: The rows; the first is usually the header.
        right: Indices of right-aligned (numeric) columns.
        rules_after: Row indices after which a ``----`` rule is drawn.

    Returns:
        The table, without trailing spaces.

    Example:
        >>> print(format_table([("a", "n"), ("xyz", "1")], right={1}))
        a    n
        ---  -
        xyz  1
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index in rules_after:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
