"""Learning curves of ``omnirl report``: the quick evaluation against cumulative env steps.

From each run's ``metrics.jsonl``: the quick evaluation's ``eval/return_post`` (the return after
one step on the run's fixed evaluation tasks) against the env steps of training so far
(``time/env_steps`` where logged, else ``time/sps * time/iteration_s``), averaged over seeds at
the iterations they share. Learners that collect more per iteration (omni: 1.5x maml) reach
further along the axis; :func:`learning_curves` also reads every label at the env-step budget
all of a family's labels reach, so they are compared at equal samples, not equal iterations.
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


def at_equal_env_steps(curves: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per family: the env-step budget every label's curve reaches, and each label's mean there.

    The budget is the smallest of the labels' last points; a label's mean return there is
    linearly interpolated between its two neighbouring quick evaluations.
    """
    out = {}
    for family, labels in curves.items():
        budget = min(c["env_steps"][-1] for c in labels.values())
        means = {
            label: float(np.interp(budget, c["env_steps"], c["mean"]))
            for label, c in labels.items()
        }
        out[family] = {"env_steps": budget, "mean": means}
    return out


def band(ax: Any, x: Sequence[float], y: Sequence[float], ci: Sequence, label: str, i: int) -> None:
    """One label's line with its interval as a shaded band (none where the interval is NaN)."""
    color = f"C{i % 10}"
    ax.plot(x, y, marker="o", markersize=3, color=color, label=label)
    low, high = np.array([c[0] for c in ci], float), np.array([c[1] for c in ci], float)
    if np.isfinite(low).all():
        ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)


def curves_figure(curves: dict[str, dict[str, Any]]) -> bytes:
    """Quick-evaluation return after one step vs env steps, a line and band per label."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, max(len(curves), 1), figsize=(5.2 * max(len(curves), 1), 4), dpi=120, squeeze=False
    )
    for ax, (family, labels) in zip(axes[0], sorted(curves.items()), strict=False):
        for i, (label, c) in enumerate(labels.items()):
            band(ax, c["env_steps"], c["mean"], c["ci"], label, i)
        budget = min(c["env_steps"][-1] for c in labels.values())
        ax.axvline(budget, color="0.5", linestyle="--", linewidth=0.8, label="equal env steps")
        ax.set(xlabel="env steps (training)", ylabel="quick evaluation return after 1 step")
        ax.set_title(f"{family}: learning (mean over seeds, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_bytes(fig)
