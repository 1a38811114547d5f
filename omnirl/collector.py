"""The batched rollout collector: B tasks x K episodes x H steps for several rollout groups at once.

One call runs every sub-env of every group in one vector env, so pre-flow, meta-flow and
adapted-parameter rollouts share one physics pass. Per step and group there is one no-grad
policy call; groups with one parameter set per task evaluate all sets in one ``torch.func.vmap``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.func import functional_call, vmap

from omnirl.episodes import Episodes
from omnirl.functional import Params
from omnirl.overlap import Part, Pipeline, split_point, step_running

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class RolloutGroup:
    """One set of rollouts within a collection: which flow and which parameters act.

    Attributes:
        flow: passed to the policy as ``flow=...`` (``None``: the policy is called without it).
        params: ``None`` for the policy's own parameters, one dict for all tasks, or a sequence of
            B dicts, one per task (e.g. parameters adapted to each task by an inner step).
            A dict may hold a subset of the parameters; the rest are the module's own.
    """

    flow: str | None = None
    params: Params | Sequence[Params] | None = None


def make_vector_env(env_id: str, num_envs: int, vectorization: str = "auto", **kwargs: Any) -> Any:
    """Create ``num_envs`` sub-envs of ``env_id``.

    Args:
        env_id: a registered Gymnasium id with the task API.
        num_envs: number of sub-envs.
        vectorization: ``"auto"`` (the family's native vector env if it registers one, else
            ``"sync"``), ``"native"``, ``"sync"`` or ``"async"``.
        **kwargs: passed to the env constructor.
    """
    spec = gym.spec(env_id)
    if vectorization == "auto":
        vectorization = "native" if spec.vector_entry_point is not None else "sync"
    modes = {"native": "vector_entry_point", "sync": "sync", "async": "async"}
    if vectorization not in modes:
        raise ValueError(
            f"vectorization must be one of auto, {', '.join(modes)}; got {vectorization!r}"
        )
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode=modes[vectorization], **kwargs
    )


def _loc_scale(policy: Callable[..., Any], params: Params | None, obs: torch.Tensor, kwargs: dict):
    dist = (
        policy(obs, **kwargs) if params is None else functional_call(policy, params, (obs,), kwargs)
    )
    return dist.loc, dist.scale


class _GroupActor:
    """Computes action distributions for one group's ``B*K`` sub-envs at one step."""

    def __init__(self, policy: torch.nn.Module, group: RolloutGroup, num_tasks: int):
        self.policy = policy
        self.kwargs = {} if group.flow is None else {"flow": group.flow}
        self.num_tasks = num_tasks
        self.params: Params | None = None
        self.stacked: dict[str, torch.Tensor] | None = None
        if isinstance(group.params, Mapping) or group.params is None:
            self.params = group.params
        else:
            if len(group.params) != num_tasks:
                raise ValueError(
                    f"expected one parameter set per task ({num_tasks}), got {len(group.params)}"
                )
            self.stacked = {
                name: torch.stack([p[name].detach() for p in group.params])
                for name in group.params[0]
            }
            self._vmapped = vmap(lambda p, o: _loc_scale(self.policy, p, o, self.kwargs))

    def __call__(
        self, obs_MO: torch.Tensor, tasks: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action means and scales of the rows ``obs_MO``: every task's, or those of ``tasks``."""
        if self.stacked is None:
            return _loc_scale(self.policy, self.params, obs_MO, self.kwargs)
        stacked = self.stacked if tasks is None else {k: v[tasks] for k, v in self.stacked.items()}
        obs_BKO = obs_MO.view(len(next(iter(stacked.values()))), -1, obs_MO.shape[-1])
        loc, scale = self._vmapped(stacked, obs_BKO)
        return loc.reshape(obs_MO.shape[0], -1), scale.expand_as(loc).reshape(obs_MO.shape[0], -1)


def _buffers(env: Any, horizon: int, num_envs: int) -> tuple[np.ndarray, ...]:
    """Zeroed ``(obs, act, noise, scale, rew, valid)`` arrays of a collection, ``(T, N, ...)``."""
    # numpy buffers: per-step writes into them cost a fraction of torch indexing, and
    # torch.from_numpy shares their memory, so nothing is copied at the end.
    act_dim = int(np.prod(env.single_action_space.shape))
    obs_TNO = np.zeros((horizon, num_envs, *env.single_observation_space.shape), np.float32)
    act_TNA = np.zeros((horizon, num_envs, act_dim), np.float32)
    rew_TN = np.zeros((horizon, num_envs), np.float32)
    valid_TN = np.zeros((horizon, num_envs), np.float32)
    return obs_TNO, act_TNA, np.zeros_like(act_TNA), np.ones_like(act_TNA), rew_TN, valid_TN


class Collector:
    """Collects episodes of one task family with a Gaussian policy, all sub-envs in one batch.

    Sub-env layout for G groups, B tasks and K episodes per task: group g, task b, episode k runs
    on sub-env ``(g*B + b)*K + k``. Every sub-env runs exactly one episode per collection; on a
    native vector env a sub-env whose episode ended is left out of the following steps
    (:func:`omnirl.overlap.step_running`), so it costs no physics.

    Args:
        env_id: Gymnasium id of a family with the task API (``sample_tasks``, ``task``).
        seed: seeds the environments' reset noise and the action sampling.
        vectorization: see :func:`make_vector_env`.
        torch_threads: intra-op threads for the policy calls while collecting. One is fastest
            for small MLPs and leaves the cores to the physics threads; oversubscribing them
            made the reference implementation several times slower here.
        env_kwargs: passed to the env constructor.
        overlap: step one part of the sub-envs while acting on the other (:mod:`omnirl.overlap`;
            the same episodes bit for bit). Off by default: on 2 cores the MuJoCo physics
            threads already keep both cores busy, and the overlapped HalfCheetahVel and Walker2d
            collections ran at 0.97-0.98 of the sequential ones; it can pay where cores
            outnumber the physics threads.

    Example:
        >>> collector = Collector("omnirl/Navigation2D-v1", seed=0)  # doctest: +SKIP
        >>> [episodes] = collector.collect(policy, tasks, episodes_per_task=20)  # doctest: +SKIP
    """

    def __init__(
        self,
        env_id: str,
        seed: int | None = None,
        vectorization: str = "auto",
        torch_threads: int = 1,
        env_kwargs: dict[str, Any] | None = None,
        overlap: bool = False,
    ):
        self.env_id = env_id
        self.overlap = overlap
        self.vectorization = vectorization
        self.torch_threads = torch_threads
        self.env_kwargs = dict(env_kwargs or {})
        self.horizon = gym.spec(env_id).max_episode_steps
        self._envs: dict[int, Any] = {}
        self._first_seed = seed
        self._generator = torch.Generator()
        if seed is not None:
            self._generator.manual_seed(seed)
        self.stats = {"env_s": 0.0, "policy_s": 0.0, "env_steps": 0}

    def _vector_env(self, num_envs: int, key: Any = None) -> Any:
        # One vector env per batch size: rule-dependent passes (e.g. 2 groups, then 1) alternate
        # sizes every iteration, and building a MuJoCo batch is not free.
        key = num_envs if key is None else key
        if key not in self._envs:
            self._envs[key] = make_vector_env(
                self.env_id, num_envs, self.vectorization, **self.env_kwargs
            )
        return self._envs[key]

    def _parts(self, num_groups: int, per_group: int, k: int) -> list[Part] | None:
        """The two parts of an overlapped collection, or None to step the batch as one."""
        split, num_envs = split_point(num_groups, per_group, k), num_groups * per_group
        if not self.overlap or split == 0:
            return None
        bounds = [(0, split), (split, num_envs)]
        return [Part(self._vector_env(hi - lo, ("part", lo, hi)), lo, hi) for lo, hi in bounds]

    def collect(
        self,
        policy: torch.nn.Module,
        tasks: Sequence[dict[str, Any]],
        episodes_per_task: int,
        groups: Sequence[RolloutGroup] = (RolloutGroup(),),
        horizon: int | None = None,
        seed: int | None = None,
    ) -> list[Episodes]:
        """Run K episodes of every task for every group, all in one batched pass.

        Args:
            policy: module called as ``policy(obs, flow=...)`` returning a distribution with
                ``loc`` and ``scale`` (a diagonal Gaussian); actions are sampled here.
            tasks: the B tasks.
            episodes_per_task: K.
            groups: the rollout groups (flow and parameters); each gets all B*K episodes.
            horizon: steps per episode (default: the family's registered horizon).
            seed: reseed environments and action sampling (default: the next seed of the stream).

        Returns:
            One :class:`Episodes` per group, each with N = B*K sub-envs and T = horizon steps.
        """
        horizon = horizon or self.horizon
        if horizon is None:
            raise ValueError(f"{self.env_id} registers no max_episode_steps; pass horizon=")
        if not tasks or episodes_per_task < 1 or not groups:
            raise ValueError("collect needs at least one task, one episode per task and one group")
        seed, self._first_seed = (self._first_seed if seed is None else seed), None
        if seed is None:
            # Every reset is seeded (from the sampling stream), so a collection is reproducible
            # whichever vector env serves it.
            seed = int(torch.randint(2**31 - 1, (), generator=self._generator))
        else:
            self._generator.manual_seed(seed)
        num_tasks, per_group = len(tasks), len(tasks) * episodes_per_task
        every = [t for _ in groups for t in tasks for _ in range(episodes_per_task)]
        parts = self._parts(len(groups), per_group, episodes_per_task)
        env = None if parts else self._vector_env(len(every))
        for part in parts or []:
            part.env.set_attr("task", every[part.rows])
        if env is not None:
            env.set_attr("task", every)
        actors = [_GroupActor(policy, g, num_tasks) for g in groups]
        threads = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            with torch.inference_mode():
                if parts:
                    arrays = self._run_overlapped(parts, actors, horizon, seed, episodes_per_task)
                else:
                    arrays = self._run(env, actors, horizon, seed)
        finally:
            torch.set_num_threads(threads)
        # Converted outside inference mode: the episodes feed autograd later.
        obs_TNO, act_TNA, logp_TN, rew_TN, valid_TN = (
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays
        )
        task_N = torch.arange(num_tasks).repeat_interleave(episodes_per_task)
        out = []
        for g in range(len(groups)):
            cols = slice(g * per_group, (g + 1) * per_group)
            out.append(
                Episodes(
                    obs_TNO[:, cols],
                    act_TNA[:, cols],
                    logp_TN[:, cols],
                    rew_TN[:, cols],
                    valid_TN[:, cols],
                    task_N,
                )
            )
        return out

    def _run(
        self, env: Any, actors: list[_GroupActor], horizon: int, seed: int
    ) -> tuple[np.ndarray, ...]:
        num_envs = env.num_envs
        buffers = _buffers(env, horizon, num_envs)
        obs_TNO, act_TNA, noise_TNA, scale_TNA, rew_TN, valid_TN = buffers
        alive_N = np.ones(num_envs, dtype=bool)
        per_group = num_envs // len(actors)
        obs, _ = env.reset(seed=self._reset_seeds(seed, num_envs))
        policy_s = env_s = 0.0
        for t in range(horizon):
            tic = time.perf_counter()
            obs_TNO[t] = obs
            valid_TN[t] = alive_N
            obs_NO = torch.from_numpy(obs_TNO[t])
            for g, actor in enumerate(actors):
                cols = slice(g * per_group, (g + 1) * per_group)
                act, noise, scale = self._sample(actor, obs_NO[cols])
                act_TNA[t, cols], noise_TNA[t, cols] = act, noise
                scale_TNA[t, cols] = scale  # broadcasts a state-independent scale
            if not np.isfinite(act_TNA[t][alive_N]).all():
                raise FloatingPointError(
                    f"the policy produced non-finite actions at step {t} (diverged parameters?)"
                )
            toc = time.perf_counter()
            # A native vector env steps only the running episodes: with early terminations most
            # of the batch can be finished long before the horizon, its physics wasted.
            obs, rew, terminated, truncated, _ = step_running(env, act_TNA[t], alive_N)
            env_s += time.perf_counter() - toc
            policy_s += toc - tic
            rew_TN[t] = rew
            alive_N &= ~(np.asarray(terminated) | np.asarray(truncated))
            if not alive_N.any():
                break
        return self._episodes(buffers, policy_s, env_s)

    def _run_overlapped(
        self, parts: list[Part], actors: list[_GroupActor], horizon: int, seed: int, k: int
    ) -> tuple[np.ndarray, ...]:
        """:meth:`_run`'s episodes, bit for bit, with the parts' physics overlapped."""
        num_envs = parts[-1].hi
        buffers = _buffers(parts[0].env, horizon, num_envs)
        obs_TNO, per_group = buffers[0], num_envs // len(actors)
        start = time.perf_counter()
        for part in parts:  # sub-env i of the whole batch is seeded seed + i
            obs_TNO[0, part.rows] = part.env.reset(seed=seed + part.lo)[0]

        def act(t: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
            obs_NO, out = torch.from_numpy(obs_TNO[t]), []
            for g, actor in enumerate(actors):
                lo, hi = max(rows.start, g * per_group), min(rows.stop, (g + 1) * per_group)
                if lo < hi:
                    tasks = slice((lo - g * per_group) // k, (hi - g * per_group) // k)
                    loc, scale = actor(obs_NO[lo:hi], tasks)
                    out.append((loc, scale.expand_as(loc)))
            return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

        def noise(t: int) -> torch.Tensor:  # the draws of _sample, group by group
            shape = (per_group, buffers[1].shape[-1])
            return torch.cat([torch.randn(shape, generator=self._generator) for _ in actors])

        pipeline = Pipeline(parts, act, noise, buffers)
        pipeline.run(horizon)
        env_s = time.perf_counter() - start - pipeline.policy_s
        return self._episodes(buffers, pipeline.policy_s, env_s)

    def _episodes(
        self, buffers: tuple[np.ndarray, ...], policy_s: float, env_s: float
    ) -> tuple[np.ndarray, ...]:
        obs_TNO, act_TNA, noise_TNA, scale_TNA, rew_TN, valid_TN = buffers
        act_dim = act_TNA.shape[-1]
        # log N(loc + scale*noise; loc, scale) summed over action dims, for all steps at once.
        logp_TN = (-0.5 * np.square(noise_TNA) - np.log(scale_TNA)).sum(-1)
        logp_TN -= _HALF_LOG_2PI * act_dim
        self.stats["policy_s"] += policy_s
        self.stats["env_s"] += env_s
        self.stats["env_steps"] += int(valid_TN.sum())
        # Zero everything outside the episodes, so padding can never leak into a loss.
        mask = valid_TN
        return (
            obs_TNO * mask[..., None],
            act_TNA * mask[..., None],
            logp_TN * mask,
            rew_TN * mask,
            mask,
        )

    # Two hooks for a collector that runs a slice of the sub-envs (omnirl.ray_collector): it
    # seeds them as their places in the whole batch and samples as the whole batch does.
    def _reset_seeds(self, seed: int, num_envs: int) -> int | list[int]:
        """The reset seed(s) of the ``num_envs`` sub-envs: sub-env ``i`` gets ``seed + i``."""
        return seed

    def _sample(
        self, actor: _GroupActor, obs_MO: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One group's actions at one step: ``loc + scale * noise``, the noise and the scale."""
        loc, scale = actor(obs_MO)
        noise = torch.randn(loc.shape, generator=self._generator)
        return torch.addcmul(loc, scale, noise).numpy(), noise.numpy(), scale.numpy()

    def close(self) -> None:
        """Close the vector envs."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
