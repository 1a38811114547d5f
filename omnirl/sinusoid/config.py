"""The strict config of a sinusoid regression run, its learner factory and its data module."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from omnirl import registry
from omnirl.config import (
    NON_EMPTY_POSITIVE,
    SEED,
    THREADS,
    ConfigError,
    above,
    at_least,
    config_key,
    interval,
    one_of,
    validate_fields,
)

FAMILY = "sinusoid"


@dataclass(frozen=True)
class SinusoidConfig:
    """A sinusoid training run (``configs/sinusoid.yaml`` comments every key).

    Every field is checked on construction (type, then range); a bad value is a
    :class:`~omnirl.config.ConfigError` naming the key.
    """

    # what to train
    family: str = config_key(FAMILY, "the supervised module", one_of((FAMILY,)))
    agent: str = config_key("omni", "learning rule", one_of(lambda: registry.learner_names(FAMILY)))
    seed: int = config_key(0, "seed of the run: initial parameters and meta-batches", SEED)
    # data and meta-batch
    iterations: int = config_key(50_000, "outer steps (MAML paper: 70,000)", at_least(1))
    tasks_per_iteration: int = config_key(25, "tasks B per meta-batch (MAML: 25)", at_least(1))
    shots: int = config_key(10, "support points K per task in training (MAML: 10)", at_least(1))
    query_points: int = config_key(10, "query points per task in training", at_least(1))
    train_tasks: int = config_key(30_000, "tasks in the fixed training set", at_least(1))
    points_per_task: int = config_key(50, "points per training task", at_least(2))
    data_seed: int = config_key(0, "seed of the fixed training set", SEED)
    # model
    hidden_sizes: tuple[int, ...] = config_key((64, 64), "hidden layers (tanh)", NON_EMPTY_POSITIVE)
    branch_rank: int = config_key(16, "rank of the Omni-Net pre/meta branches", at_least(1))
    # inner loop
    inner_lr: float = config_key(0.02, "inner (adaptation) learning rate alpha", above(0))
    inner_steps: int = config_key(1, "inner SGD steps in training", at_least(1))
    first_order: bool = config_key(False, "first-order MAML (no second derivatives)")
    adapt_branches: bool = config_key(False, "inner steps adapt the Omni-Net branch factors")
    # outer loop and Omni-Training
    outer_lr: float = config_key(1e-3, "Adam learning rate", above(0))
    ema_decay: float = config_key(0.99, "EMA teacher decay", interval(0, 1, high_open=True))
    distill_weight: float = config_key(3.0, "self-distillation weight lambda", at_least(0))
    # bookkeeping
    log_every: int = config_key(500, "metrics, quick evaluation, checkpoint every N", at_least(1))
    eval_tasks: int = config_key(100, "tasks of the quick evaluation", at_least(1))
    run_dir: str = config_key("runs", "folder that holds the run folders")
    torch_threads: int = config_key(0, "torch threads (0: all cores)", THREADS)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.shots + self.query_points > self.points_per_task:
            raise ConfigError(
                f"config keys 'shots' + 'query_points' = {self.shots + self.query_points} exceed "
                f"'points_per_task' = {self.points_per_task} (support and query are disjoint)"
            )


def make_learner(cfg: SinusoidConfig, state: dict[str, Any] | None = None) -> Any:
    """A new ``cfg.agent`` learner (the kind's learner factory; ``state`` does not size it)."""
    return registry.load_learner(cfg.agent, FAMILY)(cfg)


def data_module() -> ModuleType:
    """The kind's data module (``envs/sinusoid.py``: tasks, data sets, meta-batches)."""
    return registry.kinds()[FAMILY].load("data")
