"""Wrappers around the task families.

:class:`TaskInObservation` turns a task family into one ordinary MDP whose observation says which
task is active: the setting of the oracle baseline (a policy that is told the task, trained on
all tasks at once), the ceiling that meta-learners are compared with (Finn et al. 2017, sec. 5.3).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from omnirl.envs.tasks import TaskSpace


class TaskInObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Draw a new task at every reset and append its numbers to the observation.

    ``reset`` draws the task from ``task_space`` with the env's own generator (``np_random``),
    unless ``options={"task": ...}`` names one, and passes it to the env as
    ``reset(options={"task": task})``. Observations become ``[obs, task vector]`` with the task
    vector of :meth:`TaskSpace.to_vectors` (goal (2,) for navigation, velocity or direction (1,)
    for HalfCheetah, every physics multiplier for the domain families: 65 numbers for Walker2d);
    the observation box grows by the training tasks' bounds.

    Args:
        env: an env with the task API (``reset(options={"task": ...})`` and a ``task`` attribute).
        task_space: the family's task distribution.

    Example:
        >>> env = TaskInObservation(gym.make("omnirl/Navigation2D-v1"), NAVIGATION_TASKS)
        >>> obs, _ = env.reset(seed=0)  # doctest: +SKIP
        >>> obs  # position (0, 0) then the goal drawn for this episode  # doctest: +SKIP
        array([ 0.   ,  0.   ,  0.137, -0.394], dtype=float32)
    """

    def __init__(self, env: gym.Env, task_space: TaskSpace):
        # Recorded so that env.spec can remake the wrapped env (Gymnasium's check_env does).
        gym.utils.RecordConstructorArgs.__init__(self, task_space=task_space)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"TaskInObservation needs a flat Box observation space, got {space}")
        self.task_space = task_space
        low, high = task_space.vector_bounds()
        self.observation_space = gym.spaces.Box(
            np.concatenate([space.low, low]).astype(space.dtype),
            np.concatenate([space.high, high]).astype(space.dtype),
            dtype=space.dtype,
        )
        self._task_vector = task_space.to_vector(task_space.example()).astype(space.dtype)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset with a new task (drawn, or ``options["task"]``); the task is in the observation."""
        options = dict(options or {})
        if "task" not in options:
            if seed is not None:
                # Seed the env's generator as Env.reset(seed=seed) would, but before the draw:
                # the task then comes from the seeded stream and the env's own reset continues
                # that stream, whatever the env draws at reset (HalfCheetah's noise). Installed
                # through the np_random setter, so np_random_seed then reads -1.
                self.np_random = seeding.np_random(seed)[0]
                seed = None
            options["task"] = self.task_space.sample(1, self.np_random)[0]
        obs, info = self.env.reset(seed=seed, options=options)
        # The env's validated task (not the raw option), so the numbers are exactly the env's.
        task = self.get_wrapper_attr("task")
        self._task_vector = self.task_space.to_vector(task).astype(self.observation_space.dtype)
        return self.observation(obs), info

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """``[observation, task vector]``."""
        return np.concatenate([observation, self._task_vector]).astype(
            self.observation_space.dtype, copy=False
        )
