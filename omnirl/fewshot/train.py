"""The few-shot training loop: run folder, logging, validation, atomic checkpoints, resume.

A run lives in ``runs/fewshot-<agent>-<seed>-<timestamp>/`` like an RL run: ``config.yaml``
(resolved, ``family: fewshot``), tensorboard events, ``metrics.jsonl`` (one line per step) and
``checkpoints/latest.pt`` / ``best.pt`` (best by validation accuracy on 5-way 5-shot episodes of
the validation classes), written after every validation and at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl.fewshot.classify import as_input
from omnirl.fewshot.config import FewShotConfig, make_learner
from omnirl.fewshot.data import DataError, EpisodeSampler, load_split
from omnirl.seeding import seed_everything
from omnirl.threads import available_cores
from omnirl.trainer import RunTrainer, new_run_dir

VAL_STREAM = 7919  # seeds the fixed validation episodes apart from the training draws
VAL_SHOT = 5  # validation (and best.pt) uses 5-shot episodes


class FewShotTrainer(RunTrainer):
    """Trains one few-shot learner as the config says.

    Args:
        cfg: the resolved config.
        run_dir: the run folder (default: a new ``<run_dir>/fewshot-<agent>-<seed>-<time>``).

    Raises:
        DataError: the data cannot make the configured batches and episodes.
    """

    def __init__(self, cfg: FewShotConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads or available_cores())
        self.rng = seed_everything(cfg.seed)
        self.train_set = load_split(cfg.data, "train", cfg.image_size)
        self.learner = make_learner(cfg, len(self.train_set.classes))
        self.sampler = None
        if self.learner.uses_episode:
            self.sampler = EpisodeSampler(
                self.train_set, cfg.train_way, cfg.train_shot, cfg.train_queries
            )
        self.val = self._validation_data() if cfg.eval_every else None
        self.iteration = 0
        self.best = -math.inf
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self._writer: Any = None

    def _validation_data(self) -> tuple[np.ndarray, list[Any]]:
        """The validation images and a fixed list of 5-shot episodes over them."""
        cfg = self.cfg
        try:
            images = load_split(cfg.data, "val", cfg.image_size)
        except DataError as exc:
            raise DataError(f"{exc} (or train without validation: --set eval_every=0)") from None
        sampler = EpisodeSampler(images, cfg.test_way, VAL_SHOT, cfg.test_queries)
        rng = np.random.default_rng([cfg.seed, VAL_STREAM])
        return images.images_NCHW, [sampler.sample(rng) for _ in range(cfg.eval_episodes)]

    # --------------------------------------------------------------------- checkpoint
    schema = FewShotConfig

    def model_state_dict(self) -> dict[str, Any]:
        """The learner's state."""
        return self.learner.state_dict()

    def load_model_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`model_state_dict`."""
        self.learner.load_state_dict(state)

    def checkpoint_extra(self) -> dict[str, Any]:
        """The training classes, kept with the weights."""
        return {"classes": list(self.train_set.classes)}

    # ---------------------------------------------------------------------- training
    def train(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> Path:
        """Run the remaining steps; return the run folder.

        Args:
            on_iteration: called after every step with its number and metrics (progress bar).

        Raises:
            TrainingError: a non-finite loss; ``latest.pt`` holds the last validated step.
        """
        self._open_run()
        while self.iteration < self.cfg.iterations:
            metrics = self.step()
            if on_iteration is not None:
                on_iteration(self.iteration, metrics)
        self.save_checkpoint("latest.pt")
        if self.val is None or not (self.checkpoint_dir / "best.pt").exists():
            self.save_checkpoint("best.pt")
        self.writer.flush()
        return self.run_dir

    def _inputs(self) -> tuple[Any, Any]:
        """The pre-training batch and the episode the learner needs (``None`` for the other)."""
        from omnirl.agents.fewshot import Batch, EpisodeBatch

        cfg, images = self.cfg, self.train_set
        batch = episode = None
        if self.learner.uses_batch:
            pick = self.rng.integers(0, len(images.labels_N), cfg.batch_size)
            labels = torch.from_numpy(images.labels_N[pick])
            batch = Batch(as_input(images.images_NCHW[pick]), labels)
        if self.sampler is not None:
            ep = self.sampler.sample(self.rng)
            pick = np.concatenate([ep.support_WK.ravel(), ep.query_WQ.ravel()])
            episode = EpisodeBatch(
                as_input(images.images_NCHW[pick]), cfg.train_way, cfg.train_shot, cfg.train_queries
            )
        return batch, episode

    def step(self) -> dict[str, float]:
        """One training step, logged; validation and checkpoints every ``eval_every`` steps."""
        start = time.perf_counter()
        batch, episode = self._inputs()
        try:
            metrics = self.learner.step(batch, episode)
        except FloatingPointError as exc:
            raise self.stopped(exc, "step") from None
        elapsed = time.perf_counter() - start
        seen = sum(len(x.images) for x in (batch, episode) if x is not None)
        metrics.update({"time/step_s": elapsed, "time/sps": seen / elapsed})
        self.iteration += 1
        if self.val is not None and self.iteration % self.cfg.eval_every == 0:
            metrics.update(self.validate())
            improved = metrics["eval/accuracy"] > self.best
            self.best = max(self.best, metrics["eval/accuracy"])
            self.save_checkpoint("latest.pt")
            if improved:
                self.save_checkpoint("best.pt")
        self._log(metrics)
        return metrics

    def validate(self) -> dict[str, float]:
        """5-way 5-shot accuracy of the test-time classifier on the fixed validation episodes."""
        from omnirl.evaluation import mean_ci95
        from omnirl.fewshot.evaluate import episode_accuracies

        images, episodes = self.val  # type: ignore[misc]
        flow = self.learner.eval_flow
        features = self.learner.embed(images, flow)
        generator = torch.Generator().manual_seed(self.cfg.seed + VAL_STREAM)
        acc = episode_accuracies(features, episodes, self.learner.classifier(flow), generator)
        mean, ci = mean_ci95(acc)
        return {"eval/accuracy": mean, "eval/accuracy_ci95": ci}

    def progress_stats(self, metrics: dict[str, float]) -> str:
        """The progress bar's trailer: steps/s, training loss, best validation accuracy."""
        stats = f"{1 / max(metrics['time/step_s'], 1e-9):.1f} steps/s"
        stats += f"  loss {metrics['train/loss']:.3f}"
        if math.isfinite(self.best):
            stats += f"  best val 5-shot {100 * self.best:.1f}%"
        return stats
