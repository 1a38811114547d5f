"""Seeding helpers: one integer seed makes a run reproducible."""

from __future__ import annotations

import random

import numpy as np
import torch


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


def derive_seed(rng: np.random.Generator) -> int:
    """Draw a seed for a sub-component (e.g. one collection) from ``rng``."""
    return int(rng.integers(2**31 - 1))
