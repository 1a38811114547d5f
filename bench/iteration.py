"""Seconds per meta-iteration, end to end, and where the time goes.

Run: ``python bench/iteration.py`` (a few minutes on 2 cores). For each agent (``maml``, ``omni``)
and family (HalfCheetahVel at paper scale: 40 tasks x 20 episodes x H = 200; Navigation2D:
20 tasks x 20 episodes x H = 100), it runs one warm-up iteration and ``--iterations`` timed ones
through the real ``Trainer.step`` (sampling, baselines, inner steps, TRPO, logging, checkpoint),
and prints seconds per iteration, env-steps per second and the per-section totals.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from omnirl.config import load_config
from omnirl.trainer import Trainer

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


def measure(family: str, agent: str, iterations: int, extra: list[str]) -> dict[str, float]:
    """Mean of each ``time/*`` metric over ``iterations`` timed iterations."""
    with tempfile.TemporaryDirectory() as run_dir:
        sets = [f"agent={agent}", f"run_dir={run_dir}", "eval_every=0", *extra]
        trainer = Trainer(load_config(family, sets))
        trainer.step()  # warm-up: builds vector envs, first-touch allocations
        rows = [trainer.step() for _ in range(iterations)]
        trainer.close()
    keys = {k for row in rows for k in row if k.startswith("time/")}
    return {k: float(np.mean([row.get(k, 0.0) for row in rows])) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per cell")
    parser.add_argument("--families", nargs="+", default=["halfcheetah-vel", "navigation-2d"])
    parser.add_argument("--agents", nargs="+", default=["maml", "omni"])
    parser.add_argument("--set", dest="extra", action="append", default=[], help="key=value")
    args = parser.parse_args()
    for family in args.families:
        results = {
            agent: measure(family, agent, args.iterations, args.extra) for agent in args.agents
        }
        print(f"\n{family}: seconds per meta-iteration (mean of {args.iterations})")
        print("| agent | s/iteration | env-steps/s | " + " | ".join(SECTIONS) + " |")
        print("|---|---:|---:|" + "---:|" * len(SECTIONS))
        for agent, t in results.items():
            cells = " | ".join(f"{t.get(f'time/{s}_s', 0.0):.2f}" for s in SECTIONS)
            print(f"| {agent} | {t['time/iteration_s']:.2f} | {t['time/sps']:,.0f} | {cells} |")
        if {"maml", "omni"} <= results.keys():
            ratio = results["omni"]["time/iteration_s"] / results["maml"]["time/iteration_s"]
            print(f"\nomni / maml time per iteration = {ratio:.2f}  (target <= 1.8)")


if __name__ == "__main__":
    main()
