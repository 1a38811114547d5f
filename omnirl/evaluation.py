"""Return after 0, 1, ..., S adaptation steps on fresh tasks (the MAML paper's test protocol).

For every task: collect K episodes with the current parameters, take one policy-gradient step
on them, re-collect, and so on. All tasks of a step run in one batched collector pass, each
with its own adapted parameters.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnirl import registry
from omnirl.checkpoint import load_runs
from omnirl.collector import Collector, RolloutGroup
from omnirl.functional import flow_params, task_params, unstack
from omnirl.maml import inner_step_tasks
from omnirl.options import (
    EvaluateOptions,
    OptionError,
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
from omnirl.seeding import TEST_STREAM, VAL_STREAM, chunk_seed, stream
from omnirl.stats import mean_ci95_rows


def default_lrs(inner_lr: float, steps: int) -> list[float]:
    """The MAML paper's test schedule: ``alpha`` for the first step, ``alpha / 2`` after."""
    return [inner_lr] + [inner_lr / 2] * max(steps - 1, 0)


def adaptation_stages(
    agent: Any,
    collector: Collector,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes_per_task: int,
    flow: str | None = None,
    horizon: int | None = None,
    seed: int | None = None,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Per-task parameters and their episodes after 0, 1, ..., ``len(lrs)`` adaptation steps.

    Yields ``len(lrs) + 1`` pairs ``(params_B, episodes)``: the parameters of every task (leading
    dimension B) and the K episodes per task collected with them. Step ``s + 1`` adapts with
    ``lrs[s]`` on the episodes of step ``s`` (one step per collection, first order at test time).
    Arguments are those of :func:`adaptation_returns`.
    """
    policy = agent.policy
    flow = agent.eval_flow if flow is None else flow
    params_B = task_params(
        {k: v.detach() for k, v in flow_params(policy, flow).items()}, len(tasks)
    )
    for step in range(len(lrs) + 1):
        group = RolloutGroup(flow, unstack(params_B))
        [episodes] = collector.collect(
            policy, tasks, episodes_per_task, [group], horizon, seed if step == 0 else None
        )
        yield params_B, episodes
        if step < len(lrs):
            support = agent.batch(episodes).by_task()
            start = {k: v.detach().requires_grad_() for k, v in params_B.items()}
            adapted = inner_step_tasks(policy, start, support, flow, lrs[step], first_order=True)
            params_B = {k: v.detach() for k, v in adapted.items()}


def adaptation_returns(
    agent: Any,
    collector: Collector,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes_per_task: int,
    flow: str | None = None,
    horizon: int | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Mean episode return of every task after 0..len(lrs) adaptation steps.

    Args:
        agent: an agent (its ``policy`` and ``batch`` are used).
        collector: the collector of the agent's family.
        tasks: the test tasks.
        lrs: one learning rate per adaptation step.
        episodes_per_task: K episodes per task and step.
        flow: the flow to evaluate (default: the agent's ``eval_flow``).
        horizon: episode length (default: the family's).
        seed: seeds the first collection (later ones continue the stream).

    Returns:
        ``(len(lrs) + 1, len(tasks))`` array of mean undiscounted returns.
    """
    if not agent.adapts:
        # An agent that does not adapt (the oracle, told the task) is evaluated by itself, and
        # its returns are the same after any number of steps: one row, repeated.
        row_B = agent.task_returns(tasks, episodes_per_task, horizon, seed)
        return np.tile(row_B, (len(lrs) + 1, 1))
    stages = adaptation_stages(agent, collector, tasks, lrs, episodes_per_task, flow, horizon, seed)
    return np.stack([episodes.task_returns_B().numpy() for _, episodes in stages])


def sample_test_tasks(
    family: Any, num_tasks: int, seed: int, split: str = "test"
) -> list[dict[str, Any]]:
    """``num_tasks`` tasks of ``family``'s ``split``, the same for every run given ``seed``.

    Every split has its own stream, never the training one: ``test`` the test stream
    (:data:`omnirl.seeding.TEST_STREAM`: the tasks of every evaluation made before splits
    existed), ``val`` :data:`omnirl.seeding.VAL_STREAM`, an out-of-distribution split the test
    stream keyed by its name.
    """
    if split == "test":
        return family.tasks.sample(num_tasks, stream(seed, TEST_STREAM))
    keys = (VAL_STREAM,) if split == "val" else (TEST_STREAM, zlib.crc32(split.encode()))
    return family.tasks.sample(num_tasks, stream(seed, *keys), split)


def eval_stem(split: str) -> str:
    """Evaluation files' name: ``eval`` (test), ``eval-<split>`` (never overwriting test's)."""
    return "eval" if split == "test" else f"eval-{split}"


def check_split(family: Any, split: str) -> None:
    """Refuse a ``--split`` that ``family`` does not declare, or ``train``.

    Raises:
        OptionError: one line listing the family's splits.
    """
    if split == "test":
        return
    names = family.tasks.split_names
    if split == "train":
        raise OptionError(
            "--split train is what runs train on; fresh tasks of that distribution are "
            f"--split test or val (the splits of {family.name}: {', '.join(names)})"
        )
    if split not in names:
        raise OptionError(
            f"unknown split {split!r} of {family.name}; its splits: {', '.join(names)}"
        )


# Sub-envs per collector pass when evaluating many tasks: large enough to keep the batched
# physics busy, small enough that the adaptation graph of a chunk fits in memory (2,000 tasks
# x 20 episodes x 200 steps at once would need tens of GB).
CHUNK_ENVS = 4000


def task_chunks(tasks: Sequence[Any], episodes_per_task: int) -> list[Sequence[Any]]:
    """``tasks`` in chunks of about :data:`CHUNK_ENVS` sub-envs (seeded by :func:`chunk_seed`)."""
    size = max(1, CHUNK_ENVS // episodes_per_task)
    return [tasks[start : start + size] for start in range(0, len(tasks), size)]


def chunked_adaptation_returns(
    agent: Any,
    collector: Collector,
    tasks: Sequence[dict[str, Any]],
    lrs: Sequence[float],
    episodes_per_task: int,
    flow: str | None = None,
    seed: int = 0,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """:func:`adaptation_returns` over ``tasks`` in chunks of about :data:`CHUNK_ENVS` sub-envs.

    Chunk ``i`` seeds its first collection from ``(seed, i)`` (chunk 0 with ``seed`` itself),
    so a result depends only on the tasks, the seed and the chunk size. ``on_chunk`` is called
    with the number of tasks finished after each chunk (a progress bar).
    """
    parts = []
    for index, chunk in enumerate(task_chunks(tasks, episodes_per_task)):
        seed_i, k = chunk_seed(seed, index), episodes_per_task
        parts.append(adaptation_returns(agent, collector, chunk, lrs, k, flow, seed=seed_i))
        if on_chunk is not None:
            on_chunk(len(chunk))
    return np.concatenate(parts, axis=1)


# ------------------------------------------------------------------ omnirl evaluate (RL)
# The MAML paper's results (Finn et al. 2017, its released result files; DESIGN.md section 7):
# mean return after 0, 1, 2, 3 steps with 40 test tasks, and the oracle policy.
PUBLISHED_MAML = {
    "navigation-2d": ([-40.4, -11.7, -3.3, -3.2], -2.3),
    "halfcheetah-vel": ([-129.5, -78.6, -66.6, -60.8], -54.5),
    "halfcheetah-dir": ([-50.7, 293.2, 313.5, 315.7], 442.7),
}


def evaluate_runs(
    runs: Sequence[Any],
    tasks: int = 100,
    steps: int = 4,
    episodes: int = 20,
    seed: int = 1000,
    flow: str | None = None,
    lr_schedule: Sequence[float] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    split: str = "test",
    ray: str | None = None,
) -> dict[str, Any]:
    """Return of every run after 0..``steps`` adaptation steps on the same fresh tasks.

    Args:
        runs: RL runs of one family, as :func:`omnirl.checkpoint.load_run` restores them.
        tasks: number of test tasks (the paper's protocol: 2,000).
        steps: adaptation steps.
        episodes: K episodes per task and step.
        seed: seeds the test tasks and the rollouts.
        flow: the flow to adapt (default: each learner's ``eval_flow``).
        lr_schedule: one rate per step (default: each run's alpha, then alpha / 2).
        on_progress: ``(label, tasks done, tasks in all)`` after every chunk of tasks.
        split: the family's task split (``test``; ``val``; an out-of-distribution split).
        ray: spread the chunks of every run over Ray workers at this address (``local``: a
            new local instance); the numbers are the same as in process.

    Returns:
        The ``eval.json`` payload: the tasks and, per run, every task's return after each step
        with the mean and 95% CI per step.
    """
    families = {run.cfg.family for run in runs}
    if len(families) != 1:
        raise OptionError(f"runs of different families cannot share test tasks: {sorted(families)}")
    family = registry.get_family(families.pop())
    check_split(family, split)
    task_list = sample_test_tasks(family, tasks, seed, split)
    results, done = [], 0
    schedules = [list(lr_schedule or default_lrs(run.cfg.inner_lr, steps)) for run in runs]
    if ray is not None:  # every run's chunks at once, on Ray workers
        from omnirl.ray_evaluation import RemoteChunks

        remote = RemoteChunks(ray, runs, family.env_id, task_list, schedules, episodes, flow, seed)
    for index, (run, lrs) in enumerate(zip(runs, schedules, strict=True)):
        label = f"evaluate {run.cfg.agent} ({run.path.name})"

        def advance(count: int, label: str = label) -> None:
            nonlocal done
            done += count
            if on_progress is not None:
                on_progress(label, done, len(runs) * tasks)

        if ray is not None:
            returns = remote.returns(index, advance)
        else:
            with Collector(family.env_id, seed=seed) as collector:
                returns = chunked_adaptation_returns(
                    run.learner, collector, task_list, lrs, episodes, flow, seed, advance
                )
        results.append(_run_entry(run, flow, lrs, returns))
    payload = {"family": family.name, "split": split, "tasks": task_list, "steps": steps}
    payload.update(episodes=episodes, seed=seed, runs=results)
    optimum = analytic_optimum(family.name, task_list)
    return payload if optimum is None else {**payload, "optimum": optimum}


def _run_entry(run: Any, flow: str | None, lrs: list[float], returns: np.ndarray) -> dict:
    """One run's entry in eval.json: per-step mean and 95% CI, and every task's return."""
    means, cis = mean_ci95_rows(returns)
    return {
        "run": str(run.path),
        "agent": run.cfg.agent,
        "family": run.cfg.family,
        "flow": run.learner.eval_flow if flow is None else flow,
        "adapts": run.learner.adapts,
        "checkpoint": run.checkpoint.name,
        "iteration": run.iteration,
        "lrs": lrs,
        "mean": means,
        "ci95": cis,
        "returns": np.asarray(returns).tolist(),
    }


def analytic_optimum(family: str, tasks: Sequence[dict[str, Any]]) -> float | None:
    """Mean return of the optimal policy on ``tasks``, for families where it is known exactly.

    The family's ``optimum`` entry point (navigation-2d: the greedy policy, see
    ``omnirl.envs.navigation.optimal_return``) over its horizon; ``None`` for other families.
    """
    entry = registry.get_family(family).optimum
    if entry is None or not tasks:
        return None
    return float(registry.resolve(entry)(tasks, registry.get_family(family).horizon).mean())


def evaluate_report(
    runs: Sequence[Path],
    options: EvaluateOptions,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Report:
    """``omnirl evaluate`` on RL runs: the table, ``eval.json``, ``eval.csv`` and ``eval.png``.

    Everything is checked before any rollout: the options, every run and checkpoint, the flow,
    that the runs share a family, and that the output folder can be written.

    Raises:
        OptionError, ConfigError, FileNotFoundError, OSError: bad input (one line).
    """
    reject(options, ("shots", "data"), "RL")
    steps = 4 if options.steps is None else options.steps
    episodes = 20 if options.episodes is None else options.episodes
    lrs = parse_lr_schedule(options.lr_schedule, steps)
    loaded = load_runs(runs, options.checkpoint, options.flow, kind="rl")
    folder = output_folder(options.out, runs)
    tasks = 100 if options.tasks is None else options.tasks
    split, seed, flow = options.split, options.seed, options.flow
    payload = evaluate_runs(
        loaded, tasks, steps, episodes, seed, flow, lrs, on_progress, split, options.ray
    )
    rows = [
        [run_label(r), *(mean_ci_text(m, c) for m, c in zip(r["mean"], r["ci95"], strict=True))]
        for r in payload["runs"]
    ]
    csv_rows = [
        [r["run"], r["agent"], r["family"], split, step, m, c]
        for r in payload["runs"]
        for step, (m, c) in enumerate(zip(r["mean"], r["ci95"], strict=True))
    ]
    # Evaluation always uses the family's horizon; the paper also used 20 episodes per step.
    figure = return_plot(payload, published=episodes == 20 and split == "test")
    stem = eval_stem(split)
    return Report(
        f"{payload['family']}: mean return ± 95% CI on {tasks} {split} tasks",
        ["run", *(f"{s} step{'s' if s != 1 else ''}" for s in range(steps + 1))],
        rows,
        files={
            folder / f"{stem}.json": json_bytes(payload),
            folder / f"{stem}.csv": csv_bytes(
                ["run", "agent", "family", "split", "step", "mean", "ci95"], csv_rows
            ),
            folder / f"{stem}.png": figure,
        },
        notes=[run.note for run in loaded if run.note],
        payload=payload,
    )


def return_plot(payload: dict[str, Any], published: bool) -> bytes:
    """PNG of mean return ± 95% CI vs adaptation steps, one line per run (the paper's Fig. 8).

    Runs that do not adapt (the oracle) are horizontal lines: their return is the same at every
    step count. With ``published``, the MAML paper's numbers for the family are drawn as
    reference markers and its oracle as a dotted line; the analytic optimum (where known) as a
    dashed black line.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    # One colour per run, given explicitly: axhline does not advance the colour cycle, so an
    # oracle line would otherwise share its colour with the next run's curve.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    results, family = payload["runs"], payload["family"]
    for index, r in enumerate(results):
        _draw_run(ax, r, palette[index % len(palette)])
    if payload.get("optimum") is not None:
        # Under the runs (an oracle can sit right on it) and thin enough to show them.
        ax.axhline(payload["optimum"], color="black", linestyle="--", linewidth=1, zorder=1,
                   label="analytic optimum")  # fmt: skip
    if published and family in PUBLISHED_MAML:
        values, oracle = PUBLISHED_MAML[family]
        ax.plot(range(len(values)), values, "kx", markersize=8, label="MAML paper")
        ax.axhline(oracle, color="gray", linestyle=":", label="MAML paper oracle")
    ax.set_xticks(range(max(len(r["mean"]) for r in results)))
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return (95% CI)")
    split = payload.get("split", "test")  # eval.json files from before splits: the test split
    ax.set_title(f"{family}, {split} split: return after adaptation on new tasks", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_bytes(fig)


def _draw_run(ax: Any, r: dict[str, Any], color: str) -> None:
    """One run's curve, or a horizontal line and band for a run that does not adapt."""
    if r["adapts"]:
        steps = range(len(r["mean"]))
        ax.errorbar(steps, r["mean"], yerr=r["ci95"], marker="o", capsize=3, color=color,
                    label=run_label(r))  # fmt: skip
        return
    ax.axhline(r["mean"][0], linestyle="-.", linewidth=2.5, color=color, label=run_label(r))
    if math.isfinite(r["ci95"][0]):
        low, high = r["mean"][0] - r["ci95"][0], r["mean"][0] + r["ci95"][0]
        ax.axhspan(low, high, color=color, alpha=0.15, linewidth=0)
