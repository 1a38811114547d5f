"""The few-shot training loop: run folder, logging, validation, atomic checkpoints, resume.

A run lives in ``runs/fewshot-<agent>-<seed>-<timestamp>/`` like an RL run: ``config.yaml``
(resolved, ``family: fewshot``), tensorboard events, ``metrics.jsonl`` (one line per step) and
``checkpoints/latest.pt`` / ``best.pt`` (best by validation accuracy on 5-way 5-shot episodes of
the validation classes), written after every validation and at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from omnirl.fewshot.config import FewShotConfig, data_module, make_learner
from omnirl.fewshot.evaluate import episode_accuracies
from omnirl.runs import DIVERGENCE, RunTrainer
from omnirl.seeding import EVAL_STREAM, seed_everything, stream
from omnirl.stats import mean_ci95
from omnirl.threads import available_cores

VAL_SHOT = 5  # validation (and best.pt) uses 5-shot episodes


class FewShotTrainer(RunTrainer):
    """Trains one few-shot learner as the config says.

    Args:
        cfg: the resolved config.
        run_dir: the run folder (default: a new ``<run_dir>/fewshot-<agent>-<seed>-<time>``).

    Raises:
        DataError: the data cannot make the configured batches and episodes.
    """

    schema = FewShotConfig

    def __init__(self, cfg: FewShotConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.data = data_module()
        torch.set_num_threads(cfg.torch_threads or available_cores())
        self.rng = seed_everything(cfg.seed)  # also seeds parameter initialisation
        self.train_set = self.data.load_split(cfg.data, "train", cfg.image_size)
        self.agent = make_learner(cfg, {"classes": self.train_set.classes})
        self.sampler = None
        if self.agent.uses_episode:
            self.sampler = self.data.EpisodeSampler(
                self.train_set, cfg.train_way, cfg.train_shot, cfg.train_queries
            )
        self.val = self._validation_data() if cfg.eval_every else None
        self.iteration = 0
        self.best = -math.inf
        self._use_run_dir(run_dir)  # last: a failure above leaves no folder behind
        self._writer: Any = None

    def _validation_data(self) -> tuple[Any, list[Any]]:
        """The validation images and a fixed list of 5-shot episodes over them."""
        cfg = self.cfg
        try:
            images = self.data.load_split(cfg.data, "val", cfg.image_size)
        except self.data.DataError as exc:
            message = f"{exc} (or train without validation: --set eval_every=0)"
            raise self.data.DataError(message) from None
        sampler = self.data.EpisodeSampler(images, cfg.test_way, VAL_SHOT, cfg.test_queries)
        rng = stream(cfg.seed, EVAL_STREAM)
        return images.images_NCHW, [sampler.sample(rng) for _ in range(cfg.eval_episodes)]

    def checkpoint_extra(self) -> dict[str, Any]:
        """The training classes, kept with the weights (they size the learner's heads)."""
        return {"classes": list(self.train_set.classes)}

    # ---------------------------------------------------------------------- training
    unit = "step"

    def finish(self) -> None:
        """After the last step: save it, and make it ``best.pt`` if nothing was validated."""
        state = self.checkpoint_state()
        self.save_checkpoints(improved=self.val is None or not self._has_best(), state=state)
        super().finish()

    def _has_best(self) -> bool:
        return (self.checkpoint_dir / "best.pt").exists()

    def step(self) -> dict[str, float]:
        """One training step, logged; validation and checkpoints every ``eval_every`` steps."""
        cfg = self.cfg
        start = time.perf_counter()
        batch_size = cfg.batch_size if self.agent.uses_batch else None
        draw = self.data.draw_training(self.train_set, self.rng, batch_size, self.sampler)
        try:
            metrics = self.agent.update(draw)
        except DIVERGENCE as exc:
            raise self.stopped(exc) from None
        elapsed = time.perf_counter() - start
        metrics.update({"time/iteration_s": elapsed, "time/sps": draw.num_images() / elapsed})
        self.iteration += 1
        if self.val is not None and self.iteration % cfg.eval_every == 0:
            try:
                metrics.update(self.validate())
            except DIVERGENCE as exc:
                raise self.stopped(exc, self.iteration) from None
            state = self.checkpoint_state()  # a divergence stops here: nothing logged or saved
            self._log(metrics)
            improved = metrics["eval/accuracy_post"] > self.best
            self.best = max(self.best, metrics["eval/accuracy_post"])
            self.save_checkpoints(improved, state={**state, "best": self.best})
        else:
            self._log(metrics)
        return metrics

    def validate(self) -> dict[str, float]:
        """5-way 5-shot accuracy of the test-time classifier on the fixed validation episodes."""
        images, episodes = self.val  # type: ignore[misc]
        flow = self.agent.eval_flow
        features = self.agent.embed(images, flow)
        generator = torch.Generator().manual_seed(self.cfg.seed + EVAL_STREAM)
        mean, ci = mean_ci95(episode_accuracies(self.agent, features, episodes, flow, generator))
        return {"eval/accuracy_post": mean, "eval/accuracy_post_ci95": ci}

    def progress_stats(self, metrics: dict[str, float]) -> str:
        """The progress bar's trailer: steps/s, training loss, best validation accuracy."""
        stats = f"{1 / max(metrics['time/iteration_s'], 1e-9):.1f} steps/s"
        stats += f"  loss {metrics['train/loss']:.3f}"
        if math.isfinite(self.best):
            stats += f"  best val 5-shot {100 * self.best:.1f}%"
        return stats
