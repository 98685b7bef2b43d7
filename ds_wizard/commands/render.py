"""Printing a command's result: lines, a rich table, or the result's own JSON.

Tables go through rich's ``Table`` into text first, then ``click.echo``, so they reach the
same guarded standard output as every other line (a closed pipe is one ``error:`` line).
Plain text, no colour and no markup: the output is the same on any terminal, and a value
such as ``[auto]`` is printed as it is.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import click

from ds_wizard.core.base.text import json_text

Justify = Literal["left", "right", "center"]

#: wide enough for any row a command prints; a table is only as wide as its cells
TABLE_WIDTH = 200


def echo_lines(lines: Iterable[str], *, err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


def echo_json(data: Any) -> None:
    """JSON for scripts: UTF-8 as written (×, not \\u00d7), with control, C1 and bidi
    characters escaped (``json_text``: none reaches a terminal raw)."""
    click.echo(json_text(data))


def table_lines(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
                justify: Sequence[Justify] = (), indent: str = "  ") -> list[str]:
    """A borderless rich table as text lines: one header row, then the rows."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2))
    for i, header in enumerate(headers):
        table.add_column(header, justify=justify[i] if i < len(justify) else "left",
                         no_wrap=True)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    buf = io.StringIO()
    Console(file=buf, width=TABLE_WIDTH, color_system=None, markup=False, emoji=False,
            highlight=False, force_terminal=False).print(table)
    return [indent + line.rstrip() for line in buf.getvalue().splitlines()]


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
               justify: Sequence[Justify] = ()) -> None:
    echo_lines(table_lines(headers, rows, justify=justify))
