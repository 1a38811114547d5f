"""Sinusoid evaluation: MSE on fresh test tasks after 0..S SGD steps, for every run and K.

The test tasks come from their own seed stream (:data:`omnirl.seeding.TEST_STREAM`), the same
for every run evaluated with one seed. Each task has ``max(shots)`` support points, of which
each K takes the first K (so K's differ only in data), and :data:`QUERY_POINTS` query points
the MSE is measured on; mean and 95% CI over tasks. The plot is the paper's Figure 5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl.checkpoint import Run, load_runs
from omnirl.options import (
    EvaluateOptions,
    OptionError,
    check_checkpoint,
    parse_counts,
    parse_lr_schedule,
    reject,
)
from omnirl.report import (
    Report,
    csv_bytes,
    figure_bytes,
    json_bytes,
    mean_ci_text,
    output_folder,
    pyplot,
    run_label,
)
from omnirl.seeding import TEST_STREAM, stream
from omnirl.sinusoid.config import FAMILY, data_module
from omnirl.stats import mean_ci95_rows

QUERY_POINTS = 100  # query points per task in evaluation (MSE over the wave, not the K points)
DEFAULT_SHOTS = "5,10,20"
DEFAULT_STEPS = 10
DEFAULT_TASKS = 100
Progress = Callable[[str, int, int], None]


def tensors(*arrays_BN: np.ndarray) -> list[torch.Tensor]:
    """``(B, N)`` arrays as the ``(B, N, 1)`` float32 tensors a regressor takes."""
    return [torch.as_tensor(a, dtype=torch.float32).unsqueeze(-1) for a in arrays_BN]


def adaptation_mse(
    agent: Any,
    data: Any,
    shots: int,
    lrs: Sequence[float],
    flow: str | None = None,
    queries: int = QUERY_POINTS,
) -> np.ndarray:
    """MSE of every task after 0..len(lrs) SGD steps on its first ``shots`` points.

    Args:
        agent: a sinusoid learner.
        data: a ``SinusoidData`` (``envs/sinusoid.py``) whose last ``queries`` points per
            task are the query points and whose first ``shots`` are the support points.
        shots: support points K.
        lrs: one learning rate per step.
        flow: the flow to adapt (default: the learner's ``eval_flow``).
        queries: query points per task.

    Returns:
        ``(len(lrs) + 1, B)`` mean squared errors on the query points.

    Raises:
        ValueError: ``shots + queries`` exceeds the points per task.
    """
    if shots + queries > data.num_points:
        raise ValueError(f"{shots} shots + {queries} queries exceed {data.num_points} points")
    x_s, y_s, x_q, y_q = tensors(
        data.x_BN[:, :shots], data.y_BN[:, :shots], data.x_BN[:, -queries:], data.y_BN[:, -queries:]
    )
    pred_SBQ1 = agent.adapted_predictions(x_s, y_s, x_q, lrs, flow)
    return (pred_SBQ1 - y_q).square().mean(dim=(2, 3)).numpy()


def make_test_set(num_tasks: int, max_shots: int, seed: int) -> Any:
    """The test tasks of ``seed``: ``max_shots`` support then :data:`QUERY_POINTS` query points.

    The same for every run evaluated with ``seed``, and apart from the training tasks (its own
    stream, :data:`omnirl.seeding.TEST_STREAM`).
    """
    return data_module().make_dataset(
        num_tasks, max_shots + QUERY_POINTS, stream(seed, TEST_STREAM)
    )


def _mse_stats(mse_SB: np.ndarray) -> dict[str, list]:
    """Mean and 95% CI over tasks after every step, and every task's MSE."""
    means, cis = mean_ci95_rows(mse_SB)
    # 6 significant digits: the JSON stays small, the means above use full precision.
    tasks = [[float(f"{v:.6g}") for v in row] for row in mse_SB]
    return {"mean": means, "ci95": cis, "tasks": tasks}


def _evaluate(
    loaded: Sequence[Run],
    tasks: int,
    shots: Sequence[int],
    steps: int,
    seed: int,
    flow: str | None,
    lrs: Sequence[float] | None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """The payload of :func:`evaluate_runs` for runs already loaded and checked."""
    test_set = make_test_set(tasks, max(shots), seed)
    total, done = len(loaded) * len(shots), 0
    results = []
    for run in loaded:
        entry: dict[str, Any] = {"run": str(run.path), "agent": run.cfg.agent}
        entry["flow"] = run.learner.eval_flow if flow is None else flow
        entry.update(checkpoint=run.checkpoint.stem, iteration=run.iteration)
        entry["lrs"] = list(lrs) if lrs is not None else [run.cfg.inner_lr] * steps
        entry["mse"] = {}
        for k in shots:
            mse_SB = adaptation_mse(run.learner, test_set, k, entry["lrs"], flow)
            entry["mse"][str(k)] = _mse_stats(mse_SB)
            done += 1
            if on_progress is not None:
                on_progress(run_label(entry), done, total)
        results.append(entry)
    return {
        "family": FAMILY,
        "tasks": test_set.tasks(),
        "shots": list(shots),
        "steps": steps,
        "query_points": QUERY_POINTS,
        "seed": seed,
        "runs": results,
    }


def evaluate_runs(
    runs: Sequence[Path],
    tasks: int = DEFAULT_TASKS,
    shots: Sequence[int] = (5, 10, 20),
    steps: int = DEFAULT_STEPS,
    seed: int = 1000,
    which: str = "best",
    flow: str | None = None,
    lrs: Sequence[float] | None = None,
) -> dict[str, Any]:
    """MSE after 0..steps SGD steps on the same fresh test tasks, for every run and K.

    Args:
        runs: sinusoid run folders.
        tasks: number of test tasks.
        shots: the support-set sizes K.
        steps: SGD steps (the MSE after every one is reported).
        seed: seed of the test tasks and points.
        which: checkpoint, ``best`` or ``latest``.
        flow: the flow to adapt (default: each learner's ``eval_flow``).
        lrs: one learning rate per step (default: each run's ``inner_lr`` at every step).

    Returns:
        The ``eval.json`` payload: the tasks, and per run and K the mean, 95% CI and every
        task's MSE after each step.
    """
    return _evaluate(
        load_runs(runs, which, flow, kind="sinusoid"), tasks, shots, steps, seed, flow, lrs
    )


def _plot(payload: dict[str, Any]) -> bytes:
    """PNG like the paper's Figure 5: MSE (log scale) vs SGD steps, one panel per K."""
    plt = pyplot()
    shots = payload["shots"]
    fig, axes = plt.subplots(1, len(shots), figsize=(4.2 * len(shots), 3.6), dpi=120, squeeze=False)
    for ax, k in zip(axes[0], shots, strict=True):
        for r in payload["runs"]:
            stats = r["mse"][str(k)]
            steps = range(len(stats["mean"]))
            ax.errorbar(
                steps, stats["mean"], yerr=stats["ci95"], marker="o", ms=3, capsize=2,
                label=run_label(r),
            )  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(range(payload["steps"] + 1))
        ax.set_xlabel("SGD steps")
        ax.set_title(f"K = {k}")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"MSE on {payload['query_points']} points (95% CI)")
    fig.suptitle(f"sinusoid: MSE after adaptation on {len(payload['tasks'])} new tasks")
    # One legend under the panels: inside one, it hides the curves it names.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(labels) - 1) // 4), 1, 1))
    return figure_bytes(fig)


def _csv(payload: dict[str, Any]) -> bytes:
    """One row per run, K and step: run, agent, shots, step, mean, ci95."""
    rows = [
        [r["run"], r["agent"], k, step, m, c]
        for r in payload["runs"]
        for k, stats in r["mse"].items()
        for step, (m, c) in enumerate(zip(stats["mean"], stats["ci95"], strict=True))
    ]
    return csv_bytes(["run", "agent", "shots", "step", "mean", "ci95"], rows)


def step_name(step: int) -> str:
    """``"0 steps"``, ``"1 step"``, ...: a column header."""
    return f"{step} step{'s' if step != 1 else ''}"


def _table(payload: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """Title, columns and rows: mean ± 95% CI after 0, 1, 2, 5 and the last step count."""
    steps = payload["steps"]
    shown = sorted({s for s in (0, 1, 2, 5, steps) if s <= steps})
    rows = [
        [run_label(r), k, *(mean_ci_text(stats["mean"][s], stats["ci95"][s], 3) for s in shown)]
        for r in payload["runs"]
        for k, stats in r["mse"].items()
    ]
    title = f"sinusoid: MSE ± 95% CI on {len(payload['tasks'])} new tasks"
    return title, ["run", "K", *map(step_name, shown)], rows


def _parse_options(options: EvaluateOptions) -> tuple[int, int, list[int], list[float] | None]:
    """Tasks, steps, shots and learning rates from the options, refusing what does not apply."""
    reject(options, ("episodes", "data", "split"), FAMILY)
    check_checkpoint(options.checkpoint)
    tasks = DEFAULT_TASKS if options.tasks is None else options.tasks
    steps = DEFAULT_STEPS if options.steps is None else options.steps
    if tasks < 1 or steps < 0:
        raise OptionError(f"--tasks must be >= 1 and --steps >= 0, got {tasks} and {steps}")
    shots = parse_counts(options.shots or DEFAULT_SHOTS, "--shots", 1, 1000)
    return tasks, steps, shots, parse_lr_schedule(options.lr_schedule, steps)


def evaluate_report(
    runs: Sequence[Path], options: EvaluateOptions, on_progress: Progress | None = None
) -> Report:
    """``omnirl evaluate`` on sinusoid runs: the table and ``eval.json``, ``.csv``, ``.png``.

    Everything is checked before any work: the options (``--episodes``, ``--data`` and
    ``--split`` do not apply), every run loaded, ``--flow``, and the output folder (``--out``,
    else the run, else ``./eval``). Defaults: 100 tasks, 10 steps, ``--shots 5,10,20``.

    Args:
        runs: sinusoid run folders.
        options: the options as given.
        on_progress: called with a run's label, the (run, K) pairs done and their total.

    Raises:
        OptionError, ConfigError, FileNotFoundError, OSError: bad input (one line).
    """
    tasks, steps, shots, lrs = _parse_options(options)
    loaded = load_runs(runs, options.checkpoint, options.flow, kind="sinusoid")
    folder = output_folder(options.out, runs)
    payload = _evaluate(loaded, tasks, shots, steps, options.seed, options.flow, lrs, on_progress)
    title, columns, rows = _table(payload)
    files = {
        folder / "eval.json": json_bytes(payload),
        folder / "eval.csv": _csv(payload),
        folder / "eval.png": _plot(payload),
    }
    notes = [run.note for run in loaded if run.note is not None]
    return Report(title, columns, rows, files, notes, payload)
