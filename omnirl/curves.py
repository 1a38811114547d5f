"""Learning curves of ``omnirl report``: the quick evaluation against cumulative env steps.

From each run's ``metrics.jsonl``: the quick evaluation's ``eval/return_post`` (the return after
one step on the run's fixed evaluation tasks) against the env steps of training so far
(``time/env_steps`` where logged, else ``time/sps * time/iteration_s``), averaged over seeds at
the iterations they share (RL runs only: the supervised kinds log no env steps). Learners that
collect more per iteration (omni: 1.5x maml) reach further along the axis, so
:func:`at_equal_env_steps` compares each label with the reference at the env steps both reach:
equal samples, not equal iterations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.report import figure_bytes, pyplot
from omnirl.stats import STATISTICS, stratified_interval


def _env_steps(line: dict[str, Any]) -> float:
    if "time/env_steps" in line:
        return float(line["time/env_steps"])
    return round(line.get("time/sps", 0.0) * line.get("time/iteration_s", 0.0))


def curve_of(run: Path) -> dict[int, tuple[float, float]]:
    """``{iteration: (cumulative env steps, eval/return_post)}`` from ``metrics.jsonl``."""
    points, total = {}, 0.0
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for text in lines:
        try:
            line = json.loads(text)
        except json.JSONDecodeError:  # the last line of a killed run
            continue
        total += _env_steps(line)
        if "eval/return_post" in line:
            points[int(line["iteration"])] = (total, float(line["eval/return_post"]))
    return points


def learning_curves(
    groups: dict[tuple[str, str], dict[str, Any]], resamples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per family and label: mean quick-evaluation return over seeds vs cumulative env steps."""
    curves: dict[str, dict[str, Any]] = {}
    for (family, _), group in sorted(groups.items()):
        if group["kind"] != "rl":  # sinusoid and few-shot runs have no env steps to plot
            continue
        for label, data in sorted(group["labels"].items()):
            if label in curves.get(family, {}):  # the same runs, evaluated on another split
                continue
            runs = [curve_of(Path(run)) for run in data["runs"]]
            shared = sorted(set.intersection(*(set(c) for c in runs))) if runs else []
            if not shared:
                continue
            steps = [float(np.mean([c[i][0] for c in runs])) for i in shared]
            values = np.array([[c[i][1] for c in runs] for i in shared])  # (points, seeds)
            bands = [
                stratified_interval(STATISTICS["mean"], [v[:, None]], resamples, seed)
                for v in values
            ]
            curves.setdefault(family, {})[label] = {
                "iteration": shared,
                "env_steps": steps,
                "mean": values.mean(axis=1).tolist(),
                "ci": bands,
            }
    return curves


def at_equal_env_steps(
    curves: dict[str, dict[str, Any]], reference: str = "maml"
) -> dict[str, dict[str, Any]]:
    """Per family and label: the label and ``reference`` compared at equal env steps.

    For each label other than the reference, the budget is the smaller of the two curves' last
    env steps (the one that collected less per iteration ends first); both means are linearly
    interpolated there between neighbouring quick evaluations. Families without the
    reference's curve are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for family, labels in curves.items():
        ref = labels.get(reference)
        if ref is None:
            continue
        for label, c in labels.items():
            if label == reference:
                continue
            budget = min(c["env_steps"][-1], ref["env_steps"][-1])
            out.setdefault(family, {})[label] = {
                "env_steps": budget,
                "mean": float(np.interp(budget, c["env_steps"], c["mean"])),
                "reference_mean": float(np.interp(budget, ref["env_steps"], ref["mean"])),
            }
    return out


def band(ax: Any, x: Sequence[float], y: Sequence[float], ci: Sequence, label: str, i: int) -> None:
    """One label's line with its interval as a shaded band (none where the interval is NaN)."""
    color = f"C{i % 10}"
    ax.plot(x, y, marker="o", markersize=3, color=color, label=label)
    low, high = np.array([c[0] for c in ci], float), np.array([c[1] for c in ci], float)
    if np.isfinite(low).all():
        ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)


def curves_figure(curves: dict[str, dict[str, Any]], reference: str = "maml") -> bytes:
    """Quick-evaluation return after one step vs env steps, a line and band per label.

    Two panels per family: every label, and the same zoomed to the reference's range (a
    collapsing baseline would otherwise flatten the curves that matter into one line).
    """
    plt = pyplot()
    families = sorted(curves.items())
    fig, axes = plt.subplots(
        2,
        max(len(families), 1),
        figsize=(5.2 * max(len(families), 1), 7.5),
        dpi=120,
        squeeze=False,
    )
    for column, (family, labels) in enumerate(families):
        for row in (0, 1):
            ax = axes[row][column]
            for i, (label, c) in enumerate(labels.items()):
                band(ax, c["env_steps"], c["mean"], c["ci"], label, i)
            ax.set(xlabel="env steps (training)", ylabel="quick evaluation return after 1 step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][column].set_title(f"{family}: learning\n(mean over seeds, 95% CI)", fontsize=10)
        ref = labels.get(reference)
        if ref is not None:
            low, high = min(ref["mean"]), max(ref["mean"])
            margin = 0.25 * (high - low) + 1e-6
            axes[1][column].set_ylim(low - margin, high + margin)
            axes[1][column].set_title(f"{family}:\nzoomed to {reference}'s range", fontsize=10)
    fig.tight_layout()
    return figure_bytes(fig)
