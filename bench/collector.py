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

Physics domains (halfcheetah-vel-domains, walker2d-rand-params, hopper-rand-params), N = B x K:
- omnirl, random domains: the collector on training tasks, a random domain in every task (each
  simulation of the batch has its own masses, inertias, damping and friction);
- omnirl, one shared model: the same collector on tasks with unit physics (never expanded);
- gymnasium SyncVectorEnv of the same env with the same random domains, policy in the loop;
- the physics share of a single env's step (``mj_step`` alone against ``env.step``): for
  Walker2d and Hopper the physics is most of a step's cost, so on C cores the native env can
  be at most about C / share times faster than one process stepping the same envs.
The two omnirl runners alternate, median of ``--repeats`` each. ``--sections`` picks parts.
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
from omnirl.envs.distributions import PHYSICS_BASES
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


def alternating_collectors(
    env_id: str, policy, task_sets: dict[str, list], args: argparse.Namespace
) -> dict[str, float]:
    """Median env-steps/s of one collector per task set, the calls alternating between them."""
    collectors = {name: Collector(env_id, seed=args.seed) for name in task_sets}
    for name, collector in collectors.items():  # builds the vector envs, sets the domains once
        collector.collect(policy, task_sets[name], args.episodes, horizon=2)
    rates: dict[str, list[float]] = {name: [] for name in task_sets}
    for _ in range(args.repeats):
        for name, collector in collectors.items():
            start = time.perf_counter()
            [batch] = collector.collect(
                policy, task_sets[name], args.episodes, horizon=args.horizon, seed=args.seed
            )
            elapsed = time.perf_counter() - start
            steps = batch.valid_TN.any(dim=1).sum().item() * batch.valid_TN.shape[1]
            rates[name].append(steps / elapsed)
    for collector in collectors.values():
        collector.close()
    return {name: float(np.median(r)) for name, r in rates.items()}


def physics_share(env_id: str, task: dict, steps: int, seed: int) -> float:
    """The share of a single env's step spent in ``mj_step``, on the states of its own episodes.

    ``steps`` steps with random actions (resets on termination), then ``mj_step`` alone from
    each recorded state under the same ctrl. The native env runs the same physics on all cores;
    when the physics is most of a step, it cannot be more than about ``cores / share`` times
    faster than one process stepping the same envs.
    """
    env = gym.make(env_id).unwrapped
    env.reset(seed=seed, options={"task": task})
    model, data, spec = env.model, env.data, mujoco.mjtState.mjSTATE_FULLPHYSICS
    space = env.action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high, (steps, *space.shape))
    states = np.zeros((steps, mujoco.mj_stateSize(model, spec)))
    ctrls = np.zeros((steps, model.nu))
    start = time.perf_counter()
    for t, action in enumerate(actions):
        mujoco.mj_getState(model, data, states[t], spec)
        terminated = env.step(action)[2]
        ctrls[t] = data.ctrl
        if terminated:
            env.reset()
    full = time.perf_counter() - start
    start = time.perf_counter()
    for state, ctrl in zip(states, ctrls, strict=True):
        mujoco.mj_setState(model, data, state, spec)
        data.ctrl[:] = ctrl
        mujoco.mj_step(model, data, nstep=env.frame_skip)
    physics = time.perf_counter() - start
    env.close()
    return physics / full


def bench_domains(args: argparse.Namespace, name: str) -> tuple[list[tuple[str, float]], float]:
    family = get_family(name)
    tasks = family.tasks.sample(args.tasks, np.random.default_rng(args.seed))
    # The same tasks in the compiled physics: only the non-physics fields (velocity) remain.
    unit = [{k: v for k, v in t.items() if k not in PHYSICS_BASES} for t in tasks]
    num_envs = args.tasks * args.episodes
    probe = gym.make(family.env_id)
    policy = GaussianMLPPolicy(probe.observation_space.shape[0], probe.action_space.shape[0])
    probe.close()
    rates = alternating_collectors(family.env_id, policy, {"random": tasks, "shared": unit}, args)
    sync = gym.make_vec(family.env_id, num_envs=num_envs, vectorization_mode="sync")
    sync.set_attr("task", [t for t in tasks for _ in range(args.episodes)])
    sync_sps = gymnasium_loop(sync, policy, args.horizon, args.seed)
    sync.close()
    shares = [physics_share(family.env_id, tasks[r % len(tasks)], 2000, r) for r in range(5)]
    share = float(np.median(shares))
    return [
        (f"omnirl Collector, a random domain per task ({num_envs} sub-envs)", rates["random"]),
        (f"omnirl Collector, one shared model ({num_envs} sub-envs)", rates["shared"]),
        (f"gymnasium SyncVectorEnv, the same random domains ({num_envs} sub-envs)", sync_sps),
    ], share


def print_table(title: str, rows: list[tuple[str, float]]) -> None:
    print(f"\n{title}\n| runner | env-steps/s |\n|---|---:|")
    for name, sps in rows:
        print(f"| {name} | {sps:,.0f} |")


def report_halfcheetah(args: argparse.Namespace) -> None:
    rows = bench_halfcheetah(args)
    print_table(
        f"HalfCheetahVel, {args.tasks} tasks x {args.episodes} episodes x H = {args.horizon}", rows
    )
    ours, sync, asyn, ceiling = (sps for _, sps in rows)
    print(f"\nomnirl / ceiling          = {ours / ceiling:.2f}  (target >= 0.8)")
    print(f"omnirl / best Gymnasium   = {ours / max(sync, asyn):.2f}  (target >= 3)")


def report_navigation(args: argparse.Namespace) -> None:
    for num_tasks in (20, 40):
        rows = bench_navigation(args, num_tasks)
        print_table(f"Navigation2D, {num_tasks} tasks x {args.episodes} episodes x H = 100", rows)
        print(
            f"\nomnirl / SyncVectorEnv    = {rows[0][1] / rows[1][1]:.1f}"
            "  (target: omnirl >= 1,000,000 env-steps/s)"
        )


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
    parser.add_argument(
        "--sections", default="halfcheetah,navigation,domains", help="comma list of parts to run"
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the same for every runner; the collector uses 1 as well
    print(
        f"cores: {available_cores()}, torch {torch.__version__}, mujoco {mujoco.__version__},"
        f" gymnasium {gym.__version__}"
    )

    if "halfcheetah" in sections:
        report_halfcheetah(args)
    if "navigation" in sections:
        report_navigation(args)
    if "domains" in sections:
        for name in ("halfcheetah-vel-domains", "walker2d-rand-params", "hopper-rand-params"):
            rows, share = bench_domains(args, name)
            size = f"{args.tasks} tasks x {args.episodes} episodes x H = {args.horizon}"
            print_table(f"{name}, {size}", rows)
            random, shared, sync = (sps for _, sps in rows)
            print(f"\nrandom domains / shared model = {random / shared:.2f}  (target >= 0.9)")
            print(f"omnirl / SyncVectorEnv        = {random / sync:.1f}  (target >= 3)")
            print(f"physics share of a single env step = {share:.0%}")


if __name__ == "__main__":
    main()
