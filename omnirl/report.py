"""Reports: what ``omnirl evaluate`` and ``omnirl render`` show and write, for every kind.

A problem kind's evaluation returns a :class:`Report`: a table for the terminal, the files to
write (``eval.json``, ``eval.csv``, ``eval.png``) as bytes, and one-line notes.
:func:`write_report` writes every file atomically (:func:`omnirl.files.write_atomic`), so an
interrupted or failing write leaves nothing half-written. The helpers below build the bytes.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnirl.files import write_atomic


@dataclass
class Report:
    """A command's result: a table, the files to write, and notes for the user.

    Attributes:
        title: the table's title.
        columns: its column headers.
        rows: its rows, as text.
        files: path -> bytes, written by :func:`write_report`.
        notes: one line each (e.g. a run evaluated from ``latest.pt`` for want of ``best.pt``).
        payload: the data behind the table (the ``eval.json`` payload), for Python callers.
        written: files the command already wrote itself (e.g. a video).
    """

    title: str
    columns: list[str]
    rows: list[list[str]]
    files: dict[Path, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)


def write_report(report: Report) -> list[Path]:
    """Write ``report.files`` atomically; return every file the report stands for."""
    for path, data in report.files.items():
        write_atomic(path, data)
    return [*report.files, *report.written]


def check_writable(folder: Path) -> None:
    """Make sure files can be written in ``folder``, creating nothing.

    The nearest folder that exists is probed; the missing ones are made when the first file is
    written (:func:`omnirl.files.write_atomic`), so a command that fails leaves no empty folder.

    Raises:
        OSError: with a one-line message naming the folder.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def output_folder(out: Path | None, runs: Sequence[Path]) -> Path:
    """Where an evaluation writes: ``--out``, else the run itself (one run), else ``./eval``.

    Raises:
        OSError: the folder cannot be written (one line).
    """
    folder = out or (Path(runs[0]) if len(runs) == 1 else Path("eval"))
    check_writable(folder)
    return folder


def json_bytes(payload: dict[str, Any]) -> bytes:
    """``payload`` as indented JSON."""
    return json.dumps(payload, indent=1).encode()


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A CSV file: ``header`` then ``rows`` (floats with 6 significant digits)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue().encode()


def figure_bytes(fig: Any, suffix: str = ".png") -> bytes:
    """A matplotlib figure saved in the format of ``suffix``; the figure is closed."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix.lstrip("."))
    plt.close(fig)
    return buffer.getvalue()


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def run_label(entry: dict[str, Any]) -> str:
    """``agent (run folder name)``: how a run is named in tables and legends."""
    return f"{entry['agent']} ({Path(entry['run']).name})"


def mean_ci_text(mean: float, ci: float, digits: int = 1, scale: float = 1.0) -> str:
    """``mean ± ci`` with ``digits`` decimals (values multiplied by ``scale`` first)."""
    return f"{scale * mean:.{digits}f} ± {scale * ci:.{digits}f}"
