"""Printing reports: tables that stay readable in any width (in a pipe, rich assumes 80 columns and squeezes numbers
to "…"), and text that comes from models or users shown as it is (never read as markup or terminal escapes)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from graphsurgery.errors import printable  # noqa: F401  (the CLI's name for it)
from graphsurgery.supervisor import announced

NARROWEST = 20  # the fewest COLUMNS a report is laid out in: at COLUMNS=1 rich broke every word a character a line


def usable_terminal_size() -> None:
    """COLUMNS and LINES as rich can take them. rich reads any value that `str.isdigit` accepts: COLUMNS=0 printed
    every report as nothing (verify's verdict too, with exit 0), COLUMNS=1 a character a line, and COLUMNS=² or
    LINES=² (digits to `isdigit`, not to `int`) were an internal error. Such a value is dropped, and rich measures
    the terminal (or takes 80 columns) as it does when the variable is unset."""
    for name, least in (("COLUMNS", NARROWEST), ("LINES", 1)):
        value = os.environ.get(name)
        if value is not None and not (value.isascii() and value.isdigit() and int(value) >= least):
            del os.environ[name]


def shown(value, style: str = "") -> Text:
    """Text from a model, a recipe or a file name, as plain characters: `[batch]` stays `[batch]` (not a rich style),
    control characters are made visible (`printable`)."""
    return Text(printable(value), style=style)


def progress_bar(wanted: bool = True) -> Progress:
    """The commands' progress bar: on standard error, gone when done, and drawn only on a terminal (elsewhere rich
    wrote an empty line to standard error as it stopped, into logs and scripts that expect it empty)."""
    console = Console(stderr=True)
    if wanted and console.is_terminal:  # the bar shows the time left: the supervisor's long-run note would garble it
        announced()
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=True,
                    disable=not (wanted and console.is_terminal))


def print_table(console: Console, table: Table) -> None:
    """Print `table` as it is when every cell fits unbroken (headers may wrap between words); otherwise one block
    per row, "header: value" on a line each."""
    if _narrowest(table) <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(table.title, highlight=False)
    headers = [" ".join(str(column.header).split()) for column in table.columns]
    columns = [[_text(cell) for cell in column.cells] for column in table.columns]
    for row in range(table.row_count):
        cells = [column[row] for column in columns]
        console.print(Text(cells[0].plain, style="bold"))
        for header, cell in zip(headers[1:], cells[1:]):
            console.print(Text(f"  {header}: ") + cell, soft_wrap=True)


def _narrowest(table: Table) -> int:
    """The width at which no cell is cut: each column as wide as its longest cell (and its header's longest
    word), plus padding and borders."""
    widths = []
    for column in table.columns:
        words = str(column.header).split() or [""]
        cells = [_text(cell).cell_len for cell in column.cells]
        widths.append(max([max(len(word) for word in words), *cells]) + 2)
    return sum(widths) + len(widths) + 1


def _text(cell) -> Text:
    return cell if isinstance(cell, Text) else Text.from_markup(str(cell))
