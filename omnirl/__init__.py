"""omnirl: Omni-Training for data-efficient meta-reinforcement learning.

Importing ``omnirl`` is cheap (no torch, no MuJoCo): the command line starts fast, and the
families (``omnirl.envs``) and agents (``omnirl.agents``) are resolved by name when used.
"""

import os

# Meta-gradient graphs allocate many fresh ~40 MB activations per iteration; backing them with
# transparent huge pages cut page faults 10x and a HalfCheetah omni TRPO step by ~20% here.
# PyTorch reads this when it first allocates, so it is set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# torch's OpenMP (libgomp) lets a thread that waits for the rest of its team spin 300,000
# times before it sleeps. On cores of its own that saves a wake-up; beside another CPU-bound
# process the spinning thread takes the core from the one it waits for. Navigation2D maml
# iterations (bench/iteration.py --threads-mode, medians of 5): 0.52 s idle and 1.17 s beside
# one competitor with 300,000 spins, 0.51 and 0.75 s with 500, 0.65 and 0.69 s on one thread;
# at 200 spins idle iterations often took twice as long. HalfCheetahVel at paper scale did not
# resolve a difference. How many times a thread spins does not change which thread computes
# what, so the numbers stay bit for bit the same. libgomp reads the count when torch loads it:
# set before torch is imported.
os.environ.setdefault("GOMP_SPINCOUNT", "500")

# Freed large blocks stay in the heap for the next iteration instead of going back to the OS
# (omnirl.memory: a fifth of a HalfCheetah omni iteration's CPU time went to faulting them in
# again). Applies to allocations from here on; a user's own MALLOC_* settings win.
from omnirl.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()

__version__ = "0.1.0"
