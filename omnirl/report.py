"""Evaluation outputs: ``eval.json``, ``eval.csv`` and ``eval.png`` (return vs adaptation steps).

Every file is written atomically (:func:`omnirl.files.write_atomic`), so an interrupted or
failing write leaves nothing half-written.
"""

from __future__ import annotations

import csv
import io
import json
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


def plot_bytes(results: Sequence[dict[str, Any]], family: str, published: bool) -> bytes:
    """PNG of mean return ± 95% CI vs adaptation steps, one line per run.

    With ``published``, the MAML paper's numbers for ``family`` are drawn as reference markers
    and its oracle as a dotted line.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in results:
        steps = range(len(r["mean"]))
        label = f"{r['agent']} ({Path(r['run']).name})"
        ax.errorbar(steps, r["mean"], yerr=r["ci95"], marker="o", capsize=3, label=label)
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
    """Write ``eval.json``, ``eval.csv`` and ``eval.png`` into ``folder``; return their paths."""
    results, family = payload["runs"], payload["family"]
    files = {
        "eval.json": json.dumps(payload, indent=1).encode(),
        "eval.csv": csv_bytes(results),
        "eval.png": plot_bytes(results, family, published),
    }
    paths = []
    for name, data in files.items():
        write_atomic(folder / name, data)
        paths.append(folder / name)
    return paths
