"""Sinusoid regression with Omni-Training: config, trainer, evaluation, plots and rendering.

The supervised module of DESIGN.md section 9, run through the same command line as the RL
families (``omnirl train sinusoid``, ``omnirl evaluate RUN...``, ``omnirl render RUN``): a run's
``config.yaml`` says ``family: sinusoid``, and ``omnirl.cli`` hands such runs to the
``Config``, ``Trainer``, ``evaluate_command`` and ``render_command`` of this module.

- Training (:class:`Trainer`): each iteration draws a meta-batch of B tasks from the fixed
  training set (30,000 tasks x 50 points, drawn from ``data_seed``), K support and Q query points
  per task, and takes one Adam step of the agent's rule. Every ``log_every`` iterations: one
  line of ``metrics.jsonl`` (means over the window), a quick evaluation, and atomic checkpoints
  (``latest.pt``; ``best.pt`` by the quick evaluation's MSE after one step).
- Evaluation (:func:`evaluate_runs`): fresh test tasks from their own seed stream, K in {5, 10,
  20} support points (the first K of the same 20, so K's differ only in data), 1..10 SGD steps
  at the inner learning rate, MSE on 100 query points per task; mean and 95% CI over tasks. The
  plot is the paper's Figure 5 (log scale).
- Rendering (:func:`render_figure`): one task, its K support points, the true wave and the
  recovered ones after the chosen step counts (the paper's Figure 6).

The core never imports ``omnirl.agents``/``omnirl.envs`` at load time: agents are entry-point
strings and the task module is imported when needed.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirl import checkpoint
from omnirl.config import (
    NON_EMPTY_POSITIVE,
    ConfigError,
    above,
    at_least,
    config_key,
    interval,
    load_config,
    one_of,
    validate_fields,
)
from omnirl.evaluation import TEST_STREAM, mean_ci95
from omnirl.files import write_atomic
from omnirl.report import check_writable
from omnirl.seeding import seed_everything
from omnirl.threads import available_cores
from omnirl.trainer import RunTrainer, new_run_dir, open_run_dir

FAMILY = "sinusoid"
# Learning rules by name, resolved lazily (as omnirl.registry does for the RL agents).
AGENTS = {
    "omni": "omnirl.agents.regression:OmniRegression",
    "maml": "omnirl.agents.regression:MAMLRegression",
    "pretrain": "omnirl.agents.regression:PretrainRegression",
    "joint": "omnirl.agents.regression:JointRegression",
}
# Seed streams apart from the run's own generator: the training set (from data_seed) and the
# quick-evaluation tasks; test tasks use omnirl.evaluation.TEST_STREAM, as for the RL families.
DATA_STREAM = 30011
EVAL_STREAM = 7919
QUERY_POINTS = 100  # query points per task in evaluation (MSE over the wave, not the K points)
RENDER_GRID = 200  # points on which rendered waves are drawn and their MSE is measured
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


# --------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    """A sinusoid training run (``configs/sinusoid.yaml`` comments every key)."""

    # what to train
    family: str = config_key(FAMILY, "the supervised module", one_of((FAMILY,)))
    agent: str = config_key("omni", "learning rule", one_of(tuple(AGENTS)))
    seed: int = config_key(0, "seed of the run: initial parameters and meta-batches", at_least(0))
    # data and meta-batch
    iterations: int = config_key(50_000, "outer steps (MAML paper: 70,000)", at_least(0))
    tasks_per_iteration: int = config_key(25, "tasks B per meta-batch (MAML: 25)", at_least(1))
    shots: int = config_key(10, "support points K per task in training (MAML: 10)", at_least(1))
    query_points: int = config_key(10, "query points per task in training", at_least(1))
    train_tasks: int = config_key(30_000, "tasks in the fixed training set", at_least(1))
    points_per_task: int = config_key(50, "points per training task", at_least(2))
    data_seed: int = config_key(0, "seed of the fixed training set", at_least(0))
    # model
    hidden_sizes: tuple[int, ...] = config_key((64, 64), "hidden layers (tanh)", NON_EMPTY_POSITIVE)
    branch_rank: int = config_key(16, "rank of the Omni-Net pre/meta branches", at_least(1))
    # inner loop
    inner_lr: float = config_key(0.02, "inner (adaptation) learning rate alpha", above(0))
    inner_steps: int = config_key(1, "inner SGD steps in training", at_least(1))
    first_order: bool = config_key(False, "first-order MAML (no second derivatives)")
    adapt_branches: bool = config_key(False, "inner steps adapt the Omni-Net branch factors")
    # outer loop and Omni-Training
    outer_lr: float = config_key(1e-3, "Adam learning rate", above(0))
    ema_decay: float = config_key(0.99, "EMA teacher decay", interval(0, 1, high_open=True))
    distill_weight: float = config_key(3.0, "self-distillation weight lambda", at_least(0))
    # bookkeeping
    log_every: int = config_key(500, "metrics, quick evaluation, checkpoint every N", at_least(1))
    eval_tasks: int = config_key(100, "tasks of the quick evaluation", at_least(1))
    run_dir: str = config_key("runs", "folder that holds the run folders")
    torch_threads: int = config_key(0, "torch threads (0: all cores)", at_least(0))

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.shots + self.query_points > self.points_per_task:
            raise ConfigError(
                f"config keys 'shots' + 'query_points' = {self.shots + self.query_points} exceed "
                f"'points_per_task' = {self.points_per_task} (support and query are disjoint)"
            )


def _sinusoid() -> Any:
    """The task module (imported when needed: the core never imports omnirl.envs at load)."""
    return importlib.import_module("omnirl.envs.sinusoid")


def make_agent(cfg: Config) -> Any:
    """A new ``cfg.agent`` learning rule (``omnirl.agents.regression``)."""
    module, _, name = AGENTS[cfg.agent].partition(":")
    return getattr(importlib.import_module(module), name)(cfg)


def _tensors(*arrays_BN: np.ndarray) -> list[torch.Tensor]:
    """``(B, N)`` arrays as ``(B, N, 1)`` float32 tensors."""
    return [torch.as_tensor(a, dtype=torch.float32).unsqueeze(-1) for a in arrays_BN]


# -------------------------------------------------------------------------------- trainer
class Trainer(RunTrainer):
    """Trains one sinusoid agent as the config says (same interface as the RL trainer).

    Args:
        cfg: the resolved config.
        run_dir: the run folder (default: a new ``<run_dir>/sinusoid-<agent>-<seed>-<time>``).
    """

    def __init__(self, cfg: Config, run_dir: str | Path | None = None):
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads or available_cores())
        self.rng = seed_everything(cfg.seed)  # also seeds parameter initialisation
        self.agent = make_agent(cfg)
        self._batch = importlib.import_module("omnirl.agents.regression").RegressionBatch
        sinusoid = _sinusoid()
        data_rng = np.random.default_rng([cfg.data_seed, DATA_STREAM])
        self.data = sinusoid.make_dataset(cfg.train_tasks, cfg.points_per_task, data_rng)
        eval_rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        self.eval_set = sinusoid.make_dataset(cfg.eval_tasks, cfg.shots + QUERY_POINTS, eval_rng)
        self.iteration = 0
        self.best = math.inf
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.logged: dict[str, float] = {}  # the last metrics line (shown by the progress bar)
        self._window: list[dict[str, float]] = []

    schema = Config

    def train(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> Path:
        """Run the remaining iterations; return the run folder.

        Args:
            on_iteration: called after every iteration with its number and metrics.

        Raises:
            TrainingError: a non-finite loss; ``latest.pt`` holds the last logged iteration.
        """
        open_run_dir(self.run_dir, self.cfg, self.iteration)
        if self.iteration == 0:
            self.save_checkpoint("latest.pt")  # evaluate/render work before the first log
        while self.iteration < self.cfg.iterations:
            metrics = self.step()
            if on_iteration is not None:
                on_iteration(self.iteration, {**metrics, **self.logged})
        return self.run_dir

    def step(self) -> dict[str, float]:
        """One meta-batch and one outer step; every ``log_every``: log, evaluate, checkpoint."""
        cfg = self.cfg
        arrays = _sinusoid().sample_batch(
            self.data, cfg.tasks_per_iteration, cfg.shots, cfg.query_points, self.rng
        )
        batch = self._batch.from_arrays(*arrays)
        start = time.perf_counter()
        try:
            metrics = self.agent.update(batch)
        except FloatingPointError as exc:
            raise self.stopped(exc) from None
        metrics["time/iteration_s"] = time.perf_counter() - start
        self.iteration += 1
        self._window.append(metrics)
        if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
            self._log_window()
        return metrics

    def _log_window(self) -> None:
        cfg, window = self.cfg, self._window
        line = {key: float(np.mean([m[key] for m in window])) for key in window[0]}
        # Training points (support + query) per second of update time.
        points = cfg.tasks_per_iteration * (cfg.shots + cfg.query_points)
        line["time/sps"] = points / line["time/iteration_s"]
        line.update(self.quick_eval())
        self._window = []
        self.logged = line
        self._append_metrics(line)  # no tensorboard events for sinusoid runs
        improved = line["eval/mse_after"] < self.best
        self.best = min(self.best, line["eval/mse_after"])
        self.save_checkpoint("latest.pt")
        if improved:
            self.save_checkpoint("best.pt")

    def quick_eval(self) -> dict[str, float]:
        """MSE before and after one step on the fixed evaluation tasks (K = ``shots``)."""
        mse = adaptation_mse(self.agent, self.eval_set, self.cfg.shots, [self.cfg.inner_lr])
        return {"eval/mse_before": float(mse[0].mean()), "eval/mse_after": float(mse[1].mean())}

    @staticmethod
    def progress_stats(metrics: dict[str, float]) -> str:
        """The progress bar's trailer: iterations/s, training loss, quick-evaluation MSE."""
        stats = f"{1 / max(metrics['time/iteration_s'], 1e-9):,.0f} it/s"
        stats += f"  loss {metrics['train/loss']:.3f}"
        if "eval/mse_after" in metrics:
            stats += f"  eval MSE after 1 step {metrics['eval/mse_after']:.3f}"
        return stats


# ----------------------------------------------------------------------------- evaluation
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
        agent: a regression agent.
        data: a :class:`omnirl.envs.sinusoid.SinusoidData` whose last ``queries`` points per
            task are the query points and whose first ``shots`` are the support points.
        shots: support points K.
        lrs: one learning rate per step.
        flow: the flow to adapt (default: the agent's ``eval_flow``).
        queries: query points per task.

    Returns:
        ``(len(lrs) + 1, B)`` mean squared errors on the query points.
    """
    if shots + queries > data.num_points:
        raise ValueError(f"{shots} shots + {queries} queries exceed {data.num_points} points")
    x_s, y_s, x_q, y_q = _tensors(
        data.x_BN[:, :shots], data.y_BN[:, :shots], data.x_BN[:, -queries:], data.y_BN[:, -queries:]
    )
    pred_SBQ1 = agent.adapted_predictions(x_s, y_s, x_q, lrs, flow)
    return (pred_SBQ1 - y_q).square().mean(dim=(2, 3)).numpy()


def make_test_set(num_tasks: int, max_shots: int, seed: int) -> Any:
    """The test tasks of ``seed``: ``max_shots`` support then :data:`QUERY_POINTS` query points.

    The same for every run evaluated with ``seed``, and apart from the training tasks (its own
    stream, :data:`omnirl.evaluation.TEST_STREAM`).
    """
    rng = np.random.default_rng([seed, TEST_STREAM])
    return _sinusoid().make_dataset(num_tasks, max_shots + QUERY_POINTS, rng)


def load_run(run_dir: str | Path, which: str = "best") -> tuple[Config, Any, int]:
    """The config, the agent restored from ``checkpoints/<which>.pt``, and its iteration.

    Raises:
        FileNotFoundError: no run folder, or no such checkpoint (one line).
        ConfigError: the folder is not a sinusoid run.
    """
    path = checkpoint.run_checkpoint(run_dir, which)
    run_dir = Path(run_dir)
    cfg = load_config(str(run_dir / "config.yaml"), schema=Config)
    agent = make_agent(cfg)
    state = checkpoint.load(path)
    agent.load_state_dict(state["agent"])
    return cfg, agent, state["iteration"]


def _check_flow(run: Path, agent: Any, flow: str | None) -> None:
    flows = agent.model.flows
    if flow is not None and flow not in flows:
        names = ", ".join(str(f) for f in flows if f is not None) or "none"
        raise ConfigError(f"--flow {flow!r} does not exist in {run} (its flows: {names})")


def evaluate_runs(
    runs: Sequence[Path],
    tasks: int = 100,
    shots: Sequence[int] = (5, 10, 20),
    steps: int = 10,
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
        flow: the flow to adapt (default: each agent's ``eval_flow``).
        lrs: one learning rate per step (default: each run's ``inner_lr`` at every step).

    Returns:
        The ``eval.json`` payload: the tasks, and per run and K the mean, 95% CI and every
        task's MSE after each step.
    """
    data = make_test_set(tasks, max(shots), seed)
    results = []
    for run in runs:
        cfg, agent, iteration = load_run(run, which)
        _check_flow(run, agent, flow)
        run_lrs = list(lrs) if lrs is not None else [cfg.inner_lr] * steps
        mse = {}
        for k in shots:
            mse_SB = adaptation_mse(agent, data, k, run_lrs, flow)
            stats = [mean_ci95(row) for row in mse_SB]
            mse[str(k)] = {
                "mean": [m for m, _ in stats],
                "ci95": [c for _, c in stats],
                # 6 significant digits: the JSON stays small, the means above use full precision.
                "tasks": [[float(f"{v:.6g}") for v in row] for row in mse_SB],
            }
        flow_name = agent.eval_flow if flow is None else flow
        results.append(
            {"run": str(run), "agent": cfg.agent, "flow": flow_name, "checkpoint": which,
             "iteration": iteration, "lrs": run_lrs, "mse": mse}
        )  # fmt: skip
    return {
        "family": FAMILY,
        "tasks": data.tasks(),
        "shots": list(shots),
        "steps": steps,
        "query_points": QUERY_POINTS,
        "seed": seed,
        "runs": results,
    }


def csv_bytes(payload: dict[str, Any]) -> bytes:
    """One row per run, K and step: run, agent, shots, step, mean, ci95."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "agent", "shots", "step", "mean", "ci95"])
    for r in payload["runs"]:
        for k, stats in r["mse"].items():
            for step, (m, c) in enumerate(zip(stats["mean"], stats["ci95"], strict=True)):
                writer.writerow([r["run"], r["agent"], k, step, f"{m:.6g}", f"{c:.6g}"])
    return buffer.getvalue().encode()


def _label(result: dict[str, Any]) -> str:
    return f"{result['agent']} ({Path(result['run']).name})"


def _figure_bytes(fig: Any, suffix: str = ".png") -> bytes:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix.lstrip("."))
    plt.close(fig)
    return buffer.getvalue()


def plot_bytes(payload: dict[str, Any]) -> bytes:
    """PNG like the paper's Figure 5: MSE (log scale) vs SGD steps, one panel per K."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shots = payload["shots"]
    fig, axes = plt.subplots(1, len(shots), figsize=(4.2 * len(shots), 3.6), dpi=120, squeeze=False)
    for ax, k in zip(axes[0], shots, strict=True):
        for r in payload["runs"]:
            stats = r["mse"][str(k)]
            steps = range(len(stats["mean"]))
            ax.errorbar(
                steps, stats["mean"], yerr=stats["ci95"], marker="o", ms=3, capsize=2,
                label=_label(r),
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
    return _figure_bytes(fig)


def write_report(folder: Path, payload: dict[str, Any]) -> list[Path]:
    """Write ``eval.json``, ``eval.csv`` and ``eval.png`` into ``folder`` atomically."""
    files = {
        "eval.json": json.dumps(payload, indent=1).encode(),
        "eval.csv": csv_bytes(payload),
        "eval.png": plot_bytes(payload),
    }
    for name, data in files.items():
        write_atomic(folder / name, data)
    return [folder / name for name in files]


# ------------------------------------------------------------------------------ rendering
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
    sinusoid = _sinusoid()
    # Its own stream: the default task came from [seed, TEST_STREAM] (make_test_set).
    rng = np.random.default_rng([seed, TEST_STREAM, 1])
    points = sinusoid.points_for([task], max(shots), rng)
    grid = np.linspace(sinusoid.X_LOW, sinusoid.X_HIGH, RENDER_GRID, dtype=np.float32)
    truth = sinusoid.sine(points.amplitude_B, points.phase_B, grid[None]).astype(np.float32)[0]
    panels = []
    for k in shots:
        x_s, y_s, x_g = _tensors(points.x_BN[:, :k], points.y_BN[:, :k], grid[None])
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
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels), 3.4), dpi=120, squeeze=False
    )
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.plot(grid, truth, color="black", linewidth=2, label="ground truth")
        for step, prediction in panel.predictions.items():
            style = ":" if step == 0 else "-"
            label = f"{step} step{'s' if step != 1 else ''} (MSE {panel.mse[step]:.3f})"
            ax.plot(grid, prediction, style, linewidth=1.5, label=label)
        ax.plot(panel.x_support, panel.y_support, "k^", markersize=7, label=f"{panel.shots} points")
        ax.set_title(f"K = {panel.shots}")
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    return _figure_bytes(fig, suffix)


# ---------------------------------------------------------------------- command line glue
def parse_counts(text: str, option: str, low: int, high: int) -> list[int]:
    """``"5,10,20"`` -> ``[5, 10, 20]`` (sorted, unique, each in ``low..high``).

    Raises:
        ConfigError: not comma-separated integers in range (one line naming ``option``).
    """
    try:
        counts = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from None
    if counts[0] < low or counts[-1] > high:
        raise ConfigError(f"{option} values must lie in {low}..{high}, got {text!r}")
    return counts


def _parse_lrs(text: str | None, steps: int) -> list[float] | None:
    if text is None:
        return None
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--lr-schedule takes comma-separated numbers, got {text!r}") from None
    if len(rates) != steps or not all(math.isfinite(r) and r > 0 for r in rates):
        raise ConfigError(
            f"--lr-schedule needs {steps} positive rates (one per step), got {text!r}"
        )
    return rates


def _reject(options: dict[str, Any], names: Sequence[str]) -> None:
    """RL-only options given for a sinusoid run: one clear line instead of silently ignoring."""
    for name in names:
        if options.get(name) not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} applies to RL runs only, not to sinusoid runs")


def _mse_table(payload: dict[str, Any]) -> Any:
    from rich.table import Table

    steps = payload["steps"]
    shown = sorted({s for s in (0, 1, 2, 5, steps) if s <= steps})
    table = Table(title=f"sinusoid: MSE ± 95% CI on {len(payload['tasks'])} new tasks")
    for column in ("run", "K"):
        table.add_column(column)
    for s in shown:
        table.add_column(f"{s} step{'s' if s != 1 else ''}", justify="right")
    for r in payload["runs"]:
        for k, stats in r["mse"].items():
            cells = (f"{stats['mean'][s]:.3f} ± {stats['ci95'][s]:.3f}" for s in shown)
            table.add_row(_label(r), k, *cells)
    return table


def evaluate_command(console: Any, runs: Sequence[Path], **options: Any) -> None:
    """``omnirl evaluate`` on sinusoid runs: table, ``eval.json``, ``eval.csv``, ``eval.png``.

    Options as named by the command line: ``tasks``, ``steps`` (default 10), ``shots``
    (default ``5,10,20``), ``seed``, ``checkpoint``, ``flow``, ``lr_schedule``, ``out``.

    Raises:
        ConfigError, OSError: bad input, a missing run or an unwritable folder (one line).
    """
    _reject(options, ("episodes",))
    steps = 10 if options.get("steps") is None else options["steps"]
    shots = parse_counts(options.get("shots") or "5,10,20", "--shots", 1, 1000)
    lrs = _parse_lrs(options.get("lr_schedule"), steps)
    folder = options.get("out") or (runs[0] if len(runs) == 1 else Path("eval"))
    for run in runs:  # every run loads before any work: a bad one fails at once
        load_run(run, options["checkpoint"])
    check_writable(folder)
    with console.status(f"adapting {len(runs)} run(s) on {options['tasks']} tasks"):
        payload = evaluate_runs(
            runs,
            options["tasks"],
            shots,
            steps,
            options["seed"],
            options["checkpoint"],
            options.get("flow"),
            lrs,
        )
    console.print(_mse_table(payload))
    for path in write_report(folder, payload):
        console.print(f"wrote {path}", highlight=False)


def _render_task(text: str | None, seed: int) -> dict[str, float]:
    sinusoid = _sinusoid()
    if text is None:
        return make_test_set(1, 1, seed).tasks()[0]
    example = json.dumps(sinusoid.SINUSOID_TASKS.example())
    try:
        return sinusoid.SINUSOID_TASKS.validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--task must be JSON like {example}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--task does not fit sinusoid: {exc}") from None


def render_command(console: Any, run: Path, **options: Any) -> None:
    """``omnirl render`` on a sinusoid run: the recovered waves of one task, as an image.

    Options as named by the command line: ``task`` (JSON, default a test task of ``seed``),
    ``steps`` (default ``0,1,10``), ``shots`` (default ``5,10``), ``out`` (default
    ``render.png``; .png, .svg or .pdf), ``seed``, ``checkpoint``, ``flow``.

    Raises:
        ConfigError, OSError: bad input, a missing run or an unwritable folder (one line).
    """
    _reject(options, ("episodes", "sample", "horizon"))
    steps = parse_counts(options.get("steps") or "0,1,10", "--steps", 0, 100)
    shots = parse_counts(options.get("shots") or "5,10", "--shots", 1, 1000)
    out = Path(options.get("out") or "render.png")
    if out.suffix.lower() not in FIGURE_SUFFIXES or out.is_dir():
        raise ConfigError(f"--out must be a file ending in .png, .svg or .pdf, got {str(out)!r}")
    cfg, agent, iteration = load_run(run, options["checkpoint"])
    _check_flow(run, agent, options.get("flow"))
    task = _render_task(options.get("task"), options["seed"])
    check_writable(out.parent)
    grid, truth, panels = render_panels(
        agent, task, shots, steps, cfg.inner_lr, options["seed"], options.get("flow")
    )
    wave = f"{task['amplitude']:.2f} sin(x - {task['phase']:.2f})"
    title = f"{cfg.agent} ({run.name}, iteration {iteration}): y = {wave}, lr {cfg.inner_lr:g}"
    write_atomic(out, render_figure(grid, truth, panels, title, out.suffix.lower()))
    from rich.table import Table

    table = Table(title=f"{cfg.agent} on y = {wave}: MSE on {RENDER_GRID} points of [-5, 5]")
    table.add_column("K")
    for s in steps:
        table.add_column(f"{s} step{'s' if s != 1 else ''}", justify="right")
    for panel in panels:
        table.add_row(str(panel.shots), *(f"{panel.mse[s]:.4f}" for s in steps))
    console.print(table)
    console.print(f"wrote {out}", highlight=False)
