"""Evaluation outputs: ``eval.json``, ``eval.csv`` and ``eval.png`` (return vs adaptation steps).

Every file is written atomically (:func:`omnirl.files.write_atomic`), so an interrupted or
failing write leaves nothing half-written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omnirl.files import write_atomic

# The MAML paper's results (Finn et al. 2017, its released result files; DESIGN.md section 7):
# mean return after 0, 1, 2, 3 steps with 40 test tasks, and the oracle policy.
PUBLISHED_MAML = {
    "navigation-2d": ([-40.4, -11.7, -3.3, -3.2], -2.3),
    "halfcheetah-vel": ([-129.5, -78.6, -66.6, -60.8], -54.5),
    "halfcheetah-dir": ([-50.7, 293.2, 313.5, 315.7], 442.7),
}


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be written there.

    Raises:
        OSError: with a one-line message naming the folder.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def csv_bytes(results: Sequence[dict[str, Any]]) -> bytes:
    """One row per run and step: run, agent, family, step, mean, ci95."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "agent", "family", "step", "mean", "ci95"])
    for r in results:
        for step, (mean, ci) in enumerate(zip(r["mean"], r["ci95"], strict=True)):
            writer.writerow([r["run"], r["agent"], r["family"], step, f"{mean:.6g}", f"{ci:.6g}"])
    return buffer.getvalue().encode()


def analytic_optimum(family: str, tasks: Sequence[dict[str, Any]]) -> float | None:
    """Mean return of the optimal policy on ``tasks``, for families where it is known exactly.

    navigation-2d: the greedy policy (``omnirl.envs.navigation.optimal_return``) over the
    family's horizon. Other families: ``None``.
    """
    if family != "navigation-2d" or not tasks:
        return None
    import numpy as np

    from omnirl import registry

    # Imported when needed: the core never imports omnirl.envs at load time.
    from omnirl.envs.navigation import optimal_return

    goals_N2 = np.array([task["goal"] for task in tasks], dtype=np.float64)
    return float(optimal_return(goals_N2, registry.get_family(family).horizon).mean())


def _adapts(agent: str) -> bool:
    """Whether the agent named ``agent`` adapts at test time (unknown names: assume it does)."""
    from omnirl import registry

    try:
        return getattr(registry.load_agent(agent), "adapts", True)
    except registry.UnknownNameError:
        return True


def plot_bytes(
    results: Sequence[dict[str, Any]],
    family: str,
    published: bool,
    optimum: float | None = None,
) -> bytes:
    """PNG of mean return ± 95% CI vs adaptation steps, one line per run.

    Runs of agents that do not adapt (the oracle) are horizontal lines: their return is the same
    at every step count. With ``published``, the MAML paper's numbers for ``family`` are drawn as
    reference markers and its oracle as a dotted line; ``optimum`` (the analytic optimum's mean
    return on the test tasks) as a dashed black line.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    # One colour per run, given explicitly: axhline does not advance the colour cycle, so an
    # oracle line would otherwise share its colour with the next run's curve.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, r in enumerate(results):
        steps = range(len(r["mean"]))
        label = f"{r['agent']} ({Path(r['run']).name})"
        color = palette[index % len(palette)]
        if _adapts(r["agent"]):
            ax.errorbar(
                steps, r["mean"], yerr=r["ci95"], marker="o", capsize=3, color=color, label=label
            )
        else:
            ax.axhline(r["mean"][0], linestyle="-.", linewidth=2.5, color=color, label=label)
            if math.isfinite(r["ci95"][0]):
                low, high = r["mean"][0] - r["ci95"][0], r["mean"][0] + r["ci95"][0]
                ax.axhspan(low, high, color=color, alpha=0.15, linewidth=0)
    if optimum is not None:
        # Under the runs (an oracle can sit right on it) and thin enough to show them.
        ax.axhline(
            optimum, color="black", linestyle="--", linewidth=1, zorder=1, label="analytic optimum"
        )
    if published and family in PUBLISHED_MAML:
        values, oracle = PUBLISHED_MAML[family]
        ax.plot(range(len(values)), values, "kx", markersize=8, label="MAML paper")
        ax.axhline(oracle, color="gray", linestyle=":", label="MAML paper oracle")
    ax.set_xticks(range(max(len(r["mean"]) for r in results)))
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return (95% CI)")
    ax.set_title(f"{family}: return after adaptation on new tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(folder: Path, payload: dict[str, Any], published: bool) -> list[Path]:
    """Write ``eval.json``, ``eval.csv`` and ``eval.png`` into ``folder``; return their paths.

    Where the family has an analytic optimum (:func:`analytic_optimum`), eval.json gets its mean
    return on the payload's ``tasks`` as ``"optimum"`` and the plot draws it.
    """
    results, family = payload["runs"], payload["family"]
    optimum = analytic_optimum(family, payload.get("tasks", []))
    if optimum is not None:
        payload = {**payload, "optimum": optimum}
    files = {
        "eval.json": json.dumps(payload, indent=1).encode(),
        "eval.csv": csv_bytes(results),
        "eval.png": plot_bytes(results, family, published, optimum),
    }
    paths = []
    for name, data in files.items():
        write_atomic(folder / name, data)
        paths.append(folder / name)
    return paths
