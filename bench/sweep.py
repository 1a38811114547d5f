"""Scale-out on Ray: a sweep on every core against runs one after another, and the Ray collector.

Run: ``python bench/sweep.py`` (about 10 minutes on 2 cores). Two tables, every figure measured
in this one run (the machines are shared: compare the ratios, not the seconds):

1. Four short runs (navigation-2d, maml and omni x seeds 0 and 1, ``--iterations`` each):
   - ``omnirl sweep`` on a local Ray instance, one core per run (two at a time on 2 cores),
     Ray's start-up included;
   - the same four ``omnirl train`` one after another with one core each (``OMNIRL_CPUS=1``):
     the sweep's target is >= 1.7x faster;
   - the same four one after another with every core each (torch and physics on all cores).
   Each command is timed from its start to its exit, in a fresh folder, ``--repeats`` times in
   alternation; the table gives the medians and their ratios.
2. One HalfCheetahVel collection at paper scale (40 tasks x 20 episodes x 200 steps, 800
   sub-envs): the in-process ``Collector`` (physics on every core) against ``RayCollector``
   with 1 and 2 actors (one core each), median of ``--collections``; per collection also the
   bytes sent (weights) and received (episodes) and the serialisation time (``ray.put`` of
   the weights and fetching the episodes once every actor was done). With N machines the
   physics divides by the actors while the bytes stay per collection: the table says both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a loopback-only instance

AGENTS, SEEDS = ("maml", "omni"), (0, 1)


def timed(command: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def sweep_seconds(iterations: int) -> float:
    """``omnirl sweep`` of the four runs, one core each."""
    with tempfile.TemporaryDirectory() as folder:
        command = ["omnirl", "sweep", "--family", "navigation-2d", "--agent", "maml"]
        command += ["--agent", "omni", "--seeds", ",".join(map(str, SEEDS))]
        command += ["--iterations", str(iterations), "--no-evaluate", "--no-progress"]
        return timed([*command, "--out", f"{folder}/sweep"], folder, dict(os.environ))


def sequential_seconds(iterations: int, cores: int | None) -> float:
    """The four ``omnirl train`` one after another, each with ``cores`` (None: every core)."""
    env = dict(os.environ)
    env.pop("OMNIRL_CPUS", None)
    if cores is not None:
        env["OMNIRL_CPUS"] = str(cores)
    total = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for agent in AGENTS:
            for seed in SEEDS:
                command = ["omnirl", "train", "navigation-2d", "--agent", agent]
                command += ["--seed", str(seed), "--iterations", str(iterations)]
                command += ["--no-progress", "--set", f"run_dir={folder}"]
                total += timed(command, folder, env)
    return total


def sweep_table(iterations: int, repeats: int) -> None:
    from omnirl.threads import available_cores

    runners = {
        "omnirl sweep (Ray, 1 core per run)": lambda: sweep_seconds(iterations),
        "one after another, 1 core each": lambda: sequential_seconds(iterations, 1),
        f"one after another, {available_cores()} cores each": lambda: sequential_seconds(
            iterations, None
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):  # alternate, so a busy minute hits every runner alike
        for name, run in runners.items():
            times[name].append(run())
    sweep = statistics.median(times[next(iter(runners))])
    print(f"\n4 runs (navigation-2d, maml and omni x 2 seeds, {iterations} iterations each)")
    print(f"{'':40s} {'seconds':>9s} {'spread':>14s} {'sweep faster by':>16s}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"{name:40s} {median:9.1f} {spread:>14s} {median / sweep:15.2f}x")


def collection_seconds(collector, policy, tasks, collections: int) -> list[float]:
    collector.collect(policy, tasks, 20)  # warm-up: builds the vector envs (and the actors')
    seconds = []
    for _ in range(collections):
        start = time.perf_counter()
        collector.collect(policy, tasks, 20)
        seconds.append(time.perf_counter() - start)
    return seconds


def collector_table(collections: int) -> None:
    import numpy as np
    import torch

    from omnirl import cluster
    from omnirl.agents import GaussianMLPPolicy
    from omnirl.collector import Collector
    from omnirl.ray_collector import RayCollector
    from omnirl.registry import get_family

    ray = cluster.connect()  # a local instance, as omnirl sweep starts one
    family = get_family("halfcheetah-vel")
    tasks = family.tasks.sample(40, np.random.default_rng(0))
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6)
    rows = []
    with Collector(family.env_id, seed=0) as local:
        rows.append(
            ("in-process Collector", collection_seconds(local, policy, tasks, collections), None)
        )
    for workers in (1, 2):
        with RayCollector(family.env_id, seed=0, workers=workers) as remote:
            seconds = collection_seconds(remote, policy, tasks, collections)
            rows.append((f"RayCollector, {workers} actor(s)", seconds, dict(remote.transfer)))
    ray.shutdown()
    base = statistics.median(rows[0][1])
    print("\nHalfCheetahVel, one collection of 40 tasks x 20 episodes x 200 steps (160,000 steps)")
    header = f"{'':30s} {'s/collection':>12s} {'steps/s':>9s} {'vs in-process':>13s}"
    print(f"{header} {'MB out':>7s} {'MB in':>7s} {'put ms':>7s} {'get ms':>7s}")
    for name, seconds, transfer in rows:
        median = statistics.median(seconds)
        line = f"{name:30s} {median:12.2f} {160_000 / median:9,.0f} {base / median:12.2f}x"
        if transfer is not None:
            n = transfer["collections"]
            line += f" {transfer['bytes_out'] / n / 1e6:7.2f} {transfer['bytes_in'] / n / 1e6:7.2f}"
            line += f" {1e3 * transfer['put_s'] / n:7.1f} {1e3 * transfer['get_s'] / n:7.1f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15, help="iterations of each run")
    parser.add_argument("--repeats", type=int, default=1, help="timings of each runner")
    parser.add_argument("--collections", type=int, default=3, help="timed collections")
    parser.add_argument("--sections", default="sweep,collector", help="which tables")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if "sweep" in args.sections:
        sweep_table(args.iterations, args.repeats)
    if "collector" in args.sections:
        collector_table(args.collections)


if __name__ == "__main__":
    main()
