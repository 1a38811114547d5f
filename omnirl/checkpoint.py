"""Atomic checkpoints (see :mod:`omnirl.files`): a kill never leaves a torn file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from omnirl.files import write_atomic


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def load(path: str | Path) -> Any:
    """Load a checkpoint written by :func:`save_atomic` (on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def run_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The path of ``run_dir/checkpoints/<which>.pt``, checked to exist.

    Raises:
        FileNotFoundError: no run folder, or no such checkpoint (one line, for the CLI).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint {path.name}")
    return path
