"""``omnirl sweep``: every run of a grid as a Ray task, idempotent, ending in the aggregates.

The grid and its run folders are :mod:`omnirl.sweep_spec`'s. Each run that still needs work is
one Ray task given ``num_cpus`` CPUs, with torch, BLAS and physics threads to match
(:func:`omnirl.cluster.task_options`). A task trains its run (a new one, or resumed from
``latest.pt`` bit for bit), then evaluates it into its own folder (``eval.json``, as ``omnirl
evaluate RUN`` does; ``eval-<split>.json`` for each other split the spec names). Re-running a
sweep skips what is done: finished runs are not touched and an evaluation of the current
checkpoint is not redone. A failing run is reported and the others go on. A killed sweep (even
SIGKILL) loses at most the iteration each run was in. At the end the sweep folder gets the
aggregates over seeds (:mod:`omnirl.aggregate`).

The driver needs the run folders on a file system the workers write to (one machine, or a
cluster's shared file system), as Ray Tune's ``storage_path`` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnirl import cluster
from omnirl.files import write_atomic
from omnirl.report import Report
from omnirl.sweep_spec import (
    Cell,
    EvalSpec,
    SweepSpec,
    cell_state,
    evaluated,
    expand,
    pending_splits,
)

# (run name, iteration, iterations, what it is doing), for every run of the sweep.
Progress = dict[str, tuple[int, int, str]]


class ProgressBoard:
    """A Ray actor that every run's task tells its iteration; the driver reads it."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, str]] = {}

    def update(self, name: str, iteration: int, doing: str) -> None:
        """Record that run ``name`` is at ``iteration``, ``doing`` something."""
        self.rows[name] = (iteration, doing)

    def snapshot(self) -> dict[str, tuple[int, str]]:
        """Every run's latest report."""
        return dict(self.rows)


def run_cell(cell: Cell, evaluate: EvalSpec | None, board: Any = None) -> dict[str, Any]:
    """Train one cell's run to its iterations (start or resume), then evaluate it; a Ray task.

    Returns:
        ``iteration`` trained to, ``return`` (mean return after the last adaptation step, or
        ``None`` without evaluation) and ``seconds``.
    """
    start = time.perf_counter()
    wait_until_free(cell.run_dir)
    state, iteration = cell_state(cell)  # again: the driver's view may be stale
    if state.startswith("conflict"):
        raise FileExistsError(state.removeprefix("conflict: "))
    if state != "finished":
        iteration = _train(cell, state, board)
    result = None
    if evaluate is not None:
        if board is not None:
            board.update.remote(cell.name, iteration, "evaluating")
        result = _evaluate(cell, evaluate)
    if board is not None:
        board.update.remote(cell.name, iteration, "done")
    return {"iteration": iteration, "return": result, "seconds": time.perf_counter() - start}


def _train(cell: Cell, state: str, board: Any) -> int:
    from omnirl import registry

    trainer_class = registry.kind_of(cell.cfg.family).load("trainer")
    if state == "unfinished":
        trainer = trainer_class.resume(cell.run_dir, cell.cfg.iterations)
    else:
        trainer = trainer_class(cell.cfg, run_dir=cell.run_dir)

    last_sent = -float("inf")

    def on_iteration(iteration: int, metrics: dict[str, float]) -> None:
        # At most one message per PROGRESS_EVERY_S: a sinusoid step takes milliseconds, and a
        # message per step kept the board actor at a fifth of a core. The last iteration need
        # not be sent: run_cell reports it with "evaluating" or "done" as soon as this returns.
        nonlocal last_sent
        now = time.monotonic()
        if board is not None and now - last_sent >= PROGRESS_EVERY_S:
            board.update.remote(cell.name, iteration, "training")
            last_sent = now

    try:
        trainer.train(on_iteration=on_iteration)
    finally:
        trainer.close()
    return trainer.iteration


# How often a run tells the board its iteration (the driver polls every 0.5 s).
PROGRESS_EVERY_S = 0.5

# A killed sweep's tasks die a few seconds after their driver, and hold their runs' locks
# until then: a sweep started again at once waits this long for them.
LOCK_WAIT_S = 30.0


def wait_until_free(run_dir: Path) -> None:
    """Wait while another process holds the run's lock (up to :data:`LOCK_WAIT_S`).

    Raises:
        RunInUseError: it still holds it then.
    """
    from omnirl.files import RunInUseError, RunLock

    if not run_dir.is_dir():
        return
    lock, deadline = RunLock(run_dir), time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            lock.acquire()
        except RunInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        else:
            lock.release()
            return


def _evaluate(cell: Cell, spec: EvalSpec) -> float | None:
    """Evaluate the run on each split into its own folder (unless done); the first split's mean."""
    import json

    from omnirl.options import EvaluateOptions
    from omnirl.report import write_report

    if cell.kind != "rl":
        return None  # the supervised kinds' evaluations have their own forms
    from omnirl.evaluation import eval_stem, evaluate_report

    for split in pending_splits(cell, spec):  # a split already evaluated is not redone
        options = EvaluateOptions(
            tasks=spec.tasks,
            steps=spec.steps,
            episodes=spec.episodes,
            seed=spec.seed,
            checkpoint=spec.checkpoint,
            split=split,
        )
        write_report(evaluate_report([cell.run_dir], options))
    path = cell.run_dir / f"{eval_stem(spec.splits[0])}.json"
    return float(json.loads(path.read_text())["runs"][0]["mean"][-1])


@dataclass
class Outcome:
    """What became of one cell: its state before, after, and what it reports."""

    cell: Cell
    before: str
    iteration: int = 0
    after: str = "skipped"
    detail: str = ""


def _one_line(exc: BaseException) -> str:
    """A failed task's error as one line: the original exception's type and first line."""
    cause = getattr(exc, "cause", None) or exc
    text = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {text}"[:300]


def run_sweep(
    spec: SweepSpec,
    address: str | None = None,
    dry_run: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[Report]:
    """Run the sweep: what each run still needs, as Ray tasks; the grid and the aggregates.

    Args:
        spec: the resolved spec (:func:`omnirl.sweep_spec.load_spec`).
        address: the Ray cluster (:func:`omnirl.cluster.connect`; ``None``: a local instance).
        dry_run: only list the runs and what each needs; nothing is started or written.
        on_progress: called about twice a second with every run's iteration.

    Returns:
        The grid (state before and after, iteration, return, time or error per run) and, once
        every run is evaluated, the aggregates (:func:`omnirl.aggregate.aggregate_report`).

    Raises:
        ConfigError: a bad spec or cell config. RayMissingError, OptionError: no Ray, or an
        unreachable cluster.
    """
    cells = expand(spec)
    outcomes = [Outcome(cell, *cell_state(cell)) for cell in cells]
    for outcome in outcomes:
        if outcome.before.startswith("conflict"):
            outcome.after, outcome.detail = "failed", outcome.before.removeprefix("conflict: ")
    if dry_run:
        return [_grid(spec, outcomes, dry_run=True)]
    todo = [o for o in outcomes if o.after != "failed" and _needs_work(o, spec.evaluate)]
    ray = cluster.connect(address) if todo else None  # no Ray: nothing is written
    write_atomic(spec.folder / "sweep.yaml", spec.to_yaml().encode())
    if todo:
        _execute(ray, spec, todo, on_progress)
    reports = [_grid(spec, outcomes)]
    if spec.evaluate is None or not any(o.cell.kind == "rl" for o in outcomes):
        return reports
    if any(o.after == "failed" for o in outcomes):
        reports[0].notes.append(f"no aggregates while runs fail (omnirl report {spec.folder})")
        return reports
    from omnirl.aggregate import aggregate_report

    return [*reports, aggregate_report([spec.folder], reference=spec.reference)]


def _needs_work(outcome: Outcome, evaluate: EvalSpec | None) -> bool:
    if outcome.before != "finished":
        return True
    rl = outcome.cell.kind == "rl"
    return evaluate is not None and rl and not evaluated(outcome.cell, evaluate)


def _execute(
    ray: Any, spec: SweepSpec, todo: list[Outcome], on_progress: Callable[[Progress], None] | None
) -> None:
    """Submit every outcome's cell as a Ray task; wait, showing progress; record results."""
    board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
    task, pending, groups = ray.remote(run_cell), {}, {}
    for outcome in todo:
        options, group = _resources(ray, outcome.cell, spec.num_cpus)
        ref = task.options(**options).remote(outcome.cell, spec.evaluate, board)
        pending[ref], groups[ref] = outcome, group
    totals = {o.cell.name: (o.iteration, o.cell.cfg.iterations) for o in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        if on_progress is not None:
            on_progress(_progress(ray.get(board.snapshot.remote()), totals))
        for ref in ready:
            if groups[ref] is not None:  # the run's actors are gone: free their CPUs
                ray.util.remove_placement_group(groups[ref])
            _record(ray, ref, pending.pop(ref))


def _progress(rows: dict[str, tuple[int, str]], totals: dict[str, tuple[int, int]]) -> Progress:
    progress = {}
    for name, (start, total) in totals.items():
        iteration, doing = rows.get(name, (start, "waiting"))
        progress[name] = (iteration, total, doing)
    return progress


def _record(ray: Any, ref: Any, outcome: Outcome) -> None:
    """The finished task's result (or its error, in one line) into ``outcome``."""
    try:
        result = ray.get(ref)
    except Exception as exc:  # noqa: BLE001  (a failed run is reported, the rest go on)
        outcome.after, outcome.detail = "failed", _one_line(exc)
        return
    outcome.after, outcome.iteration = "done", result["iteration"]
    ret = "" if result["return"] is None else f"return {result['return']:.2f}, "
    outcome.detail = f"{ret}{result['seconds']:.0f} s"


def _resources(ray: Any, cell: Cell, num_cpus: int) -> tuple[dict[str, Any], Any]:
    """A run's task options (``num_cpus``, and a CPU per actor of a Ray collector), its group.

    A run that collects on Ray actors (``collector_backend: ray``) reserves their CPUs with its
    own in a placement group that its actors join (removed when the run ends): runs waiting
    for actors that other runs' CPUs keep from starting would otherwise wait for each other
    forever.
    """
    options = cluster.task_options(num_cpus)
    if cell.kind != "rl" or cell.cfg.collector_backend != "ray":
        return options, None
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundles = [{"CPU": num_cpus}] + [{"CPU": 1}] * cell.cfg.collector_workers
    group = ray.util.placement_group(bundles, strategy="PACK")
    options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
    )
    return options, group


def _grid(spec: SweepSpec, outcomes: list[Outcome], dry_run: bool = False) -> Report:
    """The table of runs: state before, after, iteration and what they reported."""
    title = f"sweep {spec.name}: {len(outcomes)} runs in {spec.folder}"
    columns = ["run", "found", "iterations"] + ([] if dry_run else ["now", "detail"])
    rows = []
    for o in outcomes:
        found = "conflict" if o.before.startswith("conflict") else o.before
        row = [o.cell.name, found, f"{o.iteration}/{o.cell.cfg.iterations}"]
        rows.append(row if dry_run else [*row, o.after, o.detail])
    failed = [o for o in outcomes if o.after == "failed"]
    notes = [f"{o.cell.name}: {o.detail}" for o in failed]
    if dry_run:
        notes.append("dry run: nothing was started or written")
    payload = {"runs": {o.cell.name: {"found": o.before, "now": o.after} for o in outcomes}}
    return Report(title, columns, rows, notes=notes, payload=payload)


def failed(reports: list[Report]) -> int:
    """How many runs of a sweep's grid report failed."""
    return sum(1 for run in reports[0].payload["runs"].values() if run["now"] == "failed")
