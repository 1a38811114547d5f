"""The RL trainer: one meta-iteration per step on a task family, with quick evaluations.

The run folder, its lock, logs, checkpoints and bit-for-bit resume are the shared run loop's
(:class:`omnirl.runs.RunTrainer`). ``best.pt`` is the best post-adaptation return of the quick
evaluation (every ``eval_every`` iterations), or of the training rollouts without one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl import registry, timing
from omnirl.collector import Collector
from omnirl.config import TrainConfig
from omnirl.evaluation import adaptation_returns, default_lrs
from omnirl.learner import TaskDraw
from omnirl.runs import DIVERGENCE, RunTrainer, TrainingError
from omnirl.seeding import EVAL_STREAM, derive_seed, seed_everything
from omnirl.threads import available_cores

__all__ = ["Trainer", "TrainingError", "make_agent"]


def make_agent(cfg: TrainConfig, state: dict[str, Any] | None = None) -> Any:
    """A new ``cfg.agent`` for ``cfg.family``, sized by the family's spaces.

    The ``rl`` kind's learner factory; ``state`` (a checkpoint) is not needed to size an agent.
    """
    import gymnasium

    env = gymnasium.make(registry.get_family(cfg.family).env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return registry.load_learner(cfg.agent, "rl")(cfg, obs_dim, act_dim)


def make_collector(cfg: TrainConfig, env_id: str) -> Collector:
    """The run's collector: in process, or on ``cfg.collector_workers`` Ray actors."""
    if cfg.collector_backend == "ray":
        from omnirl.ray_collector import RayCollector

        return RayCollector(env_id, seed=cfg.seed, workers=cfg.collector_workers)
    return Collector(env_id, seed=cfg.seed)


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
        self.collector = make_collector(cfg, self.family.env_id)
        eval_rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        self.eval_tasks = self.family.tasks.sample(cfg.eval_tasks, eval_rng)
        self.iteration = 0
        self.best = -math.inf
        self._writer: Any = None
        self._use_run_dir(run_dir)  # last: a failure above leaves no folder behind

    # ---------------------------------------------------------------------- training
    @property
    def trains(self) -> bool:
        """Whether the agent has training steps (``random`` only saves its initial state)."""
        return self.agent.trains

    def finish(self) -> None:
        """After the last iteration: an agent that does not train is its own best checkpoint."""
        if not (self.checkpoint_dir / "best.pt").exists():
            self.save_checkpoint("best.pt")
        super().finish()

    def step(self) -> dict[str, float]:
        """One training iteration, logged and checkpointed."""
        cfg = self.cfg
        tasks = self.family.tasks.sample(cfg.tasks_per_iteration, self.rng)
        seed = derive_seed(self.rng)
        timing.take()
        steps_before, start = self.collector.stats["env_steps"], time.perf_counter()
        try:
            metrics = self.agent.update(TaskDraw(self.collector, tasks, seed))
        except DIVERGENCE as exc:
            raise self.stopped(exc) from None
        elapsed = time.perf_counter() - start
        metrics.update({f"time/{name}_s": total for name, total in timing.take().items()})
        metrics["time/iteration_s"] = elapsed
        metrics["time/sps"] = (self.collector.stats["env_steps"] - steps_before) / elapsed
        self.iteration += 1
        if cfg.eval_every and self.iteration % cfg.eval_every == 0:
            try:
                metrics.update(self.quick_eval())
            except DIVERGENCE as exc:
                raise self.stopped(exc, self.iteration) from None
            timing.take()  # evaluation time is not training time
        score = self._score(metrics)
        improved = score is not None and score > self.best
        self.best = max(self.best, score) if score is not None else self.best
        state = self.checkpoint_state()  # a divergence stops here: nothing logged or saved
        self._log(metrics)  # the log may run ahead of the checkpoints: resume trims it back
        # Without quick evaluations the score is the training rollouts' return: it belongs to
        # the parameters before this update, which best.pt then holds.
        self.save_checkpoints(improved, best_is_previous=not cfg.eval_every, state=state)
        return metrics

    @staticmethod
    def progress_stats(metrics: dict[str, float]) -> str:
        """The progress bar's trailer: env steps per second and the rollouts' returns."""
        stats = f"{metrics.get('time/sps', 0):,.0f} steps/s"
        for key, label in (("rollout/return_pre", "pre"), ("rollout/return_post", "post")):
            if key in metrics:
                stats += f"  return {label} {metrics[key]:.1f}"
        return stats

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
