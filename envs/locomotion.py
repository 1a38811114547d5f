"""What the MuJoCo locomotion families share: the task API with physics domains, and the vector env.

A family's single env subclasses Gymnasium's own env (``HalfCheetahEnv``, ``Walker2dEnv``,
``HopperEnv``) with :class:`MujocoTaskEnv`, so model file, frame skip, reset noise and
observation are exactly Gymnasium's; a task's physics multipliers change the env's own model
(:class:`omnirl.envs.physics.ModelDomain`). Its native vector env, a
:class:`MujocoTaskVectorEnv`, keeps every sub-env's full integration state (including the
solver warm start) in one ``mujoco.batch.Batch``, steps all of them on a thread pool in C, and
gives each simulation its own domain (:class:`omnirl.envs.physics.BatchDomains`); that is
bit-identical to stepping one ``MjData`` per sub-env on its own model. Both compute rewards with
the same numpy functions on ``(N, ...)`` arrays (the single env with N = 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import mujoco
import numpy as np
from mujoco import batch as mjbatch

from omnirl.envs.base import TaskEnvMixin, TaskVectorEnv, check_actions
from omnirl.envs.physics import BatchDomains, ModelDomain, task_multipliers
from omnirl.envs.tasks import Task
from omnirl.threads import available_cores


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


def healthy_reward(
    v_N: np.ndarray,
    ctrl_NA: np.ndarray,
    healthy_N: np.ndarray,
    ctrl_cost_weight: float = 1e-3,
) -> np.ndarray:
    """Walker2d-v5's and Hopper-v5's reward: ``(v + 1[healthy]) - 0.001 ||ctrl||^2``.

    The forward and healthy weights are 1; the terms are added in Gymnasium's order, so the
    result equals its ``_get_rew`` bit for bit.
    """
    return (1.0 * v_N + healthy_N * 1.0) - ctrl_cost_weight * np.square(ctrl_NA).sum(axis=1)


class MujocoTaskEnv(TaskEnvMixin):
    """Task API for a subclass of a Gymnasium ``MujocoEnv``: an objective and a physics domain.

    Subclasses may implement ``_set_objective(tasks)`` (what the reward needs from the task, as
    ``(1, ...)`` arrays); the physics multipliers are applied here.
    """

    def __init__(self, task: Task | None = None, render_mode: str | None = None, **kwargs: Any):
        with mujoco_warnings_as_python_warnings():
            super().__init__(render_mode=render_mode, **kwargs)  # type: ignore[call-arg]
        # Offscreen modes only: omnirl renders to video files, and "human" needs a display.
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": round(1.0 / self.dt)}
        self._domain = ModelDomain(self.model)
        self._init_task(task)

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        self._set_objective(tasks)
        multipliers = task_multipliers(tasks, self._domain.shapes)
        self._domain.apply({key: values[0] for key, values in multipliers.items()})

    def _set_objective(self, tasks: list[Task]) -> None:
        """Store what the reward needs from the task (nothing, for a domain-only family)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Gymnasium's reset (same noise and generator); ``options={"task": ...}`` sets the task."""
        self._apply_reset_options(options)
        return super().reset(seed=seed)  # type: ignore[misc]


class MujocoTaskVectorEnv(TaskVectorEnv):
    """N sub-envs of a MuJoCo family in one ``mujoco.batch.Batch``; obs and rewards in numpy.

    Subclasses set ``single_env_class`` and implement ``_ctrl`` (actions -> MuJoCo ctrl) and
    ``_reward_terminated(v_N, ctrl_NA)``; ``qvel_clip`` clips the observed velocities
    (Walker2d's and Hopper's observations), ``_reset_qvel`` draws the reset noise of qvel.

    Args:
        num_envs: number of sub-envs.
        max_episode_steps: horizon (200 from registration).
        autoreset_mode: Gymnasium's autoreset mode (``"NextStep"`` by default).
        task: one task for all sub-envs or one per sub-env.
        num_threads: physics threads (default: every available core).
    """

    metadata = {"render_modes": []}
    single_env_class: ClassVar[type[Any]]
    qvel_clip: ClassVar[float | None] = None

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
        self._domains = BatchDomains(self.batch)
        self._qpos = self.batch.bind("qpos")
        self._qvel = self.batch.bind("qvel")
        self._ctrl_rows = self.batch.bind("ctrl")
        super().__init__(
            num_envs,
            self._template.observation_space,
            self._template.action_space,
            max_episode_steps,
            autoreset_mode,
            task,
        )

    def _set_task_arrays(self, tasks: list[Task]) -> None:
        self._set_objective(tasks)
        self._domains.apply(task_multipliers(tasks, self._domains.shapes))

    def _set_objective(self, tasks: list[Task]) -> None:
        """Store what the reward needs from the tasks, as ``(N, ...)`` arrays."""

    def _reset_qvel(self, rng: np.random.Generator, nv: int) -> np.ndarray:
        """The reset noise of qvel, drawn after that of qpos (Walker2d-v5, Hopper-v5: uniform)."""
        return rng.uniform(low=-self._noise, high=self._noise, size=nv)

    def _reset_envs(self, ids: np.ndarray) -> None:
        # The same draws in the same order as the single env's reset_model, per sub-env generator.
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        nq, nv = self._qpos.shape[1], self._qvel.shape[1]
        init_qpos, init_qvel = self._template.init_qpos, self._template.init_qvel
        for i in ids:
            rng = self._rng(i)
            self._qpos[i] = init_qpos + rng.uniform(low=-self._noise, high=self._noise, size=nq)
            self._qvel[i] = init_qvel + self._reset_qvel(rng, nv)
        self._observe(ids)

    def _observe(self, rows: Any) -> None:
        """``obs = (qpos[1:], qvel)``, qvel clipped to ``qvel_clip`` where the family does."""
        nv = self._qvel.shape[1]
        self._obs[rows, :-nv] = self._qpos[rows, 1:]
        qvel = self._qvel[rows]
        clip = self.qvel_clip
        self._obs[rows, -nv:] = qvel if clip is None else np.clip(qvel, -clip, clip)

    def _ctrl(self, actions: np.ndarray) -> np.ndarray:
        """The MuJoCo ctrl of (already clipped) actions (default: the actions themselves)."""
        return actions

    def _step_envs(
        self, actions: np.ndarray, ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        ctrl = self._ctrl(actions)
        self._ctrl_rows[:] = ctrl
        x_before = self._qpos[:, 0].copy()
        self.batch.step(ids, nstep=self._frame_skip)
        velocity = (self._qpos[:, 0] - x_before) / self._dt
        self._observe(slice(None))
        return self._reward_terminated(velocity, ctrl)

    def _reward_terminated(
        self, v_N: np.ndarray, ctrl_NA: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def close_extras(self, **kwargs: Any) -> None:
        """Release the template env."""
        self._template.close()


class HealthyTaskEnv(MujocoTaskEnv):
    """The step of Walker2d-v5 and Hopper-v5: forward velocity + healthy reward - control cost.

    Subclasses set ``_healthy(qpos_NQ, qvel_NV) -> (N,) bool`` (the env's ``is_healthy`` per
    row); an unhealthy state terminates the episode. Actions are clipped to the ctrl box.
    """

    _healthy: ClassVar[Any]

    def step(self, action: Any):
        """Apply ``action`` for ``frame_skip`` physics steps; Gymnasium's reward and info."""
        ctrl = check_actions(action, self.action_space)[None]
        x_before = self.data.qpos[0]
        self.do_simulation(ctrl[0], self.frame_skip)
        velocity = (self.data.qpos[0] - x_before) / self.dt
        healthy = self._healthy(self.data.qpos[None], self.data.qvel[None])
        reward = healthy_reward(np.array([velocity]), ctrl, healthy)
        if self.render_mode == "human":
            self.render()
        info = {
            "x_position": self.data.qpos[0],
            "z_distance_from_origin": self.data.qpos[1] - self.init_qpos[1],
            "x_velocity": velocity,
            "reward_forward": 1.0 * velocity,
            "reward_ctrl": -1e-3 * float(np.square(ctrl).sum()),
            "reward_survive": float(healthy[0]),
        }
        return self._get_obs(), float(reward[0]), not bool(healthy[0]), False, info


class HealthyTaskVectorEnv(MujocoTaskVectorEnv):
    """The native vector env of a :class:`HealthyTaskEnv` family (qvel observed clipped to 10)."""

    qvel_clip = 10.0

    def _reward_terminated(
        self, v_N: np.ndarray, ctrl_NA: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        healthy = self.single_env_class._healthy(self._qpos, self._qvel)
        return healthy_reward(v_N, ctrl_NA, healthy), ~healthy
