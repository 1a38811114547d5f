"""CPU facts shared by the envs and the trainer (no torch import: the envs use it too)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
