"""Where on the task distribution one agent leads another: evaluated runs binned by a task field.

Run: ``python results/by_task.py [--split S] FIELD EDGES A B RUN...``, e.g. ::

    cd results/sweeps/paper
    python ../../by_task.py velocity 0,0.5,1,1.5,2 omni maml halfcheetah-vel-{omni,maml}-?
    python ../../by_task.py --split ood-velocity velocity 2,2.5,3 omni maml \
        halfcheetah-vel-domains-{omni,maml}-?

Every RUN is an evaluated run folder (its ``eval.json``, or with ``--split`` the evaluation of
that split) of agent A or B; runs of the same agent are its seeds, and all must share the test
tasks (same split, seed and count), which is checked.
Prints a markdown table: per bin of the task field FIELD (a vector field by its norm, a scalar
one by its signed value, so HalfCheetahDir's direction -1 and +1 fall in different bins; edges
EDGES, the last bin closed), the number of tasks, each agent's mean return over seeds x tasks
after 0, 1 and the last step, the paired mean A − B after every step, and each seed's A − B
after one step (seeds paired in sorted order of their folders).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from omnirl.evaluation import eval_stem


def load(
    runs: list[Path], agents: tuple[str, str], split: str = "test"
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The shared tasks of ``split``, and per agent its returns as a (seeds, tasks, steps) array."""
    first, returns = None, {a: [] for a in agents}
    for run in sorted(runs):
        data = json.loads((run / f"{eval_stem(split)}.json").read_text())
        key = (data["split"], data["seed"], data["tasks"])
        first = first or key
        if key != first:
            raise SystemExit(f"error: {run} was evaluated on other tasks than the first run")
        result = data["runs"][0]
        if result["agent"] not in returns:
            raise SystemExit(f"error: {run} is agent {result['agent']!r}, not one of {agents}")
        returns[result["agent"]].append(np.asarray(result["returns"]).T)  # tasks x steps
    if len({len(r) for r in returns.values()}) != 1:
        raise SystemExit("error: the two agents need the same number of seeds")
    return first[2], {a: np.stack(r) for a, r in returns.items()}


def _scalar(value: float | list[float]) -> float:
    """A task field as one number: a scalar as it is, a vector by its norm."""
    return float(np.linalg.norm(value)) if np.ndim(value) else float(value)


def main(
    field: str, edges: list[float], agents: tuple[str, str], runs: list[Path], split: str = "test"
) -> None:
    """Print the binned table (see the module docstring)."""
    tasks, returns = load(runs, agents, split)
    # A vector field (a goal) is binned by its Euclidean norm; a scalar one (a velocity, a
    # direction) by its value, sign included.
    values = np.array([_scalar(t[field]) for t in tasks])
    a, b = (returns[name] for name in agents)
    steps = a.shape[2]
    diff = a - b
    print(
        f"| {field} | tasks | {agents[0]}: 0 / 1 / {steps - 1} steps "
        f"| {agents[1]}: 0 / 1 / {steps - 1} steps | {agents[0]} − {agents[1]}, 0..{steps - 1} "
        f"| per seed, 1 step |"
    )
    print("|---|---:|---|---|---|---|")
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = i == len(edges) - 2
        mask = (values >= lo) & ((values <= hi) if last else (values < hi))
        cells = [
            " / ".join(f"{x:.1f}" for x in r[:, mask].mean(axis=(0, 1))[[0, 1, steps - 1]])
            for r in (a, b)
        ]
        paired = " / ".join(f"{x:+.1f}" for x in diff[:, mask].mean(axis=(0, 1)))
        seeds = " / ".join(f"{x:+.1f}" for x in diff[:, mask, 1].mean(axis=1))
        bin_ = f"[{lo}, {hi}{']' if last else ')'}"
        print(f"| {bin_} | {mask.sum()} | {cells[0]} | {cells[1]} | {paired} | {seeds} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    split = "test"
    if args[:1] == ["--split"] and len(args) > 1:
        split, args = args[1], args[2:]
    if len(args) < 5:
        raise SystemExit(__doc__)
    main(
        args[0],
        [float(x) for x in args[1].split(",")],
        (args[2], args[3]),
        [Path(p) for p in args[4:]],
        split,
    )
