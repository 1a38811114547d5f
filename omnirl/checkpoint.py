"""Atomic checkpoints: written to a temporary file in the same folder, then renamed.

``os.replace`` is atomic on POSIX, so a run killed at any moment (even SIGKILL mid-write) leaves
either the previous complete checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> Any:
    """Load a checkpoint written by :func:`save_atomic` (on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
