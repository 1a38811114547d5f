"""The strict config of a few-shot classification run, and the kind's learner factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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

FAMILY = "fewshot"


@dataclass(frozen=True)
class FewShotConfig:
    """One few-shot classification run; defaults train on the embedded ``glyphs`` in minutes.

    Every field is checked on construction (type, then range); a bad value is a
    :class:`~omnirl.config.ConfigError` naming the key.
    """

    # what to train
    family: str = config_key(FAMILY, "module (few-shot classification)", one_of((FAMILY,)))
    agent: str = config_key("omni", "learning rule", one_of(lambda: registry.learner_names(FAMILY)))
    seed: int = config_key(0, "seed of the whole run", SEED)
    data: str = config_key(
        "glyphs", "training data: a folder root/<class>/*.png|jpg, or glyphs or shapes"
    )
    image_size: int = config_key(28, "images are resized to this square size", at_least(2))
    # network
    channels: tuple[int, ...] = config_key(
        (32, 32, 32, 32), "output channels of the conv blocks", NON_EMPTY_POSITIVE
    )
    # training
    iterations: int = config_key(1000, "training steps (one Adam step each)", at_least(1))
    lr: float = config_key(1e-3, "Adam learning rate", above(0))
    batch_size: int = config_key(64, "images per pre-training batch", at_least(1))
    train_way: int = config_key(5, "classes per training episode", at_least(2))
    train_shot: int = config_key(5, "support images per class in training episodes", at_least(1))
    train_queries: int = config_key(16, "query images per class in training episodes", at_least(1))
    # Omni-Training
    ema_decay: float = config_key(0.99, "EMA teacher decay", interval(0, 1, high_open=True))
    distill_weight: float = config_key(30.0, "self-distillation weight lambda", at_least(0))
    # test protocol
    test_way: int = config_key(5, "classes per test episode", at_least(2))
    test_queries: int = config_key(16, "query images per class in test episodes", at_least(1))
    # bookkeeping
    eval_every: int = config_key(250, "validation every N steps (0: never)", at_least(0))
    eval_episodes: int = config_key(200, "5-shot validation episodes", at_least(1))
    run_dir: str = config_key("runs", "folder that holds the run folders")
    torch_threads: int = config_key(0, "torch threads (0: all cores)", THREADS)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.image_size < 2 ** len(self.channels):
            raise ConfigError(
                f"config key 'image_size' = {self.image_size} is too small for "
                f"{len(self.channels)} conv blocks (each halves it; allowed: >= "
                f"{2 ** len(self.channels)})"
            )


def data_module() -> Any:
    """The kind's data module, ``omnirl.envs.fewshot``, reached through the registry."""
    return registry.kinds()[FAMILY].load("data")


def make_learner(cfg: FewShotConfig, state: Mapping[str, Any] | None = None) -> Any:
    """A new ``cfg.agent`` learner (the ``fewshot`` kind's learner factory).

    Its linear heads cover the training classes: those of ``state["classes"]`` (a checkpoint,
    or the trainer's ``{"classes": ...}``), else the training classes of ``cfg.data`` (counted
    without reading any image).

    Raises:
        DataError: no ``state`` and ``cfg.data`` names no usable data.
    """
    if state is None:
        classes = data_module().class_names(cfg.data, "train")
    else:
        classes = state["classes"]
    return registry.load_learner(cfg.agent, FAMILY)(cfg, len(classes))
