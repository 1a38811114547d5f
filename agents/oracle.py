"""``oracle``: PPO told the task, trained on the whole family at once (a ceiling, never adapted).

The oracle sees ``[observation, task vector]`` (:class:`omnirl.envs.wrappers.TaskInObservation`)
and is trained with stable-baselines3's PPO on freshly drawn tasks. It needs no adaptation, so
``omnirl evaluate`` reports its return once per task and repeats it at every step count: the line
the meta-learners approach (the MAML paper's "oracle", Finn et al. 2017, section 5.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd

from omnirl import registry
from omnirl.collector import make_vector_env
from omnirl.learner import TaskDraw
from omnirl.timing import timed

Tasks = Sequence[dict[str, Any]]

# VecNormalize's observation clip and epsilon, also used when evaluating without it.
CLIP_OBS = 10.0
NORM_EPS = 1e-8


@dataclass(frozen=True)
class PPOSettings:
    """PPO hyperparameters of one family (see :data:`SETTINGS` for the reasons).

    ``n_steps`` and ``batch_size`` are upper bounds: a rollout never exceeds one iteration's
    env-step budget (tiny smoke configs train on tiny rollouts). The hidden layers are the
    config's ``hidden_sizes`` (the meta-learners' capacity), for the policy and the value net.
    """

    n_envs: int = 8
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    log_std_init: float = 0.0
    normalize: bool = False  # VecNormalize (observations and rewards)
    activation: str = "tanh"


# Actions are rescaled to [-1, 1] for every family (as SB3 recommends), so the settings do not
# depend on the action box; the env still clips, as it does for every policy.
SETTINGS: dict[str, PPOSettings] = {
    # A 4-number observation and a near-linear optimal policy, a = clip(10 (goal - pos)), which
    # has to be precise: the episode only ends inside the 0.01 box around the goal, and every
    # step outside it costs the distance. A small initial std (0.37 in [-1, 1] action units) and
    # no entropy bonus let the policy become precise; short rollouts give many updates.
    # 15 iterations (0.6M steps, 4 minutes on one core): -0.554 against the optimum's -0.549.
    "navigation-2d": PPOSettings(
        n_envs=8, n_steps=128, batch_size=256, n_epochs=10, learning_rate=3e-4, log_std_init=-1.0
    ),
    # rl-zoo's PPO settings for HalfCheetah (normalised observations and rewards, gamma 0.98,
    # GAE 0.92, clip 0.1, 20 epochs, log-std -2, ReLU), with 8 envs and a larger minibatch and
    # learning rate, so that fewer, larger updates fit the time: ~1.2k env steps/s on one core;
    # 12 iterations (1.9M steps) reached -13 on HalfCheetahVel (the MAML paper's oracle: -54.5).
    "halfcheetah-vel": PPOSettings(
        n_envs=8,
        n_steps=512,
        batch_size=256,
        n_epochs=20,
        learning_rate=1e-4,
        gamma=0.98,
        gae_lambda=0.92,
        clip_range=0.1,
        ent_coef=4e-4,
        vf_coef=0.58,
        max_grad_norm=0.8,
        log_std_init=-2.0,
        normalize=True,
        activation="relu",
    ),
}
SETTINGS["halfcheetah-dir"] = SETTINGS["halfcheetah-vel"]
# The physics-domain families: the task vector carries every multiplier (65-69 numbers), which
# VecNormalize scales like the observation. HalfCheetah's settings, not tuned on these families.
for _family in ("halfcheetah-vel-domains", "walker2d-rand-params", "hopper-rand-params"):
    SETTINGS[_family] = SETTINGS["halfcheetah-vel"]
_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def to_env_action(action_NA: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """Map policy actions in [-1, 1] (clipped) linearly onto the env's action box."""
    unit = np.clip(action_NA, -1.0, 1.0)
    return space.low + (unit + 1.0) * (space.high - space.low) / 2.0


class OraclePolicy(ActorCriticPolicy):
    """SB3's actor-critic MLP policy; like ``GaussianMLPPolicy`` it has a single flow."""

    flows: ClassVar[tuple[None]] = (None,)


class OracleAgent:
    """PPO with the task in the observation, trained on the whole family; never adapted.

    One training iteration runs PPO for as many env steps as a meta-iteration collects
    (``tasks_per_iteration * episodes_per_task * horizon``). The agent owns the SB3 policy;
    the PPO model and its envs are built on the first iteration (evaluation never needs them).

    Args:
        cfg: the training config (family, seed, horizon, budget, hidden sizes).
        obs_dim: the family's observation size (the task vector is appended to it).
        act_dim: action size.

    References:
        Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (PPO); Raffin et al.
        2021, "Stable-Baselines3" (the implementation); Finn et al. 2017, section 5.3 (the
        oracle as the reference of the meta-RL benchmarks).
    """

    name: ClassVar[str] = "oracle"
    kind: ClassVar[str] = "rl"
    trains: ClassVar[bool] = True
    adapts: ClassVar[bool] = False  # evaluation calls task_returns instead of adapting
    eval_flow: ClassVar[str | None] = None

    def __init__(self, cfg: Any, obs_dim: int, act_dim: int):
        self.cfg = cfg
        self.family = registry.get_family(cfg.family)
        self.horizon: int = cfg.horizon or self.family.horizon
        self.settings = SETTINGS.get(self.family.name, PPOSettings())
        s = self.settings
        obs_space = gym.spaces.Box(
            -np.inf, np.inf, (obs_dim + self.family.tasks.vector_size,), np.float32
        )
        act_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        hidden = list(cfg.hidden_sizes)
        self.policy = OraclePolicy(
            obs_space,
            act_space,
            lambda _: s.learning_rate,
            net_arch={"pi": hidden, "vf": hidden},
            activation_fn=_ACTIVATIONS[s.activation],
            log_std_init=s.log_std_init,
        )
        self.obs_rms = RunningMeanStd(shape=obs_space.shape) if s.normalize else None
        self.ret_rms = RunningMeanStd(shape=()) if s.normalize else None
        self.num_timesteps = 0  # PPO's env steps so far
        self.step_target = 0  # env steps the iterations so far asked for
        self._model: Any = None
        self._monitors: list[Any] = []

    @property
    def flows(self) -> tuple[str | None, ...]:
        """A single flow, like a plain policy."""
        return self.policy.flows

    # ------------------------------------------------------------------------- training
    @property
    def budget(self) -> int:
        """Env steps per iteration, as a meta-iteration collects."""
        return self.cfg.tasks_per_iteration * self.cfg.episodes_per_task * self.horizon

    def _make_env(self) -> gym.Env:
        """One PPO env: the family at the run's horizon, actions in [-1, 1], task observed."""
        from stable_baselines3.common.monitor import Monitor

        from omnirl.envs.wrappers import TaskInObservation

        env = gym.make(self.family.env_id, max_episode_steps=self.horizon)
        space = env.action_space
        env = gym.wrappers.TransformAction(
            env, lambda a: to_env_action(a, space), self.policy.action_space
        )
        monitor = Monitor(TaskInObservation(env, self.family.tasks))  # episode returns
        self._monitors.append(monitor)
        return monitor

    def _build_model(self, seed: int) -> Any:
        from stable_baselines3 import PPO
        from stable_baselines3.common.logger import Logger
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        s = self.settings
        venv: Any = DummyVecEnv([self._make_env] * s.n_envs)
        if s.normalize:
            venv = VecNormalize(venv, gamma=s.gamma, clip_obs=CLIP_OBS, epsilon=NORM_EPS)
            venv.obs_rms, venv.ret_rms = self.obs_rms, self.ret_rms  # shared with state_dict
        n_steps = max(1, min(s.n_steps, self.budget // s.n_envs))
        model = PPO(
            OraclePolicy,
            venv,
            n_steps=n_steps,
            batch_size=min(s.batch_size, n_steps * s.n_envs),
            n_epochs=s.n_epochs,
            learning_rate=s.learning_rate,
            gamma=s.gamma,
            gae_lambda=s.gae_lambda,
            clip_range=s.clip_range,
            ent_coef=s.ent_coef,
            vf_coef=s.vf_coef,
            max_grad_norm=s.max_grad_norm,
            policy_kwargs={"net_arch": [8], "log_std_init": s.log_std_init},
            seed=seed,
            device="cpu",
        )
        # PPO built a throwaway policy (tiny, above); it trains the agent's own, which may
        # hold a checkpoint's weights.
        model.policy = self.policy
        model.num_timesteps = self.num_timesteps
        model.set_logger(Logger(folder=None, output_formats=[]))  # metrics go to the trainer
        return model

    def update(self, draw: TaskDraw) -> dict[str, float]:
        """Run PPO for one iteration's env-step budget; return the trainer's metrics.

        ``tasks`` is unused (PPO draws a new task at every episode reset) and so is the collector,
        except for its env-step counter, which is advanced by PPO's steps so that the trainer's
        ``time/sps`` is right. ``seed`` seeds the PPO model when this process builds it.
        """
        collector, tasks, seed = draw
        if self._model is None:
            self._model = self._build_model(seed)
        model = self._model
        self.step_target += self.budget
        finished = [len(m.get_episode_rewards()) for m in self._monitors]
        before = model.num_timesteps
        # learn() rounds up to whole rollouts; the next iteration asks for that much less.
        with timed("ppo"):
            model.learn(
                self.step_target - model.num_timesteps,
                reset_num_timesteps=False,
                progress_bar=False,
                log_interval=None,
            )
        self.num_timesteps = model.num_timesteps
        collector.stats["env_steps"] += model.num_timesteps - before
        returns = [
            r
            for m, n in zip(self._monitors, finished, strict=True)
            for r in m.get_episode_rewards()[n:]
        ]
        metrics = {
            key: float(value)
            for key, value in model.logger.name_to_value.items()
            if key.startswith("train/") and key != "train/n_updates"
        }
        metrics["rollout/episodes"] = float(len(returns))
        metrics["rollout/env_steps_total"] = float(self.num_timesteps)
        if returns:
            metrics["rollout/return_pre"] = float(np.mean(returns))
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"non-finite PPO metrics: {metrics}")
        return metrics

    # ------------------------------------------------------------------------ evaluation
    def deterministic_actions(self, obs_NO: np.ndarray, task_NT: np.ndarray) -> np.ndarray:
        """The policy's mean action in [-1, 1] for env observations and task vectors."""
        obs = np.concatenate([obs_NO, task_NT], axis=1).astype(np.float32)
        if self.obs_rms is not None:
            scaled = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + NORM_EPS)
            obs = np.clip(scaled, -CLIP_OBS, CLIP_OBS).astype(np.float32)
        with torch.inference_mode():
            dist = self.policy.get_distribution(torch.from_numpy(obs))
            return dist.mode().numpy()

    def task_returns(
        self,
        tasks: Tasks,
        episodes_per_task: int,
        horizon: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Mean undiscounted return of the mean action on every task, ``(len(tasks),)``.

        All ``B * K`` episodes run in one native vector env, with one batched policy call per
        step; episodes end at termination or after ``horizon`` steps (default: the family's,
        as for the collector's evaluation of the other agents).
        """
        horizon = horizon or self.family.horizon
        per_env = [task for task in tasks for _ in range(episodes_per_task)]
        task_NT = self.family.tasks.to_vectors(per_env)
        env = make_vector_env(self.family.env_id, len(per_env))
        try:
            env.set_attr("task", per_env)
            obs, _ = env.reset(seed=seed)
            return_N = np.zeros(len(per_env))
            alive_N = np.ones(len(per_env), dtype=bool)
            for _ in range(horizon):
                action = to_env_action(
                    self.deterministic_actions(obs, task_NT), env.single_action_space
                )
                obs, reward, terminated, truncated, _ = env.step(action)
                return_N += np.where(alive_N, reward, 0.0)
                # Sub-envs that ended autoreset on the next step; their rewards no longer count.
                alive_N &= ~(np.asarray(terminated) | np.asarray(truncated))
                if not alive_N.any():
                    break
        finally:
            env.close()
        return return_N.reshape(len(tasks), episodes_per_task).mean(axis=1)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Policy and optimizer tensors, step counters and normalisation statistics."""
        state: dict[str, Any] = {
            "policy": self.policy.state_dict(),
            "optimizer": self.policy.optimizer.state_dict(),
            "num_timesteps": self.num_timesteps,
            "step_target": self.step_target,
        }
        if self.obs_rms is not None and self.ret_rms is not None:
            state["obs_rms"] = _rms_state(self.obs_rms)
            state["ret_rms"] = _rms_state(self.ret_rms)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (into the running PPO model too, if there is one)."""
        self.policy.load_state_dict(state["policy"])
        self.policy.optimizer.load_state_dict(state["optimizer"])
        self.num_timesteps, self.step_target = state["num_timesteps"], state["step_target"]
        if self.obs_rms is not None and self.ret_rms is not None:
            _load_rms(self.obs_rms, state["obs_rms"])
            _load_rms(self.ret_rms, state["ret_rms"])
        if self._model is not None:
            self._model.num_timesteps = self.num_timesteps


def _rms_state(rms: RunningMeanStd) -> dict[str, Any]:
    # Tensors and floats only: checkpoints are loaded with torch.load(weights_only=True).
    return {
        "mean": torch.from_numpy(np.array(rms.mean, dtype=np.float64)),
        "var": torch.from_numpy(np.array(rms.var, dtype=np.float64)),
        "count": float(rms.count),
    }


def _load_rms(rms: RunningMeanStd, state: dict[str, Any]) -> None:
    # In place: a running VecNormalize shares these objects.
    rms.mean = state["mean"].numpy().copy()
    rms.var = state["var"].numpy().copy()
    rms.count = state["count"]
