"""Walker2d rand-params (PEARL's benchmark): walk forward in a random physics domain.

The single env subclasses Gymnasium's ``Walker2dEnv``, so model (``walker2d_v5.xml``), frame skip
(4, dt = 0.008), reset noise (uniform, 5e-3), observation (qpos[1:], qvel clipped to [-10, 10]),
action box ([-1, 1]^6) and reward are exactly Gymnasium's ``Walker2d-v5``:

    reward = (v + 1[healthy]) - 0.001 ||ctrl||^2,   v = (x_after - x_before) / dt

and an episode terminates when the walker is unhealthy: torso height z outside (0.8, 2) or
torso angle outside (-1, 1). The task is the physics domain only: multipliers ``1.5^u`` of every
body mass and inertia and geom friction, ``1.3^u`` of every dof damping, ``u ~ U[-3, 3]`` per
element, as PEARL's ``walker_rand_params``. The horizon is 200 (registration).
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from omnirl.envs.locomotion import HealthyTaskEnv, HealthyTaskVectorEnv
from omnirl.envs.tasks import WALKER2D_TASKS

HEALTHY_Z = (0.8, 2.0)
HEALTHY_ANGLE = (-1.0, 1.0)


def walker_healthy(qpos_NQ: np.ndarray, qvel_NV: np.ndarray) -> np.ndarray:
    """``Walker2dEnv.is_healthy`` per row: torso height and angle strictly inside their ranges."""
    z, angle = qpos_NQ[:, 1], qpos_NQ[:, 2]
    healthy_z = (HEALTHY_Z[0] < z) & (z < HEALTHY_Z[1])
    return healthy_z & (HEALTHY_ANGLE[0] < angle) & (angle < HEALTHY_ANGLE[1])


class Walker2dRandParamsEnv(HealthyTaskEnv, Walker2dEnv):
    """Gymnasium's Walker2d-v5 in its task's physics domain (``omnirl/Walker2dRandParams-v0``)."""

    task_space = WALKER2D_TASKS
    _healthy = staticmethod(walker_healthy)


class Walker2dRandParamsVectorEnv(HealthyTaskVectorEnv):
    """Native vector env of ``omnirl/Walker2dRandParams-v0``: one domain per sub-env."""

    task_space = WALKER2D_TASKS
    single_env_class = Walker2dRandParamsEnv
