"""Sinusoid rendering: the recovered waves of one task after 0, 1, ... SGD steps (Figure 6).

One task (typed as JSON, or the first test task of the seed), K support points for each K
(the first K of the same points), the true wave and the learner's predictions after the chosen
step counts, with their MSE on a grid of :data:`RENDER_GRID` points of [-5, 5].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnirl.checkpoint import load_runs
from omnirl.options import (
    OptionError,
    RenderOptions,
    check_checkpoint,
    parse_counts,
    parse_task,
    reject,
)
from omnirl.report import Report, check_writable, figure_bytes, pyplot
from omnirl.seeding import TEST_STREAM, stream
from omnirl.sinusoid.config import FAMILY, data_module
from omnirl.sinusoid.evaluate import make_test_set, step_name, tensors

RENDER_GRID = 200  # points on which rendered waves are drawn and their MSE is measured
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class RenderPanel:
    """One support-set size of a rendered task: the points and the recovered waves."""

    shots: int
    x_support: np.ndarray
    y_support: np.ndarray
    predictions: dict[int, np.ndarray]  # step count -> prediction on the grid
    mse: dict[int, float]  # step count -> MSE on the grid


def render_panels(
    agent: Any,
    task: dict[str, float],
    shots: Sequence[int],
    steps: Sequence[int],
    lr: float,
    seed: int,
    flow: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[RenderPanel]]:
    """Adapt to ``task`` on K support points for each K; predictions after each step count.

    The support points of every K are the first K of the same ``max(shots)`` points (drawn
    with ``seed``). Returns the grid, the true wave on it, and one panel per K.
    """
    sinusoid = data_module()
    # Its own stream: the default task came from [seed, TEST_STREAM] (make_test_set).
    points = sinusoid.points_for([task], max(shots), stream(seed, TEST_STREAM, 1))
    grid = np.linspace(sinusoid.X_LOW, sinusoid.X_HIGH, RENDER_GRID, dtype=np.float32)
    truth = sinusoid.sine(points.amplitude_B, points.phase_B, grid[None]).astype(np.float32)[0]
    panels = []
    for k in shots:
        x_s, y_s, x_g = tensors(points.x_BN[:, :k], points.y_BN[:, :k], grid[None])
        pred = agent.adapted_predictions(x_s, y_s, x_g, [lr] * max(steps), flow)[:, 0, :, 0]
        pred = pred.numpy()
        panels.append(
            RenderPanel(
                k,
                points.x_BN[0, :k],
                points.y_BN[0, :k],
                {s: pred[s] for s in steps},
                {s: float(np.mean((pred[s] - truth) ** 2)) for s in steps},
            )
        )
    return grid, truth, panels


def render_figure(
    grid: np.ndarray, truth: np.ndarray, panels: Sequence[RenderPanel], title: str, suffix: str
) -> bytes:
    """The paper's Figure 6: true wave, K support points, recovered waves; one panel per K."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels), 3.4), dpi=120, squeeze=False
    )
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.plot(grid, truth, color="black", linewidth=2, label="ground truth")
        for step, prediction in panel.predictions.items():
            style = ":" if step == 0 else "-"
            label = f"{step_name(step)} (MSE {panel.mse[step]:.3f})"
            ax.plot(grid, prediction, style, linewidth=1.5, label=label)
        ax.plot(panel.x_support, panel.y_support, "k^", markersize=7, label=f"{panel.shots} points")
        ax.set_title(f"K = {panel.shots}")
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    return figure_bytes(fig, suffix)


def _parse_options(options: RenderOptions) -> tuple[list[int], list[int], Path]:
    """Steps, shots and the output file, refusing the options that do not apply."""
    reject(options, ("episodes", "sample", "horizon"), FAMILY)
    check_checkpoint(options.checkpoint)
    steps = parse_counts(options.steps or "0,1,10", "--steps", 0, 100)
    shots = parse_counts(options.shots or "5,10", "--shots", 1, 1000)
    out = Path(options.out or "render.png")
    if out.suffix.lower() not in FIGURE_SUFFIXES or out.is_dir():
        raise OptionError(f"--out must be a file ending in .png, .svg or .pdf, got {str(out)!r}")
    return steps, shots, out


def render_report(run: Path, options: RenderOptions) -> Report:
    """``omnirl render`` on a sinusoid run: the recovered waves of one task, as an image.

    Defaults: the first test task of ``--seed``, ``--steps 0,1,10``, ``--shots 5,10``, ``--out
    render.png`` (.png, .svg or .pdf). Everything is checked before any work; the image is in
    ``Report.files`` and the table gives the MSE on the grid per K and step count.

    Raises:
        OptionError, ConfigError, FileNotFoundError, OSError: bad input (one line).
    """
    steps, shots, out = _parse_options(options)
    [loaded] = load_runs([run], options.checkpoint, options.flow, kind="sinusoid")
    cfg = loaded.cfg
    if options.task is None:
        task = make_test_set(1, 1, options.seed).tasks()[0]
    else:
        task = parse_task(options.task, data_module().SINUSOID_TASKS, FAMILY)
    check_writable(out.parent)
    grid, truth, panels = render_panels(
        loaded.learner, task, shots, steps, cfg.inner_lr, options.seed, options.flow
    )
    wave = f"{task['amplitude']:.2f} sin(x - {task['phase']:.2f})"
    where = f"{loaded.path.name}, iteration {loaded.iteration}"
    title = f"{cfg.agent} ({where}): y = {wave}, lr {cfg.inner_lr:g}"
    files = {out: render_figure(grid, truth, panels, title, out.suffix.lower())}
    rows = [[str(p.shots), *(f"{p.mse[s]:.4f}" for s in steps)] for p in panels]
    payload = {
        "task": task,
        "mse": {str(p.shots): {str(s): p.mse[s] for s in steps} for p in panels},
    }
    notes = [loaded.note] if loaded.note is not None else []
    return Report(
        f"{cfg.agent} on y = {wave}: MSE on {RENDER_GRID} points of [-5, 5]",
        ["K", *map(step_name, steps)],
        rows,
        files,
        notes,
        payload,
    )
