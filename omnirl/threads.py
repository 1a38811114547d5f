"""CPU facts shared by the envs and the trainer (no torch import: the envs use it too)."""

from __future__ import annotations

import os

# The CPUs a process was given by a scheduler (a Ray task's num_cpus, see omnirl.cluster):
# torch, BLAS and the physics thread pools size themselves by it instead of the whole machine.
CPUS_ENV = "OMNIRL_CPUS"


def available_cores() -> int:
    """CPU cores this process may use: ``$OMNIRL_CPUS`` if set, else the cores it may run on.

    The latter respects affinity masks and containers.
    """
    given = os.environ.get(CPUS_ENV, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
