"""The run loop every problem kind shares: run folder, lock, logs, checkpoints, resume.

A run lives in ``<run_dir>/<family>-<agent>-<seed>-<timestamp>/``: ``config.yaml`` (resolved,
written once), ``metrics.jsonl`` (one line per logged iteration), tensorboard events (RL and
few-shot) and ``checkpoints/latest.pt`` / ``best.pt``. Everything random is drawn from
generators saved in the checkpoint, so ``resume(run)`` continues bit for bit. The files are
crash-safe (:mod:`omnirl.files`): a kill at any instant, a full disk or a second process never
leaves a run that cannot be resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import torch

from omnirl import checkpoint
from omnirl.config import TrainConfig, config_bytes, config_to_dict, load_config
from omnirl.files import (
    MetricsLog,
    RunLock,
    create_run_dir,
    remove_stale_temp_files,
    write_atomic,
    write_if_changed,
)


class TrainingError(RuntimeError):
    """The run cannot continue (a divergence); the message names the last finite checkpoint."""


# What a diverged update or evaluation raises: a non-finite loss (FloatingPointError), a
# distribution built from non-finite parameters (ValueError), a failed solve (RuntimeError).
DIVERGENCE = (FloatingPointError, ValueError, RuntimeError)


def new_run_dir(cfg: Any) -> Path:
    """A fresh ``<run_dir>/<family>-<agent>-<seed>-<timestamp>[-N]`` folder, created atomically."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return create_run_dir(Path(cfg.run_dir), f"{cfg.family}-{cfg.agent}-{cfg.seed}-{stamp}")


def _all_finite(state: Any) -> bool:
    """Whether every floating-point tensor in a (nested) state is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(_all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(_all_finite(v) for v in state)
    return True


class RunTrainer:
    """What every trainer shares: the run folder, its lock, logs, checkpoints and resume.

    Subclasses set ``cfg``, ``rng``, ``iteration`` and ``best`` in ``__init__(cfg, run_dir=None)``
    and end it with :meth:`_use_run_dir`; they name their config dataclass in ``schema``,
    implement :meth:`step` (one iteration: it logs with :meth:`_log` and checkpoints with
    :meth:`save_checkpoints` when due) and say what the checkpoint holds with
    :meth:`model_state_dict` / :meth:`load_model_state_dict` (by default the ``agent``'s
    state). Used by the RL :class:`omnirl.trainer.Trainer` and the supervised kinds' trainers.

    Checkpoints are consistent under a kill at any instant: ``best.pt`` is written before
    ``latest.pt``, so a resume from ``latest.pt`` replays (bit for bit) any iteration whose
    ``best.pt`` was written, and never skips one. A state with a non-finite number is never
    written: the run stops with a :class:`TrainingError` naming the last finite checkpoint.
    """

    schema: ClassVar[type] = TrainConfig
    _writer: Any = None
    created_run_dir = False  # this process made the folder (removed again if nothing was saved)

    def _use_run_dir(self, run_dir: str | Path | None) -> None:
        """Take ``run_dir``, or create a new folder atomically (``self.created_run_dir``)."""
        self.created_run_dir = run_dir is None
        self.run_dir = new_run_dir(self.cfg) if run_dir is None else Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.lock = RunLock(self.run_dir)
        self.saved_iteration: int | None = None

    def model_state_dict(self) -> dict[str, Any]:
        """What the checkpoint stores of the learner (default: ``self.agent.state_dict()``)."""
        return self.agent.state_dict()

    def load_model_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`model_state_dict`."""
        self.agent.load_state_dict(state)

    def checkpoint_extra(self) -> dict[str, Any]:
        """More entries for the checkpoint (e.g. the few-shot training classes)."""
        return {}

    unit: ClassVar[str] = "iteration"  # what one step is called in messages

    def stopped(self, exc: Exception, step: int | None = None) -> TrainingError:
        """The error that ends a run whose ``step`` diverged, naming the last finite checkpoint.

        Args:
            exc: what went wrong.
            step: the step that diverged (default: the next one, ``iteration + 1``).
        """
        step = self.iteration + 1 if step is None else step
        where = f"{self.unit} {step}: {exc}; nothing of it was saved"
        if self.saved_iteration is None:
            return TrainingError(f"{where}, and no finite checkpoint exists: nothing to resume")
        return TrainingError(
            f"{where}. The last finite checkpoint is {self.checkpoint_dir / 'latest.pt'} "
            f"({self.unit} {self.saved_iteration}); omnirl train --resume {self.run_dir} "
            "continues from it"
        )

    # ----------------------------------------------------------------------- the loop
    def train(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> Path:
        """Run the remaining iterations, holding the run's lock; return the run folder.

        Args:
            on_iteration: called after every iteration with its number and metrics (the CLI's
                progress bar).

        Raises:
            TrainingError: a divergence; ``latest.pt`` holds the last finite iteration.
            RunInUseError: another process trains this run.
            OSError: a file of the run cannot be written (a full disk, a read-only folder).
        """
        self._open_run()
        try:
            while self.trains and self.iteration < self.cfg.iterations:
                metrics = self.step()
                if on_iteration is not None:
                    on_iteration(self.iteration, self.progress_metrics(metrics))
            self.finish()
        finally:
            self.lock.release()
        return self.run_dir

    @property
    def trains(self) -> bool:
        """Whether the learner has training steps (``random`` has none)."""
        return True

    def step(self) -> dict[str, float]:
        """One training iteration, logged and checkpointed when due."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the last iteration (flushes the logs; a kind may save more)."""
        if self._writer is not None:
            self._writer.flush()

    def progress_stats(self, metrics: dict[str, float]) -> str:
        """The progress bar's trailer after an iteration (each kind says what matters)."""
        return f"loss {metrics.get('train/loss', float('nan')):.3f}"

    def progress_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """What the progress bar is shown after an iteration (default: its metrics)."""
        return metrics

    def _open_run(self) -> None:
        """Lock the folder, clean and repair it, and make sure it is resumable from now on."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            latest = self.checkpoint_dir / "latest.pt"
            if latest.exists() and self.saved_iteration is None:  # not resumed, not ours
                raise FileExistsError(
                    f"{self.run_dir} already holds a run; continue it with --resume"
                )
            remove_stale_temp_files(self.run_dir)
            write_if_changed(self.run_dir / "config.yaml", config_bytes(self.cfg))
            self.metrics_log.repair(self.iteration)
            if not latest.exists():
                self.save_checkpoints(improved=False)  # resumable from its first instant
            if self.iteration == 0 and self.uses_tensorboard:
                rows = "\n".join(f"| {k} | {v} |" for k, v in config_to_dict(self.cfg).items())
                self.writer.add_text("config", "| key | value |\n|---|---|\n" + rows, 0)
        except BaseException:
            self.lock.release()
            raise

    # -------------------------------------------------------------------- checkpoints
    @classmethod
    def resume(cls, run_dir: str | Path, iterations: int | None = None) -> Any:
        """Continue a run from ``checkpoints/latest.pt``, optionally to more ``iterations``.

        Raises:
            FileNotFoundError: no run folder or no checkpoint (one line).
            ConfigError, DamagedFileError: a damaged config or checkpoint (one line).
        """
        run_dir = Path(run_dir)
        latest = run_dir / "checkpoints" / "latest.pt"
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
        if not latest.is_file():
            raise FileNotFoundError(f"{run_dir} has no checkpoint to resume (no {latest.name})")
        overrides = [] if iterations is None else [f"iterations={iterations}"]
        cfg = load_config(str(run_dir / "config.yaml"), overrides, schema=cls.schema)
        state = checkpoint.load(latest)  # damaged: named before anything is built
        trainer = cls(cfg, run_dir)
        trainer.lock.acquire()  # a second process stops here, before it says anything
        try:
            trainer.load_checkpoint(latest, state)
        except BaseException:
            trainer.lock.release()
            raise
        return trainer

    def load_checkpoint(self, path: Path, state: dict[str, Any] | None = None) -> None:
        """Restore the learner, generators and counters from ``path`` (or its loaded ``state``).

        Raises:
            DamagedFileError: the checkpoint is damaged or does not fit this run.
        """
        state = checkpoint.load(path) if state is None else state
        with checkpoint.fitting(path, self.cfg):
            self.load_model_state_dict(state["agent"])
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            self.iteration, self.best = int(state["iteration"]), state["best"]
        self.saved_iteration = self.iteration

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a checkpoint holds now.

        Raises:
            TrainingError: a non-finite number in the learner's state (it is never saved).
        """
        agent = self.model_state_dict()
        if not _all_finite(agent):
            raise self.stopped(FloatingPointError("non-finite parameters"), max(self.iteration, 1))
        return {
            "agent": agent,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "iteration": self.iteration,
            "best": self.best,
            "config": config_to_dict(self.cfg),
            **self.checkpoint_extra(),
        }

    def save_checkpoints(
        self,
        improved: bool,
        best_is_previous: bool = False,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Write ``best.pt`` (if ``improved``) and then ``latest.pt``, each atomically.

        Args:
            improved: this iteration's score is the best so far.
            best_is_previous: the score was earned by the parameters before this iteration's
                update (training rollouts): ``best.pt`` becomes the previous ``latest.pt``.
            state: :meth:`checkpoint_state`, if already taken.
        """
        state = self.checkpoint_state() if state is None else state
        latest = self.checkpoint_dir / "latest.pt"
        if improved and best_is_previous and latest.exists():
            write_atomic(self.checkpoint_dir / "best.pt", latest.read_bytes())
        elif improved:
            checkpoint.save_atomic(state, self.checkpoint_dir / "best.pt")
        checkpoint.save_atomic(state, latest)
        self.saved_iteration = self.iteration

    def save_checkpoint(self, name: str) -> Path:
        """Write ``checkpoints/<name>`` atomically from the current state."""
        path = self.checkpoint_dir / name
        checkpoint.save_atomic(self.checkpoint_state(), path)
        return path

    # ------------------------------------------------------------------------ logging
    uses_tensorboard: ClassVar[bool] = True

    @property
    def writer(self) -> Any:
        """The tensorboard writer (created on first use; tensorboard is imported lazily)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after its last checkpoint.
            self._writer = SummaryWriter(str(self.run_dir), purge_step=self.iteration + 1)
        return self._writer

    def _log(self, metrics: dict[str, float]) -> None:
        if self.uses_tensorboard:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, self.iteration)
        self._append_metrics(metrics)

    def _append_metrics(self, metrics: dict[str, float]) -> None:
        """One ``metrics.jsonl`` line for the current iteration (what resume trims back to)."""
        self.metrics_log.append({"iteration": self.iteration, **metrics})

    def close(self) -> None:
        """Flush and close the logs."""
        if self._writer is not None:
            self._writer.close()
