"""Collector throughput: omnirl beside a raw-physics ceiling, EnvPool and Gymnasium's vector envs.

Run: ``python bench/collector.py`` (several minutes on 2 cores; ``--sections`` picks parts).
Every figure is env-steps per second (steps executed: sub-envs x steps run, the same count for
every runner), the MEDIAN of ``--repeats`` timed repeats (default 3), printed beside its spread
(min - max). The repeats alternate between the runners of a table (repeat 1 of every runner,
then repeat 2 of every runner, ...), so a slow phase of a shared machine hits all of them alike.
Every runner builds its envs once, outside the timed region, and runs one warm-up (2 steps;
the ceiling's: H - 1) first; the policy (64x64 tanh Gaussian MLP) runs on one torch thread.

HalfCheetahVel, N = tasks x episodes sub-envs (paper scale: 40 x 20 = 800), H steps each:
- omnirl Collector: one ``Collector.collect(policy, tasks, episodes, horizon=H, seed=seed)``
  per repeat (native vector env on ``mujoco.batch``); the timed region is the whole call, so
  it also holds the reset, the action sampling and the conversion of the buffers to tensors.
- ceiling: raw ``mujoco.batch`` stepping of the collector's own states and controls (recorded by
  one untimed collect with the repeats' seed, so every repeat collects the same): the native
  vector env's ``Batch``, reset with the collector's seed before every repeat (untimed), then
  H times: write the collector's ctrl rows (its actions, clipped and converted by
  ``action_to_ctrl``), ``batch.step(None, nstep=frame_skip)``. No policy, observation or reward
  work; the warm-up checks that the replay reproduces the collector's states bit for bit.
- EnvPool HalfCheetah-v5 (``pip install 'omnirl[bench]'``), N envs on all cores, the same policy
  in the loop (its actions mapped to ctrl as above): synchronous (batch = N: reset untimed, then
  H x (policy, ``step``)) and asynchronous (batch = N/2 for even N: ``async_reset``, then
  ``recv`` -> policy -> ``send`` until N x H steps were sent, timed from the first batch's policy
  call until the last steps sent are received). omnirl / EnvPool uses the faster of the two.
- gymnasium SyncVectorEnv (the same N sub-envs, one process) and AsyncVectorEnv
  (``--async-envs`` processes, default 20): reset untimed, then H x (policy, ``step``).

Navigation2D, 20 and 40 tasks x ``--episodes`` sub-envs, H = 100: the omnirl Collector beside
gymnasium SyncVectorEnv (same N) and AsyncVectorEnv (``--async-envs`` processes).

Physics domains (halfcheetah-vel-domains, walker2d-rand-params, hopper-rand-params), N = B x K:
- omnirl, random domains: the collector on training tasks, a random domain in every task (each
  simulation of the batch has its own masses, inertias, damping and friction);
- omnirl, one shared model: the same collector on tasks with unit physics (never expanded);
- gymnasium SyncVectorEnv of the same env with the same random domains, policy in the loop;
- for Walker2d and Hopper, whose episodes end early: both collectors again, stepping the
  finished sub-envs on until the last episode ends (the collector before its step mask). The
  ratio skipped / stepped on is the time saved on the same episodes; the random / shared ratio
  is taken between these two, which do the same work (with the mask, a domain that ends
  episodes sooner does less). The policy is the untrained one: episodes of a few dozen steps;
- the physics share of a single env's step (``mj_step`` alone against ``env.step``, median of
  5 runs): for Walker2d and Hopper the physics is most of a step's cost, so on C cores the
  native env can be at most about C / share times faster than one process stepping the same envs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import ExitStack

import gymnasium as gym
import mujoco
import numpy as np
import torch

import omnirl.collector as collector_module
import omnirl.envs  # noqa: F401  (registers the families)
from omnirl.agents import GaussianMLPPolicy
from omnirl.collector import Collector
from omnirl.envs.distributions import PHYSICS_BASES
from omnirl.envs.half_cheetah import action_to_ctrl
from omnirl.registry import get_family
from omnirl.threads import available_cores

# A runner's timed repeat: ``run(horizon)`` steps every sub-env ``horizon`` times -> env-steps/s.
Run = Callable[[int], float]

OMNIRL, CEILING, ENVPOOL, GYMNASIUM = "omnirl", "ceiling", "EnvPool", "gymnasium"


def alternate(runs: dict[str, Run], horizon: int, repeats: int) -> dict[str, list[float]]:
    """Env-steps/s of every repeat of every runner, repeat r of all runners before repeat r+1."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            rates[name].append(run(horizon))
    return rates


def medians(rates: dict[str, list[float]]) -> dict[str, float]:
    return {name: float(np.median(r)) for name, r in rates.items()}


def best(rates: dict[str, list[float]], prefix: str) -> tuple[str, float] | None:
    """The runner whose label starts with ``prefix`` with the highest median, if any."""
    found = [(m, name) for name, m in medians(rates).items() if name.startswith(prefix)]
    return None if not found else max(found)[::-1]


def print_table(title: str, rates: dict[str, list[float]]) -> None:
    print(f"\n{title}\n| runner | median env-steps/s | spread (min - max) |\n|---|---:|---:|")
    for name, r in rates.items():
        print(f"| {name} | {np.median(r):,.0f} | {min(r):,.0f} - {max(r):,.0f} |")


def sample(policy: torch.nn.Module, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return policy(torch.as_tensor(obs, dtype=torch.float32)).sample().numpy()


# ----------------------------------------------------------------------------------- runners
def collector_run(
    stack: ExitStack,
    env_id: str,
    policy,
    tasks: list,
    episodes: int,
    seed: int,
    step_finished: bool = False,
) -> tuple[Run, Collector]:
    """``Collector.collect`` of ``tasks`` x ``episodes`` sub-envs, the whole call timed.

    ``step_finished``: step every sub-env until the last episode ends, as the collector did
    before it passed its running episodes as the step mask (for the side-by-side figure).
    """
    collector = stack.enter_context(Collector(env_id, seed=seed))

    def run(horizon: int) -> float:
        saved = collector_module.step_running
        if step_finished:
            collector_module.step_running = lambda env, actions, running: env.step(actions)
        try:
            start = time.perf_counter()
            [batch] = collector.collect(policy, tasks, episodes, horizon=horizon, seed=seed)
            elapsed = time.perf_counter() - start
        finally:
            collector_module.step_running = saved
        # Counted as the other loops count them: sub-envs x steps run, including the steps of
        # sub-envs whose episode already ended (which the collector skips), so every runner's
        # figure is the same count over its time to collect the same episodes.
        return batch.valid_TN.any(dim=1).sum().item() * batch.valid_TN.shape[1] / elapsed

    run(2)  # warm-up: builds the vector env
    return run, collector


def ceiling_run(stack: ExitStack, env_id: str, episodes, seed: int) -> Run:
    """Raw ``mujoco.batch`` stepping of the states and controls of the collector's ``episodes``."""
    act_TNA = episodes.act_TNA.numpy().astype(np.float64)  # as the env converts them
    ctrl_TNU = action_to_ctrl(np.clip(act_TNA, -10.0, 10.0))
    num_envs = act_TNA.shape[1]
    native = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    stack.callback(native.close)
    batch, frame_skip = native.unwrapped.batch, native.unwrapped._frame_skip
    qpos, ctrl_rows = batch.bind("qpos"), batch.bind("ctrl")

    def run(horizon: int) -> float:
        native.reset(seed=seed)  # the collector's initial states, the same in every repeat
        start = time.perf_counter()
        for ctrl in ctrl_TNU[:horizon]:
            ctrl_rows[:] = ctrl
            batch.step(None, nstep=frame_skip)
        return num_envs * horizon / (time.perf_counter() - start)

    # Warm-up, and the check that the replay steps the collector's own states: obs = qpos[1:], ...
    last = len(ctrl_TNU) - 1
    run(last)
    observed = episodes.obs_TNO[last, :, : qpos.shape[1] - 1].numpy()
    np.testing.assert_array_equal(qpos[:, 1:].astype(np.float32), observed)  # bit for bit
    return run


def gymnasium_run(stack: ExitStack, env, policy, seed: int) -> Run:
    """The textbook loop: reset (untimed), then obs -> policy -> sample -> env.step."""
    stack.callback(env.close)

    def run(horizon: int) -> float:
        obs, _ = env.reset(seed=seed)
        start = time.perf_counter()
        for _ in range(horizon):
            obs, *_ = env.step(sample(policy, obs))
        return env.num_envs * horizon / (time.perf_counter() - start)

    run(2)  # warm-up (AsyncVectorEnv: the processes started)
    return run


def envpool_sync(env, policy) -> Run:
    num_envs = env.config["num_envs"]

    def run(horizon: int) -> float:
        obs, _ = env.reset()
        start = time.perf_counter()
        for _ in range(horizon):
            obs, *_ = env.step(action_to_ctrl(sample(policy, obs)))
        return num_envs * horizon / (time.perf_counter() - start)

    return run


def envpool_async(env, policy) -> Run:
    num_envs, batch_size = env.config["num_envs"], env.config["batch_size"]

    def run(horizon: int) -> float:
        sends = horizon * num_envs // batch_size
        env.async_reset()
        obs, *_, info = env.recv()  # the first batch of reset observations
        start = time.perf_counter()
        for _ in range(sends):
            env.send(action_to_ctrl(sample(policy, obs)), info["env_id"])
            obs, *_, info = env.recv()
        for _ in range(num_envs // batch_size - 1):  # the steps still in flight
            env.recv()
        return sends * batch_size / (time.perf_counter() - start)

    return run


def envpool_runs(stack: ExitStack, num_envs: int, policy, seed: int) -> dict[str, Run]:
    """EnvPool's HalfCheetah-v5, synchronous and with batches of half the envs (or none)."""
    try:
        import envpool
    except ImportError:
        print("EnvPool not installed: pip install 'omnirl[bench]'")
        return {}
    cores = available_cores()

    def make(batch_size: int):
        env = envpool.make(
            "HalfCheetah-v5",
            env_type="gymnasium",
            num_envs=num_envs,
            batch_size=batch_size,
            num_threads=cores,
            seed=seed,
        )
        stack.callback(env.close)
        return env

    label = f"{ENVPOOL} HalfCheetah-v5, {cores} threads"
    runs = {f"{label}, sync ({num_envs} envs)": envpool_sync(make(num_envs), policy)}
    # async needs a batch that divides the env count (all sends received at the end)
    half = max((d for d in range(1, num_envs // 2 + 1) if num_envs % d == 0), default=None)
    if half is not None:
        runs[f"{label}, async (batches of {half} of {num_envs} envs)"] = envpool_async(
            make(half), policy
        )
    for run in runs.values():
        run(2)  # warm-up
    return runs


# ---------------------------------------------------------------------------------- sections
def bench_halfcheetah(args: argparse.Namespace) -> dict[str, list[float]]:
    family = get_family("halfcheetah-vel")
    env_id, seed, episodes = family.env_id, args.seed, args.episodes
    tasks = family.tasks.sample(args.tasks, np.random.default_rng(seed))
    num_envs = args.tasks * episodes
    policy = GaussianMLPPolicy(17, 6)
    with ExitStack() as stack:
        collect, collector = collector_run(stack, env_id, policy, tasks, episodes, seed)
        # The controls the ceiling replays: every timed repeat (same seed) collects these.
        [recorded] = collector.collect(policy, tasks, episodes, horizon=args.horizon, seed=seed)
        runs = {
            f"{OMNIRL} Collector ({num_envs} sub-envs)": collect,
            f"{CEILING}: raw mujoco.batch, the collector's states and controls": ceiling_run(
                stack, env_id, recorded, seed
            ),
        }
        runs.update(envpool_runs(stack, num_envs, policy, seed))
        sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
        runs[f"{GYMNASIUM} SyncVectorEnv ({num_envs} sub-envs)"] = gymnasium_run(
            stack, sync, policy, seed
        )
        procs = args.async_envs
        async_env = gym.make_vec(env_id, num_envs=procs, vectorization_mode="async")
        runs[f"{GYMNASIUM} AsyncVectorEnv ({procs} processes)"] = gymnasium_run(
            stack, async_env, policy, seed
        )
        return alternate(runs, args.horizon, args.repeats)


def report_halfcheetah(args: argparse.Namespace) -> None:
    rates = bench_halfcheetah(args)
    size = f"{args.tasks} tasks x {args.episodes} episodes x H = {args.horizon}"
    print_table(f"HalfCheetahVel, {size}, median of {args.repeats} alternating repeats", rates)
    ours, ceiling = best(rates, OMNIRL)[1], best(rates, CEILING)[1]
    print(f"\nomnirl / ceiling          = {ours / ceiling:.2f}  (target >= 0.9)")
    envpool = best(rates, ENVPOOL)
    if envpool is None:
        print("omnirl / EnvPool          = n/a (EnvPool not installed)")
    else:
        print(f"omnirl / EnvPool          = {ours / envpool[1]:.2f}  (target >= 1.5)")
        print(f"  (EnvPool's faster mode: {envpool[0]})")
    print(f"omnirl / best Gymnasium   = {ours / best(rates, GYMNASIUM)[1]:.1f}")


def bench_navigation(args: argparse.Namespace, num_tasks: int) -> dict[str, list[float]]:
    family = get_family("navigation-2d")
    tasks = family.tasks.sample(num_tasks, np.random.default_rng(args.seed))
    num_envs, procs = num_tasks * args.episodes, args.async_envs
    policy = GaussianMLPPolicy(2, 2)
    with ExitStack() as stack:
        collect, _ = collector_run(stack, family.env_id, policy, tasks, args.episodes, args.seed)
        sync = gym.make_vec(family.env_id, num_envs=num_envs, vectorization_mode="sync")
        async_env = gym.make_vec(family.env_id, num_envs=procs, vectorization_mode="async")
        runs = {
            f"{OMNIRL} Collector ({num_envs} sub-envs)": collect,
            f"{GYMNASIUM} SyncVectorEnv ({num_envs} sub-envs)": gymnasium_run(
                stack, sync, policy, args.seed
            ),
            f"{GYMNASIUM} AsyncVectorEnv ({procs} processes)": gymnasium_run(
                stack, async_env, policy, args.seed
            ),
        }
        return alternate(runs, family.horizon, args.repeats)


def report_navigation(args: argparse.Namespace) -> None:
    for num_tasks in (20, 40):
        rates = bench_navigation(args, num_tasks)
        size = f"{num_tasks} tasks x {args.episodes} episodes x H = 100"
        print_table(f"Navigation2D, {size}, median of {args.repeats} alternating repeats", rates)
        m = list(medians(rates).values())
        print(f"\nomnirl env-steps/s        = {m[0]:,.0f}  (target >= 1,000,000)")
        print(f"omnirl / SyncVectorEnv    = {m[0] / m[1]:.1f}")
        print(f"omnirl / AsyncVectorEnv   = {m[0] / m[2]:.1f}")


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


# Families whose episodes end early: the step mask spares the physics of finished sub-envs.
TERMINATING = ("walker2d-rand-params", "hopper-rand-params")


def bench_domains(args: argparse.Namespace, name: str) -> dict[str, list[float]]:
    family = get_family(name)
    tasks = family.tasks.sample(args.tasks, np.random.default_rng(args.seed))
    # The same tasks in the compiled physics: only the non-physics fields (velocity) remain.
    unit = [{k: v for k, v in t.items() if k not in PHYSICS_BASES} for t in tasks]
    num_envs, env_id, k = args.tasks * args.episodes, family.env_id, args.episodes
    probe = gym.make(env_id)
    policy = GaussianMLPPolicy(probe.observation_space.shape[0], probe.action_space.shape[0])
    probe.close()
    with ExitStack() as stack:
        # Each collector's vector env is built once; its domains are set by the warm-up.
        random, _ = collector_run(stack, env_id, policy, tasks, k, args.seed)
        shared, _ = collector_run(stack, env_id, policy, unit, k, args.seed)
        sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
        sync.set_attr("task", [t for t in tasks for _ in range(k)])
        runs = {
            f"omnirl Collector, a random domain per task ({num_envs} sub-envs)": random,
            f"omnirl Collector, one shared model ({num_envs} sub-envs)": shared,
            f"gymnasium SyncVectorEnv, the same random domains ({num_envs} sub-envs)": (
                gymnasium_run(stack, sync, policy, args.seed)
            ),
        }
        if name in TERMINATING:
            for label, which in (("a random domain per task", tasks), ("one shared model", unit)):
                runs[f"omnirl Collector, {label}, finished sub-envs stepped on"] = collector_run(
                    stack, env_id, policy, which, k, args.seed, step_finished=True
                )[0]
        return alternate(runs, args.horizon, args.repeats)


def report_domains(args: argparse.Namespace) -> None:
    for name in ("halfcheetah-vel-domains", "walker2d-rand-params", "hopper-rand-params"):
        rates = bench_domains(args, name)
        size = f"{args.tasks} tasks x {args.episodes} episodes x H = {args.horizon}"
        print_table(f"{name}, {size}, median of {args.repeats} alternating repeats", rates)
        random, shared, sync, *stepped_on = medians(rates).values()
        family = get_family(name)
        tasks = family.tasks.sample(args.tasks, np.random.default_rng(args.seed))
        shares = [physics_share(family.env_id, tasks[r % len(tasks)], 2000, r) for r in range(5)]
        # A domain changes when episodes end, so with the mask the two runners do different
        # work; stepping every sub-env, both do N x (steps run) and their rates compare costs.
        costs = (random / shared) if not stepped_on else (stepped_on[0] / stepped_on[1])
        print(f"\nrandom domains / shared model = {costs:.2f}  (target >= 0.9)")
        print(f"omnirl / SyncVectorEnv        = {random / sync:.1f}  (target >= 3)")
        print(f"physics share of a single env step = {float(np.median(shares)):.0%}")
        if stepped_on:
            print(f"finished sub-envs skipped / stepped on = {random / stepped_on[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="HalfCheetah tasks (B)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task (K)")
    parser.add_argument("--horizon", type=int, default=200, help="HalfCheetah steps per episode")
    parser.add_argument("--async-envs", type=int, default=20, help="AsyncVectorEnv processes")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median shown)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sections", default="halfcheetah,navigation,domains", help="comma list of parts to run"
    )
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (every figure is a median)")
    sections = set(args.sections.split(","))
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # the same for every runner; the collector uses 1 as well
    print(
        f"cores: {available_cores()}, torch {torch.__version__}, mujoco {mujoco.__version__},"
        f" gymnasium {gym.__version__}"
    )
    for report in (report_halfcheetah, report_navigation, report_domains):
        if report.__name__.removeprefix("report_") in sections:
            report(args)


if __name__ == "__main__":
    main()
