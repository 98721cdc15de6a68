"""Output helpers shared by the commands: aligned tables with a header, and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

MISSING = "-"


def cell(value: Any) -> str:
    """A table cell: ``-`` for a missing value, ``a,b`` for a list, else ``str``."""
    if value is None or value == "" or value == [] or value == ():
        return MISSING
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = ()) -> str:
    """Rows under a header line, columns padded to their widest cell.

    ``right`` names the columns aligned to the right (numbers). The last column is not padded.
    """
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *text]:
        parts = []
        for i, (value, width) in enumerate(zip(row, widths)):
            last = i == len(headers) - 1
            if headers[i] in right:
                parts.append(value.rjust(width))
            else:
                parts.append(value if last else value.ljust(width))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = ()) -> None:
    click.echo(table(headers, rows, right=right))


def echo_json(data: Any) -> None:
    """Indented JSON on stdout (numpy scalars and paths as strings)."""
    click.echo(json.dumps(data, indent=1, default=_plain))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
