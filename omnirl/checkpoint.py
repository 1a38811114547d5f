"""Checkpoints: atomic writes (see :mod:`omnirl.files`) and the one way to load a run.

A kill never leaves a torn checkpoint. :func:`load_run` restores the learner of any problem
kind from a run folder, for ``omnirl evaluate``, ``omnirl render`` and Python users alike.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omnirl.files import DamagedFileError, write_atomic


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def _first_line(exc: Exception) -> str:
    """An exception's message cut to its first line (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


# What every checkpoint of every kind holds (RunTrainer.save_checkpoint).
REQUIRED_KEYS = ("agent", "rng", "torch_rng", "iteration", "best")


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (on the CPU; tensors and plain data).

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: a truncated, empty or foreign file, one that holds more than tensors
            and plain data (refused: unpickling it could run code), or one without the entries
            of a checkpoint (one line naming the file).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        unsafe = "weights only load failed" in str(exc).lower()
        reason = (
            "it holds objects that are unsafe to load (refused)" if unsafe else "not a checkpoint"
        )
        raise DamagedFileError(f"checkpoint {path} cannot be loaded: {reason}") from None
    except (EOFError, RuntimeError, ValueError, OSError, AttributeError, IndexError) as exc:
        first = _first_line(exc)
        raise DamagedFileError(
            f"checkpoint {path} is damaged (truncated, empty or not a checkpoint: {first})"
        ) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise DamagedFileError(f"checkpoint {path} is not an omnirl checkpoint (no {missing[0]!r})")
    return state


@contextmanager
def fitting(path: Path, cfg: Any) -> Iterator[None]:
    """Restoring a checkpoint's state inside: a state that does not fit is named in one line.

    Raises:
        DamagedFileError: the state does not fit the learner (another kind, agent or size) or
            the generators (a wrong structure).
    """
    try:
        yield
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        first = _first_line(exc)
        raise DamagedFileError(
            f"checkpoint {path} does not fit this run's {cfg.agent} learner ({cfg.family}): {first}"
        ) from None


@dataclass(frozen=True)
class Run:
    """A run folder's config and learner, restored from one of its checkpoints.

    Attributes:
        path: the run folder.
        cfg: its config (the kind's schema).
        learner: the restored :class:`omnirl.learner.Learner`.
        checkpoint: the checkpoint file it was restored from.
        iteration: the training iteration that checkpoint holds.
        note: one line for the user when another checkpoint than the one asked for was used.
    """

    path: Path
    cfg: Any
    learner: Any
    checkpoint: Path
    iteration: int
    note: str | None = None


def run_checkpoint(run_dir: str | Path, which: str = "best") -> tuple[Path, str | None]:
    """The checkpoint ``which`` of ``run_dir``, and a note if it had to fall back.

    A run has ``latest.pt`` from its first iteration on, and ``best.pt`` only from its first
    quick evaluation on: a run without ``best.pt`` yet uses ``latest.pt`` and says so.

    Raises:
        FileNotFoundError: no run folder, or no checkpoint at all (one line, for the CLI).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    folder = run_dir / "checkpoints"
    path = folder / f"{which}.pt"
    if path.is_file():
        return path, None
    latest = folder / "latest.pt"
    if which == "best" and latest.is_file():
        return latest, f"{run_dir} has no best.pt yet (no quick evaluation so far): using latest.pt"
    raise FileNotFoundError(f"{run_dir} has no checkpoint {path.name}")


def load_run(run_dir: str | Path, which: str = "best") -> Run:
    """Restore the learner of ``run_dir`` from ``checkpoints/<which>.pt``, for any problem kind.

    The config's ``family`` names the kind (``omnirl.registry.kind_of``); the kind builds the
    learner from the config and the checkpoint, which then loads its state.

    Raises:
        FileNotFoundError: no run folder, or no such checkpoint (one line).
        ConfigError: the config cannot be used.
    """
    from omnirl.config import kind_of, load_run_config

    path, note = run_checkpoint(run_dir, which)
    cfg = load_run_config(run_dir)
    state = load(path)
    with fitting(path, cfg):
        learner = kind_of(run_dir).load("learner")(cfg, state)
        learner.load_state_dict(state["agent"])
    return Run(Path(run_dir), cfg, learner, path, int(state["iteration"]), note)


def load_runs(
    runs: Sequence[str | Path],
    which: str = "best",
    flow: str | None = None,
    kind: str | None = None,
) -> list[Run]:
    """Runs to be evaluated together: restored, of one family, each with the flow asked for.

    Args:
        runs: run folders.
        which: the checkpoint, ``best`` (falling back to ``latest``) or ``latest``.
        flow: a flow every run must have (``None``: each learner's ``eval_flow``).
        kind: the problem kind every run must be of (``None``: any).

    Raises:
        OptionError: no runs, runs of different families or of another kind, a bad
            checkpoint name, or a flow a run does not have (one line).
        FileNotFoundError: a run folder or checkpoint is missing.
        ConfigError: a config cannot be used.
    """
    from omnirl import registry
    from omnirl.config import load_run_config
    from omnirl.options import OptionError, check_checkpoint, check_flow

    if not runs:
        raise OptionError("no run folders given")
    check_checkpoint(which)
    # The configs first: a mismatch is named before any checkpoint is read.
    families = sorted({load_run_config(run).family for run in runs})
    if len(families) > 1:
        raise OptionError(f"runs of different families cannot share test tasks: {families}")
    if kind is not None and registry.kind_of(families[0]).name != kind:
        raise OptionError(f"{runs[0]} is not a {kind} run (family: {families[0]})")
    loaded = [load_run(run, which) for run in runs]
    for run in loaded:
        check_flow(run.learner, flow, run.path)
    return loaded
