"""HalfCheetah task families (Finn et al. 2017, section 5.3) on Gymnasium's HalfCheetah-v5 physics.

The single envs subclass Gymnasium's ``HalfCheetahEnv``, so model, frame skip (5, dt = 0.05),
reset noise and observation (qpos[1:], qvel) are exactly Gymnasium's. The policy acts in
[-10, 10]^6, mapped linearly to ctrl in [-1, 1]^6 (as the MAML references scale it). Rewards:

- velocity:  -|v - v_goal| - 0.05 ||ctrl||^2,  v_goal ~ U[0, 2]
- direction:  d * v - 0.05 ||ctrl||^2,          d in {-1, +1}

with ``v = (x_after - x_before) / dt``. The vector envs keep every sub-env's full integration
state (including the solver warm start) in one ``mujoco.batch.Batch`` and step all of them on a
thread pool in C, which is bit-identical to stepping one ``MjData`` per sub-env.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from mujoco import batch as mjbatch

from omnirl.envs.base import TaskEnvMixin, TaskVectorEnv, check_actions
from omnirl.envs.tasks import DIRECTION_TASKS, VELOCITY_TASKS, Task, TaskSpace
from omnirl.threads import available_cores

ACTION_SCALE = 10.0
CTRL_COST_WEIGHT = 0.05


def action_space() -> gym.spaces.Box:
    """The policy's action box, [-10, 10]^6."""
    return gym.spaces.Box(-ACTION_SCALE, ACTION_SCALE, shape=(6,), dtype=np.float32)


def action_to_ctrl(act_NA: np.ndarray) -> np.ndarray:
    """Map actions in [-10, 10] linearly to MuJoCo ctrl in [-1, 1], clipping the rest."""
    return np.clip(act_NA / ACTION_SCALE, -1.0, 1.0)


def ctrl_cost(ctrl_NA: np.ndarray) -> np.ndarray:
    """``0.05 * ||ctrl||^2`` per row."""
    return CTRL_COST_WEIGHT * np.square(ctrl_NA).sum(axis=1)


def velocity_reward(v_N: np.ndarray, goal_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
    """HalfCheetahVel reward ``-|v - v_goal| - 0.05 ||ctrl||^2``."""
    return -np.abs(v_N - goal_N) - ctrl_cost(ctrl_NA)


def direction_reward(v_N: np.ndarray, direction_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
    """HalfCheetahDir reward ``d * v - 0.05 ||ctrl||^2``."""
    return direction_N * v_N - ctrl_cost(ctrl_NA)


class _Objective:
    """What distinguishes the two families: the task field and the reward function."""

    task_space: ClassVar[TaskSpace]
    task_key: ClassVar[str]

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        self._target = np.array([t[self.task_key] for t in tasks], dtype=np.float64)

    def _reward(self, v_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _VelocityObjective(_Objective):
    task_space = VELOCITY_TASKS
    task_key = "velocity"

    def _reward(self, v_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
        return velocity_reward(v_N, self._target, ctrl_NA)


class _DirectionObjective(_Objective):
    task_space = DIRECTION_TASKS
    task_key = "direction"

    def _reward(self, v_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
        return direction_reward(v_N, self._target, ctrl_NA)


@contextmanager
def mujoco_warnings_as_python_warnings() -> Iterator[None]:
    """Route MuJoCo's warnings to Python's ``warnings`` inside the block.

    By default MuJoCo prints every warning and appends it to ``MUJOCO_LOG.TXT`` in the working
    directory; Gymnasium's ``half_cheetah.xml`` triggers a deprecation warning (``settotalmass``)
    at every model load, which would leave such a file in every folder omnirl runs in. As a
    Python warning it is shown once and can be filtered.
    """
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=2))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class HalfCheetahTaskEnv(TaskEnvMixin, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a task-dependent reward and a [-10, 10]^6 action box."""

    def __init__(self, task: Task | None = None, render_mode: str | None = None, **kwargs: Any):
        with mujoco_warnings_as_python_warnings():
            super().__init__(render_mode=render_mode, **kwargs)
        # Offscreen modes only: omnirl renders to video files, and "human" needs a display.
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": round(1.0 / self.dt)}
        self._init_task(task)

    def _set_action_space(self) -> gym.spaces.Box:
        # MujocoEnv derives the box from ctrlrange; the MAML tasks use a scaled box instead.
        self.action_space = action_space()
        return self.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Gymnasium's reset (same noise and generator); ``options={"task": ...}`` sets the task."""
        self._apply_reset_options(options)
        return super().reset(seed=seed)

    def step(self, action: Any):
        """Apply ``action`` for 5 physics steps; reward depends on the task."""
        ctrl = action_to_ctrl(check_actions(action, self.action_space)[None])
        x_before = self.data.qpos[0]
        self.do_simulation(ctrl[0], self.frame_skip)
        velocity = (self.data.qpos[0] - x_before) / self.dt
        reward = self._reward(np.array([velocity]), ctrl)
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), float(reward[0]), False, False, {"x_velocity": velocity}


class HalfCheetahVelEnv(_VelocityObjective, HalfCheetahTaskEnv):
    """Run at a goal velocity ``{"velocity": v}``, v in [0, 2]."""


class HalfCheetahDirEnv(_DirectionObjective, HalfCheetahTaskEnv):
    """Run forward or backward, ``{"direction": d}``, d in {-1, +1}."""


class HalfCheetahTaskVectorEnv(TaskVectorEnv):
    """N HalfCheetah sub-envs in one ``mujoco.batch.Batch``; observations and rewards in numpy.

    Args:
        num_envs: number of sub-envs.
        max_episode_steps: horizon (200 from registration).
        autoreset_mode: Gymnasium's autoreset mode (``"NextStep"`` by default).
        task: one task for all sub-envs or one per sub-env.
        num_threads: physics threads (default: every available core).
    """

    metadata = {"render_modes": []}
    single_env_class: ClassVar[type[HalfCheetahTaskEnv]]

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 200,
        autoreset_mode: str = "NextStep",
        task: Task | Sequence[Task] | None = None,
        num_threads: int | None = None,
    ):
        # One single env serves as the template: the same model file and initial state.
        self._template = self.single_env_class()
        model = self._template.model
        self._frame_skip = self._template.frame_skip
        self._dt = self._template.dt
        self._noise = self._template._reset_noise_scale
        self.batch = mjbatch.Batch(model, num_envs, nthread=num_threads or available_cores())
        self._qpos = self.batch.bind("qpos")
        self._qvel = self.batch.bind("qvel")
        self._ctrl = self.batch.bind("ctrl")
        super().__init__(
            num_envs,
            self._template.observation_space,
            self._template.action_space,
            max_episode_steps,
            autoreset_mode,
            task,
        )

    def _reset_envs(self, ids: np.ndarray) -> None:
        # The same draws in the same order as HalfCheetahEnv.reset_model, per sub-env generator.
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        nq, nv = self._qpos.shape[1], self._qvel.shape[1]
        init_qpos, init_qvel = self._template.init_qpos, self._template.init_qvel
        for i in ids:
            rng = self._rng(i)
            self._qpos[i] = init_qpos + rng.uniform(low=-self._noise, high=self._noise, size=nq)
            self._qvel[i] = init_qvel + self._noise * rng.standard_normal(nv)
        self._obs[ids, :-nv] = self._qpos[ids, 1:]
        self._obs[ids, -nv:] = self._qvel[ids]

    def _step_envs(
        self, actions: np.ndarray, ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        ctrl = action_to_ctrl(actions)
        self._ctrl[:] = ctrl
        x_before = self._qpos[:, 0].copy()
        self.batch.step(ids, nstep=self._frame_skip)
        velocity = (self._qpos[:, 0] - x_before) / self._dt
        nv = self._qvel.shape[1]
        self._obs[:, :-nv] = self._qpos[:, 1:]
        self._obs[:, -nv:] = self._qvel
        return self._reward(velocity, ctrl), np.zeros(self.num_envs, dtype=bool)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the template env."""
        self._template.close()


class HalfCheetahVelVectorEnv(_VelocityObjective, HalfCheetahTaskVectorEnv):
    """Native vector env of ``omnirl/HalfCheetahVel-v0``."""

    single_env_class = HalfCheetahVelEnv


class HalfCheetahDirVectorEnv(_DirectionObjective, HalfCheetahTaskVectorEnv):
    """Native vector env of ``omnirl/HalfCheetahDir-v0``."""

    single_env_class = HalfCheetahDirEnv
