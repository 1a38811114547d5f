"""The sinusoid training loop: meta-batches from a fixed training set, one outer step each.

Every ``log_every`` iterations: one ``metrics.jsonl`` line (means over the window), a quick
evaluation (``eval/mse_pre``, ``eval/mse_post``: MSE before and after one step on fixed
tasks) and atomic checkpoints (``latest.pt``; ``best.pt`` by the lowest ``eval/mse_post``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl.runs import DIVERGENCE, RunTrainer
from omnirl.seeding import DATA_STREAM, EVAL_STREAM, seed_everything, stream
from omnirl.sinusoid.config import SinusoidConfig, data_module, make_learner
from omnirl.sinusoid.evaluate import QUERY_POINTS, adaptation_mse
from omnirl.threads import available_cores


class SinusoidTrainer(RunTrainer):
    """Trains one sinusoid learner as the config says (same interface as the RL trainer).

    Args:
        cfg: the resolved config.
        run_dir: the run folder (default: a new ``<run_dir>/sinusoid-<agent>-<seed>-<time>``).
    """

    schema = SinusoidConfig

    def __init__(self, cfg: SinusoidConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads or available_cores())
        self.rng = seed_everything(cfg.seed)  # also seeds parameter initialisation
        self.agent = make_learner(cfg)
        self.sinusoid = data_module()
        self.data = self.sinusoid.make_dataset(
            cfg.train_tasks, cfg.points_per_task, stream(cfg.data_seed, DATA_STREAM)
        )
        self.eval_set = self.sinusoid.make_dataset(
            cfg.eval_tasks, cfg.shots + QUERY_POINTS, stream(cfg.seed, EVAL_STREAM)
        )
        self.iteration = 0
        self.best = math.inf
        self.logged: dict[str, float] = {}  # the last metrics line (shown by the progress bar)
        self._window: list[dict[str, float]] = []
        self._use_run_dir(run_dir)  # last: a failure above leaves no folder behind

    uses_tensorboard = False  # metrics.jsonl only: 50,000 steps of scalars would be noise

    def progress_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The step's metrics with the last logged line's (the quick evaluation's MSE)."""
        return {**metrics, **self.logged}

    def step(self) -> dict[str, float]:
        """One meta-batch and one outer step; every ``log_every``: log, evaluate, checkpoint."""
        cfg = self.cfg
        batch = self.sinusoid.sample_batch(
            self.data, cfg.tasks_per_iteration, cfg.shots, cfg.query_points, self.rng
        )
        start = time.perf_counter()
        try:
            metrics = self.agent.update(batch)
        except DIVERGENCE as exc:
            raise self.stopped(exc) from None
        metrics["time/iteration_s"] = time.perf_counter() - start
        self.iteration += 1
        self._window.append(metrics)
        if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
            self._log_window()
        return metrics

    def _log_window(self) -> None:
        cfg, window = self.cfg, self._window
        line = {key: float(np.mean([m[key] for m in window])) for key in window[0]}
        # Training points (support + query) per second of update time.
        points = cfg.tasks_per_iteration * (cfg.shots + cfg.query_points)
        line["time/sps"] = points / line["time/iteration_s"]
        try:
            line.update(self.quick_eval())
        except DIVERGENCE as exc:
            raise self.stopped(exc, self.iteration) from None
        state = self.checkpoint_state()  # a divergence stops here: nothing logged or saved
        self._window = []
        self.logged = line
        self._log(line)
        improved = line["eval/mse_post"] < self.best
        self.best = min(self.best, line["eval/mse_post"])
        self.save_checkpoints(improved, state={**state, "best": self.best})

    def quick_eval(self) -> dict[str, float]:
        """MSE before and after one step on the fixed evaluation tasks (K = ``shots``)."""
        mse = adaptation_mse(self.agent, self.eval_set, self.cfg.shots, [self.cfg.inner_lr])
        return {"eval/mse_pre": float(mse[0].mean()), "eval/mse_post": float(mse[1].mean())}

    @staticmethod
    def progress_stats(metrics: dict[str, Any]) -> str:
        """The progress bar's trailer: iterations/s, training loss, quick-evaluation MSE."""
        stats = f"{1 / max(metrics['time/iteration_s'], 1e-9):,.0f} it/s"
        stats += f"  loss {metrics['train/loss']:.3f}"
        if "eval/mse_post" in metrics:
            stats += f"  eval MSE after 1 step {metrics['eval/mse_post']:.3f}"
        return stats
