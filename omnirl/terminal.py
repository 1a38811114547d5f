"""The terminal side of the command line: consoles, one-line errors, progress bars, reports.

Everything printed comes through here. Text the user typed or that names their files is
escaped for rich, so a path like ``runs/[a]`` prints as typed instead of as markup.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Redirected to a file, rich would fold tables to 80 columns and cut run names; a log keeps
# the full table (a terminal still uses its own width, and COLUMNS still wins).
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit (code 2) to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def say(message: str) -> None:
    """Print ``message`` as it is (no markup, no highlighting, never wrapped inside a word)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's bad-input errors into ``error: ...`` and exit code 2."""
    from omnirl import registry
    from omnirl.config import ConfigError
    from omnirl.files import DamagedFileError
    from omnirl.options import OptionError

    try:
        yield
    except (ConfigError, OptionError, DamagedFileError, registry.UnknownNameError, OSError) as exc:
        raise fail(str(exc)) from None


def progress_bar(unit: str, trailer: str = "") -> Any:
    """A rich progress bar: description, bar, done/total ``unit``, elapsed, eta, ``trailer``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn(trailer),
        console=console,
    )


def show_report(report: Any) -> None:
    """Print a report's notes and table, write its files and name them."""
    from omnirl.report import write_report

    for note in report.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    table = Table(title=escape(report.title))
    for index, column in enumerate(report.columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in report.rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    for path in write_report(report):
        say(f"wrote {path}")
