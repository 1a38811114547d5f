"""Collector throughput: omnirl beside Gymnasium's vector envs and the mujoco.rollout ceiling.

Run: ``python bench/collector.py`` (about a minute on 2 cores). Every figure is env-steps per
second measured in this one run with the same policy (64x64 tanh Gaussian MLP, one torch thread),
so the ratios are comparable even on a noisy machine.

HalfCheetahVel, N = tasks x episodes sub-envs, H steps each:
- omnirl: ``Collector.collect`` (native vector env on ``mujoco.batch``, one policy call per step;
  median of ``--repeats`` calls).
- gymnasium SyncVectorEnv: the same N sub-envs, one process, policy in the loop.
- gymnasium AsyncVectorEnv: 20 sub-envs, one process each, policy in the loop.
- ceiling: ``mujoco.rollout`` replaying the collector's own controls open-loop from the same N
  initial states on all cores: physics alone, no policy, no Python per step.
Navigation2D: omnirl collector beside SyncVectorEnv at the same N.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import rollout

import omnirl.envs  # noqa: F401  (registers the families)
from omnirl.agents import GaussianMLPPolicy
from omnirl.collector import Collector
from omnirl.envs.half_cheetah import action_to_ctrl
from omnirl.registry import get_family
from omnirl.threads import available_cores


def gymnasium_loop(env, policy, horizon: int, seed: int) -> float:
    """Env-steps/s of the textbook loop: obs -> policy -> sample -> env.step."""
    obs, _ = env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(horizon):
        with torch.no_grad():
            action = policy(torch.as_tensor(obs, dtype=torch.float32)).sample()
        obs, *_ = env.step(action.numpy())
    return env.num_envs * horizon / (time.perf_counter() - start)


def omnirl_collector(
    env_id: str, policy, tasks, episodes: int, horizon: int, seed: int, repeats: int
):
    """Median env-steps/s of ``Collector.collect`` over ``repeats`` calls, and the last episodes."""
    collector = Collector(env_id, seed=seed)
    collector.collect(policy, tasks, episodes, horizon=2)  # builds the vector env
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        [batch] = collector.collect(policy, tasks, episodes, horizon=horizon, seed=seed)
        elapsed = time.perf_counter() - start
        # Steps executed, counted as the Gymnasium loops count them (sub-envs x steps run),
        # including steps of sub-envs whose episode already ended.
        rates.append(batch.valid_TN.any(dim=1).sum().item() * batch.valid_TN.shape[1] / elapsed)
    collector.close()
    return float(np.median(rates)), batch


def rollout_ceiling(env_id: str, num_envs: int, actions_TNA: np.ndarray, seed: int) -> float:
    """Env-steps/s of ``mujoco.rollout`` replaying ``actions_TNA`` open loop from equal states."""
    native = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    native.reset(seed=seed)  # the collector's initial states for the same seed
    model, frame_skip = native.batch.model, native.unwrapped._frame_skip
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.zeros((num_envs, mujoco.mj_stateSize(model, spec)))
    data = mujoco.MjData(model)
    for i in range(num_envs):
        data.qpos[:], data.qvel[:] = native.batch.bind("qpos")[i], native.batch.bind("qvel")[i]
        mujoco.mj_getState(model, data, state[i], spec)
    horizon = actions_TNA.shape[0]
    ctrl = action_to_ctrl(actions_TNA.reshape(-1, actions_TNA.shape[-1])).reshape(actions_TNA.shape)
    control = np.repeat(ctrl.transpose(1, 0, 2), frame_skip, axis=1)  # (N, H*frame_skip, nu)
    threads = [mujoco.MjData(model) for _ in range(available_cores())]
    with rollout.Rollout(nthread=len(threads)) as pool:
        pool.rollout(model, threads, state[:2], control[:2])  # warm-up
        start = time.perf_counter()
        pool.rollout(model, threads, state, control)
        elapsed = time.perf_counter() - start
    native.close()
    return num_envs * horizon / elapsed


def bench_halfcheetah(args: argparse.Namespace) -> list[tuple[str, float]]:
    family = get_family("halfcheetah-vel")
    env_id = family.env_id
    tasks = family.tasks.sample(args.tasks, np.random.default_rng(args.seed))
    num_envs = args.tasks * args.episodes
    policy = GaussianMLPPolicy(17, 6)
    rows = []
    sps, episodes = omnirl_collector(
        env_id, policy, tasks, args.episodes, args.horizon, args.seed, args.repeats
    )
    rows.append((f"omnirl Collector ({num_envs} sub-envs)", sps))
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    rows.append(
        (
            f"gymnasium SyncVectorEnv ({num_envs} sub-envs)",
            gymnasium_loop(sync, policy, args.horizon, args.seed),
        )
    )
    sync.close()
    procs = args.async_envs
    async_env = gym.make_vec(env_id, num_envs=procs, vectorization_mode="async")
    gymnasium_loop(async_env, policy, 5, args.seed)  # warm-up: processes started
    rows.append(
        (
            f"gymnasium AsyncVectorEnv ({procs} processes)",
            gymnasium_loop(async_env, policy, args.horizon, args.seed),
        )
    )
    async_env.close()
    ceiling = rollout_ceiling(
        env_id, num_envs, episodes.act_TNA.numpy().astype(np.float64), args.seed
    )
    rows.append((f"ceiling: mujoco.rollout open loop ({num_envs} states)", ceiling))
    return rows


def bench_navigation(args: argparse.Namespace, num_tasks: int) -> list[tuple[str, float]]:
    family = get_family("navigation-2d")
    tasks = family.tasks.sample(num_tasks, np.random.default_rng(args.seed))
    num_envs = num_tasks * args.episodes
    policy = GaussianMLPPolicy(2, 2)
    sps, _ = omnirl_collector(
        family.env_id, policy, tasks, args.episodes, family.horizon, args.seed, args.repeats
    )
    sync = gym.make_vec(family.env_id, num_envs=num_envs, vectorization_mode="sync")
    sync_sps = gymnasium_loop(sync, policy, family.horizon, args.seed)
    return [
        (f"omnirl Collector ({num_envs} sub-envs)", sps),
        (f"gymnasium SyncVectorEnv ({num_envs} sub-envs)", sync_sps),
    ]


def print_table(title: str, rows: list[tuple[str, float]]) -> None:
    print(f"\n{title}\n| runner | env-steps/s |\n|---|---:|")
    for name, sps in rows:
        print(f"| {name} | {sps:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="HalfCheetah tasks (B)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task (K)")
    parser.add_argument(
        "--horizon", type=int, default=200, help="HalfCheetah steps per episode (H)"
    )
    parser.add_argument("--async-envs", type=int, default=20, help="AsyncVectorEnv processes")
    parser.add_argument("--repeats", type=int, default=3, help="collector runs (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the same for every runner; the collector uses 1 as well
    print(
        f"cores: {available_cores()}, torch {torch.__version__}, mujoco {mujoco.__version__},"
        f" gymnasium {gym.__version__}"
    )

    rows = bench_halfcheetah(args)
    print_table(
        f"HalfCheetahVel, {args.tasks} tasks x {args.episodes} episodes x H = {args.horizon}", rows
    )
    ours, sync, asyn, ceiling = (sps for _, sps in rows)
    print(f"\nomnirl / ceiling          = {ours / ceiling:.2f}  (target >= 0.8)")
    print(f"omnirl / best Gymnasium   = {ours / max(sync, asyn):.2f}  (target >= 3)")

    for num_tasks in (20, 40):
        rows = bench_navigation(args, num_tasks)
        print_table(f"Navigation2D, {num_tasks} tasks x {args.episodes} episodes x H = 100", rows)
        print(
            f"\nomnirl / SyncVectorEnv    = {rows[0][1] / rows[1][1]:.1f}"
            "  (target: omnirl >= 1,000,000 env-steps/s)"
        )


if __name__ == "__main__":
    main()
