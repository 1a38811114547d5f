"""2D navigation (Finn et al. 2017, section 5.3): a point moves towards a hidden goal.

Observation: the position (2,). Action: in [-1, 1]^2 (values outside are clipped), mapped
linearly to a velocity in [-0.1, 0.1]^2, as the MAML reference does (its ``normalize``
wrapper). Reward per step: -||pos - goal||_2 after the move. The episode terminates when both
coordinates are within 0.01 of the goal; the horizon (100) comes from registration. Goals are
drawn from U[-0.5, 0.5]^2 and every episode starts at (0, 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from omnirl.envs.base import TaskEnvMixin, TaskVectorEnv, check_actions
from omnirl.envs.tasks import NAVIGATION_TASKS, Task

MAX_SPEED = 0.1
GOAL_TOLERANCE = 0.01


def _spaces() -> tuple[gym.spaces.Box, gym.spaces.Box]:
    obs = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    # The policy acts in the unit box, scaled to the speed limit in the dynamics. In velocity
    # units a Gaussian policy's initial std (1) would be ten times the speed limit, so almost
    # every action would be clipped: bang-bang noise that could never settle in the goal box.
    # maml after 100 iterations (seeds 0-2, 40 test tasks) returned -14.6 / -11.2 after 1 / 2
    # adaptation steps with actions in velocity units, and -11.5 / -6.2 in the unit box.
    act = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    return obs, act


def navigation_step(
    pos_N2: np.ndarray, goal_N2: np.ndarray, act_N2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move ``pos_N2`` by ``MAX_SPEED`` times the clipped actions; return positions, rewards, ends.

    ``reward = -sqrt(dx^2 + dy^2)`` with ``(dx, dy) = pos' - goal``; terminated when
    ``|dx| < 0.01 and |dy| < 0.01``. Used by both the single and the vector env.
    """
    pos_N2 = pos_N2 + MAX_SPEED * act_N2
    delta_N2 = pos_N2 - goal_N2
    reward_N = -np.sqrt(np.square(delta_N2).sum(axis=1))
    terminated_N = (np.abs(delta_N2) < GOAL_TOLERANCE).all(axis=1)
    return pos_N2, reward_N, terminated_N


class Navigation2DEnv(TaskEnvMixin, gym.Env):
    """One point-navigation task; ``task = {"goal": [x, y]}`` with x, y in [-0.5, 0.5]."""

    metadata = {"render_modes": []}
    task_space = NAVIGATION_TASKS

    def __init__(self, task: Task | None = None):
        self.observation_space, self.action_space = _spaces()
        self._pos = np.zeros((1, 2))
        self._init_task(task)

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        self._goal = np.array([t["goal"] for t in tasks], dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start at (0, 0); ``options={"task": ...}`` sets the task first."""
        super().reset(seed=seed)
        self._apply_reset_options(options)
        self._pos = np.zeros((1, 2))
        return self._pos[0].astype(np.float32), {}

    def step(self, action: Any):
        """Move by ``action`` (clipped); reward is minus the distance to the goal."""
        act = check_actions(action, self.action_space)
        self._pos, reward, terminated = navigation_step(self._pos, self._goal, act[None])
        return self._pos[0].astype(np.float32), float(reward[0]), bool(terminated[0]), False, {}


class Navigation2DVectorEnv(TaskVectorEnv):
    """N point-navigation sub-envs stepped with one numpy expression."""

    metadata = {"render_modes": []}
    task_space = NAVIGATION_TASKS

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 100,
        autoreset_mode: str = "NextStep",
        task: Task | Sequence[Task] | None = None,
    ):
        self._pos = np.zeros((num_envs, 2))
        obs_space, act_space = _spaces()
        super().__init__(num_envs, obs_space, act_space, max_episode_steps, autoreset_mode, task)

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        self._goal = np.array([t["goal"] for t in tasks], dtype=np.float64)

    def _reset_envs(self, ids: np.ndarray) -> None:
        self._pos[ids] = 0.0
        self._obs[ids] = 0.0

    def _step_envs(
        self, actions: np.ndarray, ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        pos, reward, terminated = navigation_step(self._pos, self._goal, actions)
        if ids is None:
            self._pos = pos
        else:
            self._pos[ids] = pos[ids]
        self._obs[:] = self._pos
        return reward, terminated


def optimal_return(goals_N2: np.ndarray, horizon: int) -> np.ndarray:
    """The best possible return for every goal: the greedy policy run by :func:`navigation_step`.

    ``a = clip((goal - pos) / 0.1, -1, 1)`` (clipped exactly as the env clips) is optimal: every
    step can shrink ``|dx|`` and ``|dy|`` by at most 0.1 each, independently, and the greedy action
    makes both as small as any policy can make them after every step. The reward is decreasing
    in both and termination (both below 0.01) needs both small, so it also ends the episode as
    early as possible. Rewards count until termination or ``horizon`` steps.

    Args:
        goals_N2: goals, ``(N, 2)``.
        horizon: steps per episode (the family's registered horizon is 100).

    Returns:
        ``(N,)`` undiscounted returns, e.g. -0.2 for goal (0.25, 0): distances 0.15, 0.05, 0.
    """
    goals_N2 = np.asarray(goals_N2, dtype=np.float64).reshape(-1, 2)
    action_space = _spaces()[1]
    pos_N2 = np.zeros_like(goals_N2)
    return_N = np.zeros(len(goals_N2))
    alive_N = np.ones(len(goals_N2), dtype=bool)
    for _ in range(horizon):
        act_N2 = check_actions((goals_N2 - pos_N2) / MAX_SPEED, action_space, len(goals_N2))
        pos_N2, reward_N, terminated_N = navigation_step(pos_N2, goals_N2, act_N2)
        return_N += np.where(alive_N, reward_N, 0.0)
        alive_N &= ~terminated_N
        if not alive_N.any():
            break
    return return_N


def optimal_task_returns(tasks: Sequence[Mapping[str, Any]], horizon: int) -> np.ndarray:
    """:func:`optimal_return` of every task (the family's ``optimum`` entry point)."""
    return optimal_return(np.array([task["goal"] for task in tasks], dtype=np.float64), horizon)
