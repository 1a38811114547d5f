"""HalfCheetah task families (Finn et al. 2017, section 5.3) on Gymnasium's HalfCheetah-v5 physics.

The single envs subclass Gymnasium's ``HalfCheetahEnv``, so model, frame skip (5, dt = 0.05),
reset noise and observation (qpos[1:], qvel) are exactly Gymnasium's. The policy acts in
[-10, 10]^6, mapped linearly to ctrl in [-1, 1]^6 (as the MAML references scale it). Rewards:

- velocity:  -|v - v_goal| - 0.05 ||ctrl||^2,  v_goal ~ U[0, 2]
- direction:  d * v - 0.05 ||ctrl||^2,          d in {-1, +1}

with ``v = (x_after - x_before) / dt``. ``halfcheetah-vel-domains`` is the velocity task in a
physics domain (its tasks carry multipliers of masses, inertias, damping and friction); every
HalfCheetah family accepts such multipliers (its ``ood-physics`` split draws them). The vector
envs (``omnirl.envs.locomotion.MujocoTaskVectorEnv``) keep every sub-env's full integration
state in one ``mujoco.batch.Batch``, bit-identical to stepping one ``MjData`` per sub-env.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from omnirl.envs.base import check_actions
from omnirl.envs.locomotion import MujocoTaskEnv, MujocoTaskVectorEnv
from omnirl.envs.tasks import (
    DIRECTION_TASKS,
    VELOCITY_DOMAIN_TASKS,
    VELOCITY_TASKS,
    Task,
    TaskSpace,
)

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

    def _set_objective(self, tasks: list[Task]) -> None:
        self._target = np.array([t[self.task_key] for t in tasks], dtype=np.float64)

    def _reward(self, v_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _VelocityObjective(_Objective):
    task_space = VELOCITY_TASKS
    task_key = "velocity"

    def _reward(self, v_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
        return velocity_reward(v_N, self._target, ctrl_NA)


class _VelocityDomainObjective(_VelocityObjective):
    task_space = VELOCITY_DOMAIN_TASKS


class _DirectionObjective(_Objective):
    task_space = DIRECTION_TASKS
    task_key = "direction"

    def _reward(self, v_N: np.ndarray, ctrl_NA: np.ndarray) -> np.ndarray:
        return direction_reward(v_N, self._target, ctrl_NA)


class HalfCheetahTaskEnv(MujocoTaskEnv, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a task-dependent reward and a [-10, 10]^6 action box."""

    def _set_action_space(self) -> gym.spaces.Box:
        # MujocoEnv derives the box from ctrlrange; the MAML tasks use a scaled box instead.
        self.action_space = action_space()
        return self.action_space

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


class HalfCheetahVelDomainsEnv(_VelocityDomainObjective, HalfCheetahTaskEnv):
    """A goal velocity in a physics domain, ``{"velocity": v, "body_mass": [...], ...}``."""


class HalfCheetahTaskVectorEnv(MujocoTaskVectorEnv):
    """N HalfCheetah sub-envs in one ``mujoco.batch.Batch`` (see ``MujocoTaskVectorEnv``)."""

    single_env_class: ClassVar[type[HalfCheetahTaskEnv]]

    def _reset_qvel(self, rng: np.random.Generator, nv: int) -> np.ndarray:
        # HalfCheetahEnv.reset_model: Gaussian velocity noise (Walker2d and Hopper: uniform).
        return self._noise * rng.standard_normal(nv)

    def _ctrl(self, actions: np.ndarray) -> np.ndarray:
        return action_to_ctrl(actions)

    def _reward_terminated(
        self, v_N: np.ndarray, ctrl_NA: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._reward(v_N, ctrl_NA), np.zeros(self.num_envs, dtype=bool)


class HalfCheetahVelVectorEnv(_VelocityObjective, HalfCheetahTaskVectorEnv):
    """Native vector env of ``omnirl/HalfCheetahVel-v0``."""

    single_env_class = HalfCheetahVelEnv


class HalfCheetahDirVectorEnv(_DirectionObjective, HalfCheetahTaskVectorEnv):
    """Native vector env of ``omnirl/HalfCheetahDir-v0``."""

    single_env_class = HalfCheetahDirEnv


class HalfCheetahVelDomainsVectorEnv(_VelocityDomainObjective, HalfCheetahTaskVectorEnv):
    """Native vector env of ``omnirl/HalfCheetahVelDomains-v0``."""

    single_env_class = HalfCheetahVelDomainsEnv
