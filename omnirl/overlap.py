"""Overlapped collection: one part of the sub-envs steps its physics while the other is acted on.

The MuJoCo families step every sub-env's physics on a thread pool in C that releases the GIL,
and between two physics calls the collector's policy call, sampling and the envs' observation
and reward work run on one core while the pool waits. Split into two parts (whole tasks each),
the batch is stepped part by part on one worker thread, and the main thread computes one part's
actions while the other part's physics runs: the single-threaded work between physics calls
hides behind physics instead of adding to it. That pays only where a core would otherwise idle:
on 2 cores the physics threads already fill both, and an overlapped HalfCheetahVel collection
ran at 0.97 of the sequential one, so it is opt-in (``Collector(overlap=True)``).

The episodes equal the sequential collector's bit for bit (tested): each part is its own vector
env holding the same sub-envs (reset seeds ``seed + i`` by place in the whole batch), the
action noise of a step is drawn for every group in the sequential order once the step is known
to happen, and the policy is called as sequentially: the parts split between rollout groups,
and a single group into two halves of many rows each, whose rows come out of one torch thread
as they do from the whole call (no reduction runs across rows).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def step_running(env: Any, actions: np.ndarray, running: np.ndarray) -> tuple:
    """``env.step(actions)``, leaving out the sub-envs whose episode ended where the env can.

    omnirl's native vector envs (``step_mask``) take ``mask=running`` and spend no physics on
    finished sub-envs; Gymnasium's vector envs step (and autoreset) every sub-env. The episodes
    collected are the same either way.
    """
    if getattr(env.unwrapped, "step_mask", False):
        return env.step(actions, mask=running)
    return env.step(actions)


@dataclass
class Part:
    """One part of the batch: sub-envs ``lo .. hi - 1`` of the whole, in their own vector env."""

    env: Any
    lo: int
    hi: int

    @property
    def rows(self) -> slice:
        """The part's rows of the whole batch."""
        return slice(self.lo, self.hi)


# A part's policy call on fewer rows may round differently (BLAS takes other paths for a few
# rows); a batch this small steps too fast for an overlap to pay anyway.
MIN_PART_ROWS = 32


def split_point(num_groups: int, per_group: int, episodes_per_task: int) -> int:
    """Where the batch of ``num_groups`` x ``per_group`` sub-envs splits (0: it does not).

    Between groups where there are several, so every policy call is the sequential one; one
    group splits at the task boundary nearest half, if both halves have ``MIN_PART_ROWS``.
    """
    if num_groups > 1:
        return (num_groups // 2) * per_group
    split = (per_group // episodes_per_task // 2) * episodes_per_task
    return split if min(split, per_group - split) >= MIN_PART_ROWS else 0


class Pipeline:
    """The per-step state of one overlapped collection (see the module docstring).

    Args:
        parts: the two parts, in order, covering the whole batch.
        act: ``(step t, rows) -> (loc, scale)`` of the rows' groups at their current obs.
        noise: ``step t -> (N, A)`` noise of every sub-env, drawn in the sequential order.
        buffers: the collector's ``(obs, act, noise, scale, rew, valid)`` arrays, ``(T, N, ...)``.
    """

    def __init__(self, parts: list[Part], act: Any, noise: Any, buffers: tuple[np.ndarray, ...]):
        self.parts, self.act, self.noise = parts, act, noise
        self.obs_TNO, self.act_TNA, self.noise_TNA, self.scale_TNA = buffers[:4]
        self.rew_TN, self.valid_TN = buffers[4:]
        self.alive_N = np.ones(self.valid_TN.shape[1], dtype=bool)
        self.policy_s = 0.0

    def run(self, horizon: int) -> int:
        """Steps until every episode ended or ``horizon``; returns the steps taken."""
        a, b = self.parts
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnirl-physics") as worker:
            pending_b: Future | None = None
            loc_a = self._policy(0, a)
            for t in range(horizon):
                if pending_b is not None:
                    self._finish(t - 1, b, pending_b)
                    if not self.alive_N.any():
                        return t
                self.valid_TN[t] = self.alive_N
                noise_NA = self.noise(t)
                actions_a = self._actions(t, a, loc_a, noise_NA)
                pending_a = worker.submit(step_running, a.env, actions_a, self._running(a))
                loc_b = self._policy(t, b)  # while part a's physics runs
                actions_b = self._actions(t, b, loc_b, noise_NA)
                self._finish(t, a, pending_a)
                pending_b = worker.submit(step_running, b.env, actions_b, self._running(b))
                if t + 1 < horizon:
                    loc_a = self._policy(t + 1, a)  # while part b's physics runs
            assert pending_b is not None
            self._finish(horizon - 1, b, pending_b)
        return horizon

    def _running(self, part: Part) -> np.ndarray:
        # Copied on the main thread when the step is submitted, before _finish updates alive_N.
        return self.alive_N[part.rows].copy()

    def _policy(self, t: int, part: Part) -> tuple[torch.Tensor, torch.Tensor]:
        tic = time.perf_counter()
        out = self.act(t, part.rows)
        self.policy_s += time.perf_counter() - tic
        return out

    def _actions(self, t: int, part: Part, loc_scale: tuple, noise_NA: torch.Tensor) -> np.ndarray:
        loc, scale = loc_scale
        rows = part.rows
        act = torch.addcmul(loc, scale, noise_NA[rows]).numpy()
        self.act_TNA[t, rows], self.noise_TNA[t, rows] = act, noise_NA[rows].numpy()
        self.scale_TNA[t, rows] = scale.numpy()
        if not np.isfinite(self.act_TNA[t, rows][self.alive_N[rows]]).all():
            raise FloatingPointError(
                f"the policy produced non-finite actions at step {t} (diverged parameters?)"
            )
        return self.act_TNA[t, rows]

    def _finish(self, t: int, part: Part, pending: Future) -> None:
        obs, rew, terminated, truncated, _ = pending.result()
        rows = part.rows
        self.rew_TN[t, rows] = rew
        self.alive_N[rows] &= ~(np.asarray(terminated) | np.asarray(truncated))
        if t + 1 < len(self.obs_TNO):
            self.obs_TNO[t + 1, rows] = obs  # copied now: the env reuses its buffer
