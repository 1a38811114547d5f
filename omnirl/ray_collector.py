"""The Ray collector backend: one collection's sub-envs on W Ray actors, bit for bit the same.

``collector_backend: ray`` with ``collector_workers: W`` in a config makes the trainer collect
with a :class:`RayCollector`. Each of the W actors owns a native vector env for a contiguous
slice of the tasks (every group, every episode of those tasks). Per collection the policy's
weights and any per-task parameters go out once, as numpy in one ``ray.put``; every actor runs
the in-process collector's loop on its slice and sends its episodes back as numpy; they are put
back together in sub-env order. The episodes equal :class:`~omnirl.collector.Collector`'s bit
for bit, because:

- a sub-env is reset with the seed of its place in the whole batch (``seed + i``);
- every actor draws the whole batch's action noise from the same generator and keeps its own
  rows (a few thousand numbers per step: microseconds beside the physics and the policy);
- the policy maps every observation row on its own (the same rows give the same actions
  whatever else is in the batch: tested);
- afterwards the driver's generator continues from the actor whose episodes ran longest, as the
  in-process collector stops drawing at the step its last episode ended.

The policy module itself travels once per policy (then only its weights); each actor is given
one CPU and runs one physics and one torch thread (:func:`omnirl.cluster.task_options`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from omnirl import cluster, registry
from omnirl.collector import Collector, RolloutGroup, _GroupActor
from omnirl.options import OptionError


def task_slices(num_tasks: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` task ranges, as even as possible, none empty."""
    edges = np.linspace(0, num_tasks, min(workers, num_tasks) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _numpy(params: Mapping[str, torch.Tensor] | None) -> dict[str, np.ndarray] | None:
    return None if params is None else {k: v.detach().numpy() for k, v in params.items()}


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    # Copies: arrays from Ray's object store are read-only.
    return {k: torch.tensor(v) for k, v in arrays.items()}


class _Batch:
    """Stands in for the driver's vector env: its size; the tasks go to the actors."""

    def __init__(self, num_envs: int):
        self.num_envs = num_envs

    def set_attr(self, name: str, values: Any) -> None:
        """Ignored: :meth:`RayCollector.collect` sends every actor its tasks."""

    def close(self) -> None:
        """Nothing to close."""


class RayCollector(Collector):
    """A :class:`~omnirl.collector.Collector` whose sub-envs run on ``workers`` Ray actors.

    Args:
        env_id: Gymnasium id of a family with the task API.
        seed: seeds the environments' reset noise and the action sampling, as in ``Collector``.
        workers: Ray actors W; the tasks of a collection are split into W contiguous slices.
        vectorization, torch_threads, env_kwargs: the actors' collectors', as in ``Collector``.
        address: the Ray cluster (:func:`omnirl.cluster.connect`; default: the one this process
            is in, else a new local instance).

    Attributes:
        transfer: per-collection traffic: ``bytes_out`` (weights and parameters sent),
            ``bytes_in`` (episodes received), ``put_s`` (serialising them into the object
            store), ``get_s`` (fetching the episodes once every actor was done), summed over
            ``collections``.

    Raises:
        RayMissingError: Ray is not installed.
        OptionError: the cluster cannot be reached or has fewer CPUs than ``workers``.
    """

    def __init__(
        self,
        env_id: str,
        seed: int | None = None,
        workers: int = 2,
        vectorization: str = "auto",
        torch_threads: int = 1,
        env_kwargs: dict[str, Any] | None = None,
        address: str | None = None,
    ):
        super().__init__(env_id, seed, vectorization, torch_threads, env_kwargs)
        ray = cluster.connect(address)
        if cluster.cluster_cpus(ray) < workers:
            raise OptionError(
                f"collector_workers={workers} Ray actors need a CPU each; the cluster has "
                f"{cluster.cluster_cpus(ray)}"
            )
        actor = ray.remote(_SliceWorker).options(**cluster.task_options(1))
        args = (env_id, vectorization, torch_threads, self.env_kwargs)
        self.workers = workers
        self._pool = [actor.remote(*args) for _ in range(workers)]
        self._call: tuple[list[dict[str, Any]], int] | None = None
        self._modules: dict[int, tuple[torch.nn.Module, Any]] = {}
        self.transfer = {
            "collections": 0,
            "bytes_out": 0,
            "bytes_in": 0,
            "put_s": 0.0,
            "get_s": 0.0,
        }

    def collect(
        self,
        policy: torch.nn.Module,
        tasks: Sequence[dict[str, Any]],
        episodes_per_task: int,
        groups: Sequence[RolloutGroup] = (RolloutGroup(),),
        horizon: int | None = None,
        seed: int | None = None,
    ) -> list[Any]:
        """:meth:`Collector.collect`, on the actors (the same arguments and episodes)."""
        self._call = (list(tasks), episodes_per_task)
        try:
            return super().collect(policy, tasks, episodes_per_task, groups, horizon, seed)
        finally:
            self._call = None

    def _vector_env(self, num_envs: int) -> Any:
        return _Batch(num_envs)

    def _module(self, ray: Any, policy: torch.nn.Module) -> tuple[int, Any]:
        """The policy's key and its module in the object store (put once per policy)."""
        if id(policy) not in self._modules:  # the module is kept, so its id stays its own
            self._modules[id(policy)] = (policy, ray.put(policy))
        return id(policy), self._modules[id(policy)][1]

    def _run(self, env: Any, actors: list[Any], horizon: int, seed: int) -> tuple[np.ndarray, ...]:
        ray = cluster.import_ray()
        assert self._call is not None, "RayCollector._run runs inside collect()"
        tasks, per_task = self._call
        pool, slices = self._pool, task_slices(len(tasks), self.workers)
        key, module = self._module(ray, actors[0].policy)
        weights = {k: v.numpy() for k, v in actors[0].policy.state_dict().items()}
        groups = [(a.kwargs.get("flow"), _numpy(a.params), _numpy(a.stacked)) for a in actors]
        payload = {"key": key, "module": module, "weights": weights, "groups": groups}
        payload["generator"] = self._generator.get_state().numpy()
        tic = time.perf_counter()
        ref = ray.put(payload)
        put_s = time.perf_counter() - tic
        futures = [
            worker.collect.remote(ref, tasks[a:b], per_task, (a, b, len(tasks)), horizon, seed)
            for worker, (a, b) in zip(pool, slices, strict=False)
        ]
        ray.wait(futures, num_returns=len(futures), fetch_local=False)
        tic = time.perf_counter()
        try:
            parts = ray.get(futures)
        except ray.exceptions.RayTaskError as exc:  # the actor's own error, e.g. a divergence
            raise (exc.cause or exc) from None
        self._account(payload, parts, put_s, time.perf_counter() - tic)
        # The generator goes on from where the longest-running slice left it (module docstring).
        longest = max(parts, key=lambda part: part["steps"])
        self._generator.set_state(torch.from_numpy(longest["generator"].copy()))
        return tuple(
            np.concatenate(
                [part["arrays"][i][:, g] for g in range(len(actors)) for part in parts], 1
            )
            for i in range(5)
        )

    def _account(self, payload: dict, parts: list[dict], put_s: float, get_s: float) -> None:
        sent = [payload["weights"]] + [p for _, *params in payload["groups"] for p in params if p]
        for part in parts:
            for name in ("env_steps", "env_s", "policy_s"):
                self.stats[name] += part["stats"][name]
        self.transfer["collections"] += 1
        out = sum(a.nbytes for d in sent for a in d.values()) + payload["generator"].nbytes
        self.transfer["bytes_out"] += out  # one copy: each machine fetches it once
        self.transfer["bytes_in"] += sum(a.nbytes for p in parts for a in p["arrays"])
        self.transfer["put_s"] += put_s
        self.transfer["get_s"] += get_s

    def close(self) -> None:
        """Stop the actors."""
        if self._pool:
            ray = cluster.import_ray()
            for worker in self._pool:
                ray.kill(worker)
            self._pool = []
        self._modules.clear()


class _SliceCollector(Collector):
    """A collector of tasks ``[a, b)`` of a batch of B whose episodes are those of the whole.

    Before :meth:`collect`, set ``place = (a, b, B)`` and ``whole_groups``: the groups with the
    whole batch's parameters. Its sub-envs are reset with the seeds of their places in the
    batch, and at every step the policy and the sampling run on the whole batch's rows (this
    slice's observations in place, zeros elsewhere; a few percent of a MuJoCo collection's
    time), the observations at the memory alignment they have in the in-process collector.
    Every floating-point operation then happens as it does there: measured here, BLAS rounds
    differently for fewer than 4 rows and for inputs at another 16-byte alignment, and
    vectorised kernels treat the last elements of an array apart.
    """

    place = (0, 1, 1)
    whole_groups: Sequence[RolloutGroup] = ()
    generator_state = torch.Generator().get_state()

    def _reset_seeds(self, seed: int, num_envs: int) -> list[int]:
        a, b, num_tasks = self.place
        width = num_envs // len(self.whole_groups)  # this slice's sub-envs per group
        per_task = width // (b - a)
        groups = range(len(self.whole_groups))
        return [seed + (g * num_tasks + a) * per_task + j for g in groups for j in range(width)]

    def _run(self, env: Any, actors: list[Any], horizon: int, seed: int) -> tuple[np.ndarray, ...]:
        a, b, num_tasks = self.place
        self.per_task = env.num_envs // len(actors) // (b - a)
        self.calls = 0  # _sample calls so far: step t, group g is call t * G + g
        # The driver's generator as this collection found it: seeded with ``seed``, or drawn
        # from since (a collection without a seed continues the stream).
        self._generator.set_state(self.generator_state)
        whole = [_GroupActor(actors[0].policy, group, num_tasks) for group in self.whole_groups]
        self.arrays = super()._run(env, whole, horizon, seed)
        return self.arrays

    def _sample(
        self, actor: Any, obs_MO: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b, num_tasks = self.place
        (t, g), self.calls = divmod(self.calls, len(self.whole_groups)), self.calls + 1
        group_envs, obs_dim = num_tasks * self.per_task, obs_MO.shape[1]
        # In the in-process collector, group g's observations at step t start this many
        # floats into its (T, G*B*K, O) buffer (64-byte aligned, as torch's allocations are).
        start = (t * len(self.whole_groups) + g) * group_envs * obs_dim % 16
        buffer = obs_MO.new_zeros(group_envs * obs_dim + 16)
        whole = buffer[start : start + group_envs * obs_dim].view(group_envs, obs_dim)
        rows = slice(a * self.per_task, b * self.per_task)
        whole[rows] = obs_MO
        act, noise, scale = super()._sample(actor, whole)
        return act[rows], noise[rows], scale[rows]


def _group(flow: str | None, one: Any, stacked: Any) -> RolloutGroup:
    """A rollout group of the whole batch from what the driver sent (numpy)."""
    if stacked is not None:  # one parameter set per task
        count = len(next(iter(stacked.values())))
        return RolloutGroup(
            flow, [_tensors({k: v[i] for k, v in stacked.items()}) for i in range(count)]
        )
    return RolloutGroup(flow, None if one is None else _tensors(one))


class _SliceWorker:
    """A Ray actor: one native vector env (per batch size) for its slice of the tasks."""

    def __init__(self, env_id: str, vectorization: str, torch_threads: int, env_kwargs: dict):
        registry.families()  # a fresh worker process: the families register on first use
        self.collector = _SliceCollector(env_id, None, vectorization, torch_threads, env_kwargs)
        self.modules: dict[int, torch.nn.Module] = {}

    def collect(
        self,
        payload: dict[str, Any],
        tasks: list[dict[str, Any]],
        per_task: int,
        place: tuple[int, int, int],
        horizon: int,
        seed: int,
    ) -> dict[str, Any]:
        """Collect tasks ``place[0]:place[1]`` of the batch; the episodes as numpy."""
        if payload["key"] not in self.modules:
            self.modules[payload["key"]] = cluster.import_ray().get(payload["module"])
        policy = self.modules[payload["key"]]
        policy.load_state_dict(_tensors(payload["weights"]))
        a, b, _ = place
        whole = [_group(*group) for group in payload["groups"]]
        # collect() checks the slice's groups; _run acts with the whole batch's.
        groups = [
            RolloutGroup(g.flow, g.params[a:b]) if isinstance(g.params, list) else g for g in whole
        ]
        before = dict(self.collector.stats)
        self.collector.place, self.collector.whole_groups = place, whole
        self.collector.generator_state = torch.tensor(payload["generator"])
        self.collector.collect(policy, tasks, per_task, groups, horizon, seed)
        obs, act, logp, rew, valid = self.collector.arrays
        width = valid.shape[1] // len(groups)
        return {
            # Per array and group, this slice's columns (the driver interleaves the slices).
            "arrays": [
                np.stack([x[:, g * width : (g + 1) * width] for g in range(len(groups))], 1)
                for x in (obs, act, logp, rew, valid)
            ],
            "steps": int(np.flatnonzero(valid.any(axis=1)).max()) + 1,
            "generator": self.collector._generator.get_state().numpy(),
            "stats": {k: self.collector.stats[k] - before[k] for k in before},
        }
