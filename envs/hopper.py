"""Hopper rand-params (PEARL's benchmark): hop forward in a random physics domain.

The single env subclasses Gymnasium's ``HopperEnv``, so model (``hopper.xml``), frame skip
(4, dt = 0.008), reset noise (uniform, 5e-3), observation (qpos[1:], qvel clipped to [-10, 10]),
action box ([-1, 1]^3) and reward are exactly Gymnasium's ``Hopper-v5``:

    reward = (v + 1[healthy]) - 0.001 ||ctrl||^2,   v = (x_after - x_before) / dt

and an episode terminates when the hopper is unhealthy: any of qpos[2:], qvel outside
(-100, 100), torso height z at most 0.7, or torso angle outside (-0.2, 0.2). The task is the
physics domain only (multipliers as ``walker2d-rand-params``, ``u ~ U[-3, 3]`` per element, as
PEARL's ``hopper_rand_params``). The horizon is 200 (registration).
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

from omnirl.envs.locomotion import HealthyTaskEnv, HealthyTaskVectorEnv
from omnirl.envs.tasks import HOPPER_TASKS

HEALTHY_STATE = (-100.0, 100.0)
HEALTHY_Z = (0.7, float("inf"))
HEALTHY_ANGLE = (-0.2, 0.2)


def hopper_healthy(qpos_NQ: np.ndarray, qvel_NV: np.ndarray) -> np.ndarray:
    """``HopperEnv.is_healthy`` per row: state, height and angle strictly inside their ranges."""
    state = np.concatenate([qpos_NQ[:, 2:], qvel_NV], axis=1)
    healthy_state = ((HEALTHY_STATE[0] < state) & (state < HEALTHY_STATE[1])).all(axis=1)
    z, angle = qpos_NQ[:, 1], qpos_NQ[:, 2]
    healthy_z = (HEALTHY_Z[0] < z) & (z < HEALTHY_Z[1])
    healthy_angle = (HEALTHY_ANGLE[0] < angle) & (angle < HEALTHY_ANGLE[1])
    return healthy_state & healthy_z & healthy_angle


class HopperRandParamsEnv(HealthyTaskEnv, HopperEnv):
    """Gymnasium's Hopper-v5 in the physics domain of its task (``omnirl/HopperRandParams-v0``)."""

    task_space = HOPPER_TASKS
    _healthy = staticmethod(hopper_healthy)


class HopperRandParamsVectorEnv(HealthyTaskVectorEnv):
    """Native vector env of ``omnirl/HopperRandParams-v0``: one domain per sub-env."""

    task_space = HOPPER_TASKS
    single_env_class = HopperRandParamsEnv
