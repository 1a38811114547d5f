"""Files that survive any kill, full disk or second process: they hold hours of work.

- :func:`write_atomic`: a temporary file in the same folder, fsync, a rename, fsync of the
  folder. ``os.replace`` is atomic on POSIX, so a process killed at any moment (even SIGKILL
  mid-write) leaves either the previous complete file or the new one, never a torn one.
- :func:`create_run_dir`: a new run folder is created atomically (``mkdir`` fails if the name is
  taken; the next suffix is tried), so two runs started in the same second never share one.
- :class:`RunLock`: one process per run folder, an OS file lock (``fcntl.flock``) held for the
  life of ``train``. The kernel frees it when the holder dies, even by SIGKILL; a second
  ``train --resume`` is refused with the holder's PID.
- :class:`MetricsLog`: ``metrics.jsonl`` gets whole lines, flushed to disk one at a time. On
  resume a torn last line (a kill or a full disk mid-write) is dropped with one warning, lines
  the checkpoint does not cover are dropped, and the file is replaced atomically; every line
  before them is kept.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any


class DamagedFileError(ValueError):
    """A run file (checkpoint, config, log) that cannot be used; one line naming it and why."""


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating the parent folder if needed.

    A file that is replaced keeps its permissions; a new one gets the usual ``0666 & ~umask``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: name the file
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so a rename or a new file in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RunInUseError(OSError):
    """Another process holds the run folder's lock; the message names its PID."""


def create_run_dir(parent: Path, name: str) -> Path:
    """Create ``parent/name`` (or ``name-2``, ``name-3``, ... if taken) atomically; return it."""
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 1000):
        path = parent / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free run folder name for {name}")


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`.

    The lock is ``flock`` on ``<run>/.lock``, which also holds the holder's PID for the message
    a second process gets. A process killed in any way releases it with its file descriptors.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunInUseError: another process holds it (one line naming its PID).
        """
        if self._fd is not None:  # held already
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunInUseError(
                f"{self.path.parent} is in use by another omnirl process (PID {holder}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases the ``flock``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temporary files of writes a kill interrupted (call it holding the run's lock)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


def write_if_changed(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` unless it already holds exactly that."""
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    write_atomic(path, data)


class MetricsLog:
    """``metrics.jsonl``: one JSON line per logged iteration, appended whole and fsynced.

    Args:
        path: the file.
    """

    def __init__(self, path: Path):
        self.path = path

    def repair(self, iteration: int) -> None:
        """Keep the lines a checkpoint at ``iteration`` covers; drop a torn last line.

        Every complete line up to ``iteration`` is kept. A last line without its newline or
        that is not JSON (a write cut short) is dropped with one warning. The file is replaced
        atomically, and only if something was dropped.
        """
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        lines = text.split("\n")
        tail = lines.pop()  # "" when the file ends with a newline, as every whole line does
        kept, torn = [], tail != ""
        for number, line in enumerate(lines, 1):
            entry = _parse(line)
            if entry is None:
                if number == len(lines) and tail == "":
                    torn = True  # a torn line the next append completed with its newline
                    continue
                raise DamagedFileError(f"{self.path} line {number} is damaged: {line[:80]!r}")
            if entry["iteration"] <= iteration:
                kept.append(line)
        if torn:
            warnings.warn(
                f"{self.path}: dropped a torn last line (a write that was cut short)",
                stacklevel=2,
            )
        if len(kept) != len(lines) or torn:
            write_atomic(self.path, "".join(line + "\n" for line in kept).encode())

    def append(self, entry: dict[str, Any]) -> None:
        """Append one line, whole, and flush it to disk before returning."""
        data = (json.dumps(entry) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.write(fd, data) != len(data):  # a full disk can cut a write short
                    raise OSError(28, "No space left on device")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {self.path}: {exc.strerror or exc}") from None


def _parse(line: str) -> dict[str, Any] | None:
    """A metrics line as a dict with an integer ``iteration``, or ``None`` if it is damaged."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("iteration"), int):
        return None
    return entry
