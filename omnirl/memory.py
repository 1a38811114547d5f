"""How the process's C allocator hands large blocks back: kept for reuse, not unmapped.

A meta-gradient step allocates hundreds of fresh activations of tens of MB (at paper scale
160,000 states x 64 units is 41 MB). glibc serves every block above its mmap threshold (at
most 32 MB) with a fresh ``mmap`` and returns it with ``munmap`` when freed, so the next
allocation of the same size faults in and zeroes every page again: a HalfCheetahVel omni
iteration spent a fifth of its CPU time in the kernel doing that. With mmap off and a high
trim threshold, freed blocks stay in the heap and are reused as they are. The numbers do not
change (allocation decides where a result lives, never how it is computed; a test checks the
iterations bit for bit); the cost is that the process keeps its peak heap until it exits.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: return free heap tops above 2 GiB only
# OMNIRL_MALLOC=system leaves glibc's defaults (memory back to the OS as soon as it is free).
# Setting one of glibc's MALLOC_* variables is no way to get them: any of them switches off
# glibc's dynamic mmap threshold, which is worse than either (2.4 M page faults per
# HalfCheetah omni iteration with MALLOC_MMAP_MAX_=65536, against 0.17 M with the defaults).
MALLOC_ENV = "OMNIRL_MALLOC"


def user_tuned_malloc(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the user chose the allocator's behaviour; omnirl then leaves it alone.

    Chosen means ``OMNIRL_MALLOC=system``, any ``MALLOC_*`` variable, glibc's malloc tunables,
    or a preloaded allocator (jemalloc, tcmalloc).
    """
    return (
        environ.get(MALLOC_ENV, "") == "system"
        or any(key.startswith("MALLOC_") for key in environ)
        or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")
        or bool(environ.get("LD_PRELOAD", ""))
    )


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse (no mmap, trim above 2 GiB).

    Returns whether the setting was applied: not on other platforms or C libraries without
    ``mallopt``, nor when :func:`user_tuned_malloc`.
    """
    if not sys.platform.startswith("linux") or user_tuned_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbol table, or no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; both must hold for the blocks to stay in the heap.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
