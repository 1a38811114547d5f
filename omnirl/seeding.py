"""Seeding: one integer seed makes a run reproducible, and named streams keep draws apart.

Every draw that must not coincide with another comes from its own stream,
``numpy.random.default_rng([seed, STREAM])``: the training tasks from the run's own generator,
the quick-evaluation (or validation) tasks from :data:`EVAL_STREAM`, the test tasks of
``omnirl evaluate`` from :data:`TEST_STREAM`, the sinusoid training set from
:data:`DATA_STREAM`. The constants are the same for every problem kind.
"""

from __future__ import annotations

import random

import numpy as np
import torch

EVAL_STREAM = 7919  # quick-evaluation and validation tasks, apart from the training tasks
TEST_STREAM = 104729  # test tasks, episodes and points of `omnirl evaluate` and `render`
VAL_STREAM = 1299709  # the val split's tasks of `omnirl evaluate --split val`, apart from test
DATA_STREAM = 30011  # a fixed training set (sinusoid), seeded by its own data_seed


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's, numpy's and torch's global generators; return a fresh numpy Generator.

    omnirl itself passes explicit generators around (task sampling takes ``rng``, the collector
    owns a ``torch.Generator``); seeding the globals covers parameter initialisation and any
    user code that draws from them.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The generator of ``seed``'s stream ``keys`` (e.g. ``stream(seed, TEST_STREAM)``)."""
    return np.random.default_rng([seed, *keys])


def derive_seed(rng: np.random.Generator) -> int:
    """Draw a seed for a sub-component (e.g. one collection) from ``rng``."""
    return int(rng.integers(2**31 - 1))


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of an evaluation seeded with ``seed`` (chunk 0: ``seed``)."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
