"""Shared machinery of the task families: the task API and the native vector env.

Every family is a pair: a ``gymnasium.Env`` (``TaskEnvMixin``) and a ``gymnasium.vector.VectorEnv``
(``TaskVectorEnv``) that steps all N sub-envs in one call. Both compute rewards with the same
numpy functions on ``(N, ...)`` arrays (the single env with N = 1), which is what makes them give
bit-identical results for the same seed, tasks and actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from omnirl.envs.tasks import Task, TaskSpace


def check_actions(actions: Any, space: gym.spaces.Box, num_envs: int | None = None) -> np.ndarray:
    """Return ``actions`` as a float64 array clipped to ``space``, after checking its shape.

    Args:
        actions: one action (``num_envs is None``) or a batch of ``num_envs`` actions.
        space: the single-env action space; values outside it are clipped, as the MAML
            references do, because Gaussian policies sample outside any box.
        num_envs: batch size, or ``None`` for a single action.

    Raises:
        ValueError: wrong shape or non-finite values; names the expected shape and range.
    """
    shape = space.shape if num_envs is None else (num_envs, *space.shape)
    allowed = f"[{space.low.min():g}, {space.high.max():g}], values outside are clipped"
    try:
        arr = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"action must be numeric with shape {shape}, got {actions!r:.200}"
        ) from None
    if arr.shape != shape:
        raise ValueError(f"action must have shape {shape} (range {allowed}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action must be finite (range {allowed}), got {actions!r:.200}")
    return np.clip(arr, space.low, space.high)


class TaskEnvMixin:
    """Task API for a single ``gymnasium.Env``: a validated ``task`` that persists across resets.

    Subclasses set ``task_space`` and implement ``_set_task_arrays(tasks)``, which stores the
    task as ``(1, ...)`` arrays for the shared reward functions.
    """

    task_space: ClassVar[TaskSpace]

    def _init_task(self, task: Task | None) -> None:
        self.task = self.task_space.example() if task is None else task

    @property
    def task(self) -> Task:
        """The current task (a dict); setting it validates it and keeps it across resets."""
        return dict(self._task)

    @task.setter
    def task(self, task: Task) -> None:
        self._task = self.task_space.validate(task)
        self._set_task_arrays([self._task])

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks from the family's distribution with the generator ``rng``."""
        return cls.task_space.sample(n, rng)

    def _apply_reset_options(self, options: dict | None) -> None:
        if options and "task" in options:
            self.task = options["task"]

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        raise NotImplementedError


class TaskVectorEnv(VectorEnv):
    """A native vector env with the task API: per-sub-env tasks, seeds, step counters, autoreset.

    Sub-env ``i`` seeded with ``seed`` uses ``seed + i``, as Gymnasium's ``SyncVectorEnv``
    does, so a native vector env equals N single envs created with ``gymnasium.make``.
    Subclasses implement ``_set_task_arrays``, ``_reset_envs`` and ``_step_envs``.
    """

    task_space: ClassVar[TaskSpace]
    # ``step`` takes ``mask=`` (Gymnasium's vector envs do not); the collector, which imports
    # no env module, looks for this flag.
    step_mask: ClassVar[bool] = True

    def __init__(
        self,
        num_envs: int,
        single_observation_space: gym.spaces.Box,
        single_action_space: gym.spaces.Box,
        max_episode_steps: int | None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        task: Task | Sequence[Task] | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, num_envs)
        self.action_space = batch_space(single_action_space, num_envs)
        self.max_episode_steps = max_episode_steps
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        # Generators are made on first use from the last seed given: families whose resets
        # draw nothing (navigation) never pay for 400 generators per reset.
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._seeds: list[int | None] = [None] * num_envs
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._obs = np.zeros(
            (num_envs, *single_observation_space.shape), single_observation_space.dtype
        )
        self.task = self.task_space.example() if task is None else task

    # ----------------------------------------------------------------------------- task API
    @property
    def task(self) -> list[Task]:
        """One task per sub-env; set it with a list (one each) or a single task for all."""
        return [dict(t) for t in self._tasks]

    @task.setter
    def task(self, tasks: Task | Sequence[Task]) -> None:
        self._tasks = self.task_space.validate_many(tasks, self.num_envs)
        self._set_task_arrays(self._tasks)

    @classmethod
    def sample_tasks(cls, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks from the family's distribution with the generator ``rng``."""
        return cls.task_space.sample(n, rng)

    def set_attr(self, name: str, values: Any) -> None:
        """Set an attribute per sub-env; ``set_attr("task", [t0, t1, ...])`` sets one task each."""
        if name != "task":
            raise AttributeError(
                f"{type(self).__name__} only supports set_attr('task', ...), not {name!r}"
            )
        if isinstance(values, (list, tuple)) and len(values) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} tasks (one per sub-env), got {len(values)}")
        self.task = values

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Return an attribute per sub-env (``"task"``) or a shared attribute, as a tuple."""
        if name == "task":
            return tuple(self.task)
        return tuple(getattr(self, name) for _ in range(self.num_envs))

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method on the vector env once and return its result for each sub-env."""
        attr = getattr(self, name)
        result = attr(*args, **kwargs) if callable(attr) else attr
        return tuple(result for _ in range(self.num_envs))

    # ---------------------------------------------------------------------------- Gymnasium
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        """Reset all sub-envs (or those in ``options["reset_mask"]``).

        Args:
            seed: one int (sub-env i gets ``seed + i``), one seed per sub-env, or ``None``.
            options: ``{"task": task or [task per sub-env]}`` sets tasks first;
                ``{"reset_mask": bool array}`` resets only those sub-envs.
        """
        options = options or {}
        if "task" in options:
            self.task = options["task"]
        if seed is None:
            seeds: Sequence[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
        mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
        ids = np.flatnonzero(mask)
        for i in ids:
            if seeds[i] is not None:
                self._rngs[i], self._seeds[i] = None, seeds[i]
        self._reset_ids(ids)
        return self._obs.copy(), {}

    def step(
        self, actions: Any, mask: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every sub-env; those that ended on the previous step reset instead (NEXT_STEP).

        Args:
            actions: ``(N, A)`` actions (rows of sub-envs left out by ``mask`` are ignored).
            mask: ``(N,)`` bools, step only these sub-envs (envpool's ``env_id``). The others
                cost no physics and keep their state, step counter and pending autoreset; they
                report their last observation, reward 0 and neither terminated nor truncated.
                A collector passes the sub-envs whose episodes are still running, so an early
                termination (Hopper, Walker2d) does not keep a finished sub-env stepping.
        """
        clipped = check_actions(actions, self.single_action_space, self.num_envs)
        active = np.ones(self.num_envs, dtype=bool)
        if mask is not None:
            active = np.asarray(mask, dtype=bool)
            if active.shape != (self.num_envs,):
                raise ValueError(f"mask must have shape ({self.num_envs},), got {active.shape}")
        to_reset = self._autoreset & active
        if self.autoreset_mode is AutoresetMode.DISABLED and to_reset.any():
            raise RuntimeError(
                f"sub-envs {np.flatnonzero(to_reset)[:8].tolist()} ended; with autoreset disabled, "
                "reset them with options={'reset_mask': ...} before stepping"
            )
        stepping_N = active & ~to_reset
        if stepping_N.all():
            rewards, terminated = self._step_envs(clipped, None)
        elif stepping_N.any():
            rewards, terminated = self._step_envs(clipped, np.flatnonzero(stepping_N))
        else:  # nothing to simulate: every active sub-env resets below
            rewards, terminated = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=bool)
        self._elapsed[active] += 1
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = self._elapsed >= self.max_episode_steps
        truncated &= ~terminated
        infos: dict[str, Any] = {}
        if to_reset.any():
            self._reset_ids(np.flatnonzero(to_reset))
        idle = to_reset | ~active  # stepped no physics this call
        if idle.any():
            rewards[idle] = 0.0
            terminated[idle] = truncated[idle] = False
        done = terminated | truncated
        if self.autoreset_mode is AutoresetMode.SAME_STEP and done.any():
            infos = {"final_obs": self._obs.copy(), "_final_obs": done.copy()}
            self._reset_ids(np.flatnonzero(done))
        else:
            self._autoreset = np.where(active, done, self._autoreset)
        return self._obs.copy(), rewards, terminated, truncated, infos

    def _reset_ids(self, ids: np.ndarray) -> None:
        if len(ids):
            self._reset_envs(ids)
            self._elapsed[ids] = 0
            self._autoreset[ids] = False

    # ----------------------------------------------------------------------- for subclasses
    def _rng(self, i: int) -> np.random.Generator:
        """Sub-env ``i``'s generator, seeded as ``Env.reset(seed=...)`` seeds a single env."""
        rng = self._rngs[i]
        if rng is None:  # seeded with the last seed given, or randomly if none was
            rng = self._rngs[i] = seeding.np_random(self._seeds[i])[0]
        return rng

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        raise NotImplementedError

    def _reset_envs(self, ids: np.ndarray) -> None:
        """Reset sub-envs ``ids`` with generators ``self._rng(i)``; write ``self._obs[ids]``."""
        raise NotImplementedError

    def _step_envs(
        self, actions: np.ndarray, ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step sub-envs ``ids`` (all if None), update ``self._obs``; return reward, terminated."""
        raise NotImplementedError
