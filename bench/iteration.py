"""Seconds per meta-iteration, end to end, where the time goes, and torch threads under load.

Default mode, ``python bench/iteration.py`` (several minutes on 2 cores): for each family
(HalfCheetahVel at paper scale: 40 tasks x 20 episodes x H = 200; Navigation2D: 20 tasks x
20 episodes x H = 100) and agent (``maml``, ``omni``), one warm-up iteration and
``--iterations`` timed ones (default 3) through the real ``Trainer.step`` (sampling, baselines,
inner steps, TRPO, logging, checkpoint). Per agent it prints the median seconds per iteration
with the min-max spread and every timed iteration's seconds, env-steps/s, the median sampling
seconds, iteration / sampling (the ratio of the medians: what everything but the rollouts adds;
target for maml at paper scale <= 1.3), the per-section medians, and omni / maml (target <= 1.6).
``--compare SETTING ...`` (settings as in the thread mode, e.g. ``default OMNIRL_MALLOC=system``)
measures every setting side by side: each timed iteration in a fresh subprocess after its own
warm-up, the settings alternating, one table per setting.

Thread mode, ``python bench/iteration.py --threads-mode``: for each family and agent (default
navigation-2d, maml), seconds per iteration under each of ``--thread-settings`` (default:
``default`` -- the config unchanged, ``torch_threads: 0`` = every core, with omnirl's
``GOMP_SPINCOUNT=500`` --, ``torch_threads=1``, ``torch_threads=2`` and
``GOMP_SPINCOUNT=300000``, libgomp's own spin count), on the idle machine and beside ONE
CPU-bound competitor process
(single-threaded numpy and torch matrix products in an endless loop, started by this script and
killed afterwards). Every measurement is a fresh subprocess of this script (torch's and the
physics' thread pools are sized at start-up and cannot reliably be resized): one warm-up
iteration, one timed. Repeat r runs every setting idle, then every setting with the competitor,
before repeat r + 1, so the settings share the machine's noise; the table gives the median of
``--iterations`` repeats. A setting is ``default`` or comma-separated ``key=value`` pairs:
lowercase keys are config keys (``torch_threads=1``), uppercase ones environment variables of
the subprocess (``OMNIRL_CPUS=1`` sizes the physics threads, and torch's with
``torch_threads: 0``). It prints default / best explicit setting, idle (target <= 1.1) and with
the competitor (target <= 1.2).

Numbers from a machine that is running other jobs are not representative.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = [
    "sampling",
    "baseline",
    "inner_steps",
    "objective",
    "outer_step",
    "trpo_gradient",
    "cg",
    "line_search",
]
FAMILIES = ["halfcheetah-vel", "navigation-2d"]
AGENTS = ["maml", "omni"]
THREAD_SETTINGS = ["default", "torch_threads=1", "torch_threads=2", "GOMP_SPINCOUNT=300000"]
MAML_OVER_SAMPLING = 1.3  # target at paper scale
OMNI_OVER_MAML = 1.6
DEFAULT_OVER_BEST = {"idle": 1.1, "shared": 1.2}
CONDITIONS = {"idle": "idle", "shared": "with one competitor"}

# The competitor: a realistic CPU-bound single-threaded load that never ends by itself.
COMPETITOR = """
import numpy as np
import torch
torch.set_num_threads(1)
a, t = np.random.rand(256, 256), torch.rand(256, 256)
while True:
    a = np.tanh(a @ a.T / 256.0)
    t = torch.tanh(t @ t.T / 256.0)
"""
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
CELL_TAG = "ONE_CELL "  # marks the JSON line a --_one-cell subprocess prints


# ------------------------------------------------------------------------- measuring
def measure(family: str, agent: str, iterations: int, extra: list[str]) -> list[dict[str, float]]:
    """The metrics of ``iterations`` timed ``Trainer.step`` calls after one warm-up call."""
    # Imported here: the thread mode's parent process never starts torch's thread pools.
    from omnirl.config import load_config
    from omnirl.trainer import Trainer

    with tempfile.TemporaryDirectory() as run_dir:
        sets = [f"agent={agent}", f"run_dir={run_dir}", "eval_every=0", *extra]
        trainer = Trainer(load_config(family, sets))
        try:
            trainer.step()  # warm-up: builds vector envs, first-touch allocations
            rows = [trainer.step() for _ in range(iterations)]
        finally:
            trainer.close()
    return rows


def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Medians of every ``time/*`` metric, with each iteration's seconds and their spread."""
    keys = {k for row in rows for k in row if k.startswith("time/")}
    summary: dict[str, Any] = {k: float(np.median([row.get(k, 0.0) for row in rows])) for k in keys}
    runs = [row["time/iteration_s"] for row in rows]
    summary.update(runs=runs, min=min(runs), max=max(runs))
    return summary


def ratio(num: float, den: float) -> float:
    """``num / den``, NaN when ``den`` is not positive."""
    return num / den if den > 0 else float("nan")


# ---------------------------------------------------------------------- default mode
def print_family(family: str, results: dict[str, dict[str, Any]], iterations: int) -> None:
    """The table of one family: one row per agent, then the ratios against their targets."""
    print(f"\n{family}: seconds per meta-iteration (median of {iterations}, after 1 warm-up)")
    others = SECTIONS[1:]  # sampling has its own column, beside iteration / sampling
    head = "| agent | s/iteration (min-max) | runs (s) | env-steps/s | sampling | it / sampling"
    print(head + " | " + " | ".join(others) + " |")
    print("|---|---:|---|---:|---:|---:|" + "---:|" * len(others))
    for agent, t in results.items():
        it, sampling = t["time/iteration_s"], t.get("time/sampling_s", 0.0)
        runs = ", ".join(f"{s:.2f}" for s in t["runs"])
        cells = " | ".join(f"{t.get(f'time/{s}_s', 0.0):.2f}" for s in others)
        print(
            f"| {agent} | {it:.2f} ({t['min']:.2f}-{t['max']:.2f}) | {runs} "
            f"| {t['time/sps']:,.0f} | {sampling:.2f} | {ratio(it, sampling):.2f} | {cells} |"
        )
    if "maml" in results:
        t = results["maml"]
        over = ratio(t["time/iteration_s"], t.get("time/sampling_s", 0.0))
        print(
            f"\nmaml iteration / sampling = {over:.2f}"
            f"  (target <= {MAML_OVER_SAMPLING} at paper scale)"
        )
    if {"maml", "omni"} <= results.keys():
        over = ratio(results["omni"]["time/iteration_s"], results["maml"]["time/iteration_s"])
        print(f"omni / maml time per iteration = {over:.2f}  (target <= {OMNI_OVER_MAML})")


def default_mode(args: argparse.Namespace) -> None:
    """Every family x agent in this process, one table per family.

    With ``--compare``: every family x agent under each setting, each timed iteration in a
    fresh subprocess (after its own warm-up), the settings alternating, and one table per
    family and setting.
    """
    for family in args.families:
        if not args.compare:
            results = {
                agent: summarize(measure(family, agent, args.iterations, args.extra))
                for agent in args.agents
            }
            print_family(family, results, args.iterations)
            continue
        rows: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.iterations):
            for agent in args.agents:
                for setting in args.compare:
                    cell = run_cell(family, agent, setting, args.extra)
                    rows.setdefault((agent, setting), []).extend(cell["rows"])
                    it = cell["rows"][0]["time/iteration_s"]
                    print(f"  repeat {r + 1}/{args.iterations}, {agent}, {setting}: {it:.2f} s/it")
        for setting in args.compare:
            print(f"\n[{setting}]", end="")
            results = {agent: summarize(rows[agent, setting]) for agent in args.agents}
            print_family(family, results, args.iterations)


def one_cell(args: argparse.Namespace) -> None:
    """The hidden ``--_one-cell`` mode: measure one family/agent, print one tagged JSON line."""
    # omnirl first, as in the command line: its environment defaults must precede torch's load.
    import omnirl  # noqa: F401

    # isort: split
    import torch

    rows = measure(args.families[0], args.agents[0], args.iterations, args.extra)
    line = {
        "iteration_s": [row["time/iteration_s"] for row in rows],
        "sampling_s": [row.get("time/sampling_s", 0.0) for row in rows],
        "rows": [{k: v for k, v in row.items() if k.startswith("time/")} for row in rows],
        "torch_threads": torch.get_num_threads(),
    }
    print(CELL_TAG + json.dumps(line), flush=True)


# ----------------------------------------------------------------------- thread mode
def parse_setting(setting: str) -> tuple[list[str], dict[str, str]]:
    """The config ``key=value`` pairs and the environment variables of a thread setting."""
    sets: list[str] = []
    env: dict[str, str] = {}
    if setting == "default":
        return sets, env
    for pair in setting.split(","):
        key, sep, value = pair.strip().partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"thread setting {setting!r}: expected 'default' or key=value[,...]")
        if key.isupper():
            env[key] = value
        else:
            sets.append(f"{key}={value}")
    return sets, env


def run_cell(family: str, agent: str, setting: str, extra: list[str]) -> dict[str, Any]:
    """One warm-up and one timed iteration under ``setting``, in a fresh subprocess."""
    sets, env = parse_setting(setting)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_one-cell"]
    cmd += ["--families", family, "--agents", agent, "--iterations", "1"]
    for pair in [*extra, *sets]:
        cmd += ["--set", pair]
    done = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(CELL_TAG)]
    if done.returncode or not lines:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(
            f"setting {setting!r}: the measuring subprocess failed ({done.returncode})"
        )
    return json.loads(lines[-1][len(CELL_TAG) :])


@contextmanager
def competitor() -> Iterator[None]:
    """One CPU-bound single-threaded process running beside the block, killed after it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COMPETITOR],
        env={**os.environ, **SINGLE_THREAD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # let it start (and import) before anything is timed
        if proc.poll() is not None:
            raise SystemExit(f"the competitor process exited early ({proc.returncode})")
        yield
    finally:
        proc.kill()
        proc.wait()


def collect_threads(
    family: str, agent: str, settings: list[str], repeats: int, extra: list[str]
) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """Seconds per iteration of each (setting, condition), the settings alternating per repeat."""
    times: dict[tuple[str, str], list[float]] = {(s, c): [] for s in settings for c in CONDITIONS}
    threads: dict[str, int] = {}
    for r in range(repeats):
        for cond, label in CONDITIONS.items():
            with competitor() if cond == "shared" else nullcontext():
                for setting in settings:
                    cell = run_cell(family, agent, setting, extra)
                    times[setting, cond].append(cell["iteration_s"][0])
                    threads[setting] = cell["torch_threads"]
                    print(
                        f"  repeat {r + 1}/{repeats}, {label}, {setting}: "
                        f"{cell['iteration_s'][0]:.2f} s/it",
                        flush=True,
                    )
    return times, threads


def print_threads(
    family: str,
    agent: str,
    settings: list[str],
    times: dict[tuple[str, str], list[float]],
    threads: dict[str, int],
) -> None:
    """The thread table (medians, then every run) and default / best explicit per condition."""
    med = {key: float(np.median(runs)) for key, runs in times.items()}
    print(
        f"\n{family}, {agent}: seconds per iteration (median of {len(times[settings[0], 'idle'])})"
    )
    print("| setting | idle s/it | shared s/it | torch threads | idle runs (s) | shared runs (s) |")
    print("|---|---:|---:|---:|---|---|")
    for s in settings:
        idle, shared = (", ".join(f"{x:.2f}" for x in times[s, c]) for c in CONDITIONS)
        print(
            f"| {s} | {med[s, 'idle']:.2f} | {med[s, 'shared']:.2f} | {threads[s]} "
            f"| {idle} | {shared} |"
        )
    explicit = [s for s in settings if s != "default"]
    if "default" not in settings or not explicit:
        print("\n(default / best explicit needs 'default' and one explicit setting)")
        return
    print()
    for cond, label in CONDITIONS.items():
        best = min(explicit, key=lambda s: med[s, cond])
        over = ratio(med["default", cond], med[best, cond])
        target = DEFAULT_OVER_BEST[cond]
        print(f"default / best explicit, {label} = {over:.2f}  (target <= {target}; best: {best})")


def threads_mode(args: argparse.Namespace) -> None:
    """The thread table of every family x agent given (default: navigation-2d, maml)."""
    for family in args.families:
        for agent in args.agents:
            print(f"\n{family}, {agent}: thread settings {', '.join(args.thread_settings)}")
            times, threads = collect_threads(
                family, agent, args.thread_settings, args.iterations, args.extra
            )
            print_threads(family, agent, args.thread_settings, times, threads)


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; families and agents default by mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations (repeats)")
    parser.add_argument("--families", nargs="+", help=f"default: {' '.join(FAMILIES)}")
    parser.add_argument("--agents", nargs="+", help=f"default: {' '.join(AGENTS)}")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="key=value")
    parser.add_argument(
        "--threads-mode", action="store_true", help="thread settings, idle and with a competitor"
    )
    parser.add_argument(
        "--thread-settings",
        nargs="+",
        default=THREAD_SETTINGS,
        help="'default' or key=value[,KEY=value] (uppercase: environment variable)",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        help="default mode: settings as in --thread-settings, side by side in fresh processes",
    )
    parser.add_argument("--_one-cell", dest="one_cell", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    # Fail on a malformed setting before measuring anything.
    for setting in args.thread_settings if args.threads_mode else args.compare or []:
        parse_setting(setting)
    threads = args.threads_mode
    args.families = args.families or (["navigation-2d"] if threads else FAMILIES)
    args.agents = args.agents or (["maml"] if threads else AGENTS)
    return args


def main() -> None:
    args = parse_args()
    if args.one_cell:
        one_cell(args)
    elif args.threads_mode:
        threads_mode(args)
    else:
        default_mode(args)


if __name__ == "__main__":
    main()
