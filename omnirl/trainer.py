"""The training loop: run folder, logging, atomic checkpoints, bit-for-bit resume.

A run lives in ``runs/<family>-<agent>-<seed>-<timestamp>/``: ``config.yaml`` (resolved),
tensorboard events, ``metrics.jsonl`` (one line per iteration) and ``checkpoints/latest.pt`` /
``best.pt`` (best by post-adaptation return). Everything random is drawn from generators saved in
the checkpoint, so ``Trainer.resume(run)`` continues exactly where the run stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from omnirl import checkpoint, registry, timing
from omnirl.collector import Collector
from omnirl.config import TrainConfig, config_to_dict, load_config, save_config
from omnirl.evaluation import adaptation_returns, default_lrs
from omnirl.learner import TaskDraw
from omnirl.seeding import EVAL_STREAM, derive_seed, seed_everything
from omnirl.threads import available_cores


def make_agent(cfg: TrainConfig, state: dict[str, Any] | None = None) -> Any:
    """A new ``cfg.agent`` for ``cfg.family``, sized by the family's spaces.

    The ``rl`` kind's learner factory; ``state`` (a checkpoint) is not needed to size an agent.
    """
    import gymnasium

    env = gymnasium.make(registry.get_family(cfg.family).env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return registry.load_learner(cfg.agent, "rl")(cfg, obs_dim, act_dim)


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. a non-finite loss); the last good checkpoint is kept."""


def new_run_dir(cfg: Any) -> Path:
    """A fresh ``<run_dir>/<family>-<agent>-<seed>-<timestamp>`` path for ``cfg`` (not created)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(cfg.run_dir) / f"{cfg.family}-{cfg.agent}-{cfg.seed}-{stamp}"
    suffix = 1
    while path.exists():  # two runs started in the same second
        suffix += 1
        path = path.with_name(f"{cfg.family}-{cfg.agent}-{cfg.seed}-{stamp}-{suffix}")
    return path


def open_run_dir(run_dir: Path, cfg: Any, iteration: int) -> None:
    """Create the run folder (or reopen it to resume at ``iteration``) and write ``config.yaml``.

    Temporary files of a write a kill interrupted are removed, and ``metrics.jsonl`` keeps only
    the lines the checkpoint covers (iteration <= ``iteration``). Shared by the RL trainer and
    the supervised ones (``omnirl.sinusoid``, ``omnirl.fewshot``).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # a write a kill interrupted
        stale.unlink()
    save_config(cfg, run_dir / "config.yaml")
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.exists():  # resuming: keep what the checkpoint covers
        lines = metrics_file.read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["iteration"] <= iteration]
        metrics_file.write_text("".join(line + "\n" for line in kept))


class RunTrainer:
    """What every trainer shares: the run folder, logs, atomic checkpoints and bit-for-bit resume.

    Subclasses set ``cfg``, ``rng``, ``iteration``, ``best``, ``run_dir`` and ``checkpoint_dir``
    in ``__init__(cfg, run_dir=None)``, name their config dataclass in ``schema``, and say what
    the checkpoint holds with :meth:`model_state_dict` / :meth:`load_model_state_dict` (by
    default the ``agent``'s state). Used by the RL :class:`Trainer` and the supervised modules'
    trainers (``omnirl.sinusoid.train``, ``omnirl.fewshot.train``).
    """

    schema: ClassVar[type] = TrainConfig
    _writer: Any = None

    def model_state_dict(self) -> dict[str, Any]:
        """What the checkpoint stores of the learner (default: ``self.agent.state_dict()``)."""
        return self.agent.state_dict()

    def load_model_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`model_state_dict`."""
        self.agent.load_state_dict(state)

    def stopped(self, exc: Exception, unit: str = "iteration") -> TrainingError:
        """The error that ends a run whose next ``unit`` failed, naming the checkpoint kept."""
        return TrainingError(
            f"{unit} {self.iteration + 1}: {exc}; the last good checkpoint is "
            f"{self.checkpoint_dir / 'latest.pt'}"
        )

    def checkpoint_extra(self) -> dict[str, Any]:
        """More entries for the checkpoint (e.g. the few-shot training classes)."""
        return {}

    # ------------------------------------------------------------------------- resume
    @classmethod
    def resume(cls, run_dir: str | Path, iterations: int | None = None) -> Any:
        """Continue a run from ``checkpoints/latest.pt``, optionally to more ``iterations``.

        Raises:
            FileNotFoundError: no run folder or no checkpoint (one line).
        """
        run_dir = Path(run_dir)
        latest = run_dir / "checkpoints" / "latest.pt"
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
        if not latest.is_file():
            raise FileNotFoundError(f"{run_dir} has no checkpoint to resume (no {latest.name})")
        overrides = [] if iterations is None else [f"iterations={iterations}"]
        cfg = load_config(str(run_dir / "config.yaml"), overrides, schema=cls.schema)
        trainer = cls(cfg, run_dir)
        trainer.load_checkpoint(latest)
        return trainer

    def load_checkpoint(self, path: Path) -> None:
        """Restore the learner, generators and counters from ``path``."""
        state = checkpoint.load(path)
        self.load_model_state_dict(state["agent"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.iteration, self.best = state["iteration"], state["best"]

    def save_checkpoint(self, name: str) -> Path:
        """Write ``checkpoints/<name>`` atomically."""
        path = self.checkpoint_dir / name
        state = {
            "agent": self.model_state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "iteration": self.iteration,
            "best": self.best,
            "config": config_to_dict(self.cfg),
            **self.checkpoint_extra(),
        }
        checkpoint.save_atomic(state, path)
        return path

    # ------------------------------------------------------------------------ logging
    @property
    def writer(self) -> Any:
        """The tensorboard writer (created on first use; tensorboard is imported lazily)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after its last checkpoint.
            self._writer = SummaryWriter(str(self.run_dir), purge_step=self.iteration + 1)
        return self._writer

    def _open_run(self) -> None:
        open_run_dir(self.run_dir, self.cfg, self.iteration)
        if self.iteration == 0:
            rows = "\n".join(f"| {k} | {v} |" for k, v in config_to_dict(self.cfg).items())
            self.writer.add_text("config", "| key | value |\n|---|---|\n" + rows, 0)

    def _log(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, self.iteration)
        self._append_metrics(metrics)

    def _append_metrics(self, metrics: dict[str, float]) -> None:
        """One ``metrics.jsonl`` line for the current iteration (what resume trims back to)."""
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"iteration": self.iteration, **metrics}) + "\n")

    def close(self) -> None:
        """Flush and close the logs."""
        if self._writer is not None:
            self._writer.close()


class Trainer(RunTrainer):
    """Trains one agent on one family as the config says.

    Args:
        cfg: the resolved training config.
        run_dir: the run folder (default: a new ``<run_dir>/<family>-<agent>-<seed>-<time>``).
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.family = registry.get_family(cfg.family)
        torch.set_num_threads(cfg.torch_threads or available_cores())
        self.rng = seed_everything(cfg.seed)  # also seeds parameter initialisation
        self.agent = make_agent(cfg)
        self.collector = Collector(self.family.env_id, seed=cfg.seed)
        eval_rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        self.eval_tasks = self.family.tasks.sample(cfg.eval_tasks, eval_rng)
        self.iteration = 0
        self.best = -math.inf
        self.run_dir = Path(run_dir) if run_dir is not None else self._new_run_dir()
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self._writer: Any = None

    def _new_run_dir(self) -> Path:
        return new_run_dir(self.cfg)

    # ---------------------------------------------------------------------- training
    def train(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> Path:
        """Run the remaining iterations; return the run folder.

        Args:
            on_iteration: called after every iteration with its number and metrics
                (the CLI's progress bar).

        Raises:
            TrainingError: a non-finite loss; ``latest.pt`` holds the last good iteration.
        """
        self._open_run()
        if not self.agent.trains:
            if self.iteration == 0:
                self.save_checkpoint("latest.pt")
                self.save_checkpoint("best.pt")
            return self.run_dir
        while self.iteration < self.cfg.iterations:
            metrics = self.step()
            if on_iteration is not None:
                on_iteration(self.iteration, metrics)
        self.writer.flush()
        return self.run_dir

    def step(self) -> dict[str, float]:
        """One training iteration, logged and checkpointed."""
        cfg = self.cfg
        tasks = self.family.tasks.sample(cfg.tasks_per_iteration, self.rng)
        seed = derive_seed(self.rng)
        timing.take()
        steps_before, start = self.collector.stats["env_steps"], time.perf_counter()
        try:
            metrics = self.agent.update(TaskDraw(self.collector, tasks, seed))
        except FloatingPointError as exc:
            raise self.stopped(exc) from None
        elapsed = time.perf_counter() - start
        metrics.update({f"time/{name}_s": total for name, total in timing.take().items()})
        metrics["time/iteration_s"] = elapsed
        metrics["time/sps"] = (self.collector.stats["env_steps"] - steps_before) / elapsed
        self.iteration += 1
        if cfg.eval_every and self.iteration % cfg.eval_every == 0:
            metrics.update(self.quick_eval())
            timing.take()  # evaluation time is not training time
        self._log(metrics)
        score = self._score(metrics)
        improved = score is not None and score > self.best
        self.best = max(self.best, score) if score is not None else self.best
        self.save_checkpoint("latest.pt")
        if improved:
            self.save_checkpoint("best.pt")
        return metrics

    def _score(self, metrics: dict[str, float]) -> float | None:
        """What ``best.pt`` maximises.

        The post-adaptation return on the fixed evaluation tasks when evaluating (only those
        iterations compete), else the return of the training rollouts.
        """
        if self.cfg.eval_every:
            return metrics.get("eval/return_post")
        return metrics.get("rollout/return_post", metrics.get("rollout/return_pre"))

    def quick_eval(self) -> dict[str, float]:
        """Mean return before and after one adaptation step on the fixed evaluation tasks."""
        lrs = default_lrs(self.cfg.inner_lr, 1)
        returns = adaptation_returns(
            self.agent,
            self.collector,
            self.eval_tasks,
            lrs,
            self.cfg.episodes_per_task,
            horizon=self.cfg.horizon,
            seed=self.cfg.seed + EVAL_STREAM,
        )
        return {
            "eval/return_pre": float(returns[0].mean()),
            "eval/return_post": float(returns[1].mean()),
        }

    def close(self) -> None:
        """Flush logs and close the environments."""
        super().close()
        self.collector.close()
