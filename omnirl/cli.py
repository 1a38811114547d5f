"""The ``omnirl`` command line: it parses arguments and calls library functions, nothing more.

Every command works for every problem kind: the kind of a family, config or run folder names
the schema, trainer, ``evaluate`` and ``render`` to call (``omnirl.registry.ProblemKind``).
Start-up imports neither torch nor MuJoCo. Bad input is one line on stderr and exit code 2,
never a traceback. ``sweep`` and ``report`` are in :mod:`omnirl.cli_scale`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from omnirl import __version__, registry
from omnirl.terminal import console, err_console, progress_bar, say, show_report, user_errors

app = typer.Typer(
    name="omnirl",
    help="Omni-Training for data-efficient meta-reinforcement learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"omnirl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Omni-Training for data-efficient meta-reinforcement learning."""


# ---------------------------------------------------------------------------------- list
@app.command("list")
def list_families(
    family: Annotated[
        str | None, typer.Argument(help="Show one family in detail (name or Gymnasium id).")
    ] = None,
    samples: Annotated[
        int, typer.Option(min=0, max=100, help="Tasks to sample in the detail view.")
    ] = 3,
    seed: Annotated[int, typer.Option(help="Seed for the sampled tasks.")] = 0,
) -> None:
    """List the task families, problem kinds, learners and configs."""
    if family is not None:
        _show_family(family, samples, seed)
        return
    from omnirl.config import packaged_configs

    table = Table(title="omnirl task families", caption="omnirl list FAMILY shows one in detail")
    for column in ("family", "Gymnasium id", "tasks", "horizon"):
        table.add_column(column, no_wrap=True)
    for fam in registry.families().values():
        table.add_row(fam.name, fam.env_id, fam.tasks.describe(), str(fam.horizon))
    console.print(table)
    for kind in registry.kinds().values():
        learners = ", ".join(registry.learner_names(kind.name))
        say(f"{kind.name + ':':10s}{kind.summary}; learners: {learners}")
    say(f"configs:  {', '.join(packaged_configs())}")


def _show_family(name: str, samples: int, seed: int) -> None:
    import numpy as np

    with user_errors():
        fam = registry.get_family(name)
    console.print(f"[bold]{escape(fam.name)}[/]  ({escape(fam.env_id)})")
    console.print(f"  {fam.tasks.summary}")
    console.print(f"  tasks:   {fam.tasks.describe()}")
    console.print(f"  horizon: {fam.horizon}")
    say("\n".join(f"  split    {s}: {d} ({n})" for s, d, n in fam.tasks.describe_splits()))
    for task in fam.tasks.sample(samples, np.random.default_rng(seed)):
        # Rounded, so that examples with physics arrays stay readable (and still paste as tasks).
        rounded = json.loads(json.dumps(task), parse_float=lambda x: round(float(x), 3))
        say(f"  e.g.     {json.dumps(rounded)}")


# --------------------------------------------------------------------------------- train
@app.command()
def train(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A family (navigation-2d, halfcheetah-vel, ...), config name or YAML path."
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="The learner: omni, maml, pretrain, ... (omnirl list).")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Meta-iterations to train.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the whole run.")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set key=value (repeatable)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this folder from its latest checkpoint."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar.")] = True,
    data: Annotated[
        str | None,
        typer.Option(help="fewshot: a folder root/<class>/*.png|jpg, or glyphs or shapes."),
    ] = None,
) -> None:
    """Train a learner on a task family or supervised problem (Omni-Training, MAML, ...)."""
    from omnirl.config import ConfigError, kind_of, load_config

    with user_errors(), _disk_errors():
        kind = kind_of(resume if resume is not None else source)
        trainer_class = kind.load("trainer")
        if resume is not None:
            if source is not None or agent or seed is not None or overrides or data:
                raise ConfigError(
                    "--resume continues a run as configured; only --iterations may change"
                )
            trainer = trainer_class.resume(resume, iterations)
        else:
            if source is None:
                raise ConfigError(
                    "train needs a family or config (see: omnirl list), or --resume RUN"
                )
            schema = kind.load("config")
            sets = _train_overrides(schema, overrides, agent, iterations, seed, data)
            trainer = trainer_class(load_config(source, sets, schema=schema))
    _run_training(trainer, progress)


def _train_overrides(
    schema: type, overrides: list[str] | None, agent: Any, iterations: Any, seed: Any, data: Any
) -> list[str]:
    """``--set`` items for the flags given on the command line (they win over the file)."""
    from omnirl.config import ConfigError

    sets = list(overrides or [])
    sets += [f"agent={agent}"] if agent is not None else []
    sets += [f"iterations={iterations}"] if iterations is not None else []
    sets += [f"seed={seed}"] if seed is not None else []
    if data is not None:  # as a JSON string: YAML would read 123 or a: b otherwise
        if "data" not in getattr(schema, "__dataclass_fields__", {}):
            raise ConfigError("--data applies to few-shot runs (omnirl train fewshot)")
        sets.append(f"data={json.dumps(data)}")
    return sets


@contextmanager
def _disk_errors() -> Iterator[None]:
    """An OS error writing the run (a full disk, a read-only folder): one line, exit code 1.

    A missing run folder or checkpoint, and a run another process holds, stay bad input
    (exit code 2, from :func:`user_errors` around this).
    """
    from omnirl.files import RunInUseError

    try:
        yield
    except (FileNotFoundError, RunInUseError, FileExistsError):
        raise
    except OSError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None


def _interrupt(signum: int, frame: Any) -> None:
    """Signal handler: raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C does."""
    raise KeyboardInterrupt


def _interrupted(trainer: Any) -> str:
    """What to tell a user who stopped a run: the resume command, or that nothing was saved.

    A run interrupted before its first checkpoint leaves no folder that looks resumable.
    """
    if (trainer.checkpoint_dir / "latest.pt").exists():
        return (
            f"interrupted; continue with: omnirl train --resume {shlex.quote(str(trainer.run_dir))}"
        )
    if trainer.created_run_dir:
        shutil.rmtree(trainer.run_dir, ignore_errors=True)
    return "interrupted before the first checkpoint; nothing to resume"


def _run_training(trainer: Any, progress: bool) -> None:
    from omnirl.trainer import TrainingError

    cfg = trainer.cfg
    console.print(
        f"[bold]{escape(cfg.agent)}[/] on [bold]{escape(cfg.family)}[/], seed {cfg.seed}: "
        f"run folder {escape(str(trainer.run_dir))}",
        highlight=False,
        soft_wrap=True,
    )
    bar = progress_bar("iterations", "{task.fields[stats]}") if progress else None
    on_iteration = None
    if bar is not None:
        task = bar.add_task("train", total=cfg.iterations, completed=trainer.iteration, stats="")

        def on_iteration(iteration: int, metrics: dict[str, float]) -> None:
            bar.update(task, completed=iteration, stats=trainer.progress_stats(metrics))

    # SIGTERM (kill, a scheduler's time limit) stops the run like Ctrl-C: `latest.pt` holds the
    # last finished iteration, and the user is told how to continue. Background jobs of a
    # non-interactive shell ignore SIGINT, so SIGTERM is their way to stop a run.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with user_errors(), _disk_errors(), bar if bar is not None else nullcontext():
            trainer.train(on_iteration=on_iteration)
    except TrainingError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        err_console.print(_interrupted(trainer), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        trainer.close()
    say(f"done: {trainer.iteration} iterations in {trainer.run_dir}")


# ------------------------------------------------------------------------------ evaluate
def _kind_of_runs(runs: list[Path]) -> registry.ProblemKind:
    """The one problem kind of ``runs`` (a missing folder is named as such)."""
    from omnirl.config import kind_of

    for run in runs:
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(f"{run} is not a run folder (no config.yaml)")
    kinds = sorted({kind_of(run).name for run in runs})
    if len(kinds) != 1:
        raise FileNotFoundError(f"runs of different kinds cannot be evaluated together: {kinds}")
    return registry.kinds()[kinds[0]]


@app.command()
def evaluate(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to evaluate (same family).")],
    tasks: Annotated[
        int | None, typer.Option(min=1, help="Fresh test tasks (default 100; paper: 2000).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=0, max=10, help="Adaptation steps (default 4; sinusoid: 10).")
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(min=1, help="Episodes per task and step (default 20; fewshot: 600 tests)."),
    ] = None,
    shots: Annotated[
        str | None,
        typer.Option(help="Support points K, supervised runs (sinusoid: 5,10,20; fewshot: 1,5)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the test tasks and rollouts.")] = 1000,
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    flow: Annotated[
        str | None, typer.Option(help="Omni-Net flow to adapt: meta (default), pre or joint.")
    ] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(
            help="Learning rate of each step, e.g. 0.1,0.05 (default: alpha, alpha/2...)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for eval.json/.csv/.png (default: the run, or ./eval)."),
    ] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(help="fewshot: test classes of this folder or glyphs/shapes (repeatable)."),
    ] = None,
    split: Annotated[str, typer.Option(help="RL: test, val or an OOD split (see list).")] = "test",
    ray: Annotated[bool, typer.Option(help="RL: the task chunks on Ray workers.")] = False,
    address: Annotated[str | None, typer.Option(help="--ray on a cluster: auto, ray://...")] = None,
) -> None:
    """Score on fresh tasks after 0..STEPS adaptation steps, per run (any problem kind).

    RL: return after each step (alpha, then alpha/2); sinusoid: MSE after SGD steps; few-shot:
    accuracy on test episodes. Writes eval.json (every task's numbers), eval.csv and eval.png.
    """
    from omnirl.options import EvaluateOptions

    with user_errors():
        options = EvaluateOptions(
            tasks=tasks,
            steps=steps,
            episodes=episodes,
            shots=shots,
            seed=seed,
            checkpoint=checkpoint,
            flow=flow,
            lr_schedule=lr_schedule,
            out=out,
            data=tuple(data or ()),
            split=split,
            ray=address or ("local" if ray else None),
        )
    bar, task = progress_bar(""), None

    def on_progress(label: str, done: int, total: int) -> None:
        nonlocal task
        if task is None:  # shown once the work starts: bad input prints its one line only
            bar.start()
            task = bar.add_task(escape(label), total=total)
        bar.update(task, description=escape(label), completed=done, total=total)

    with user_errors():
        kind = _kind_of_runs(runs)
        try:
            report = kind.load("evaluate")(runs, options, on_progress)
        finally:
            bar.stop()
        show_report(report)


# -------------------------------------------------------------------------------- render
@app.command()
def render(
    run: Annotated[Path, typer.Argument(help="The run folder to render.")],
    task: Annotated[
        str | None,
        typer.Option(help="The task as JSON, e.g. '{\"velocity\": 1.5}' (default: a test task)."),
    ] = None,
    steps: Annotated[
        str | None, typer.Option(help="Adaptation step counts (default 0,1,4; sinusoid: 0,1,10).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Video file, .mp4 or .gif (default render.mp4; sinusoid: render.png)."),
    ] = None,
    shots: Annotated[
        str | None, typer.Option(help="Support points K, supervised runs (sinusoid: 5,10).")
    ] = None,
    episodes: Annotated[
        int | None, typer.Option(min=1, help="Episodes per adaptation step (default: the run's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the rollouts (and the default task).")] = 0,
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    flow: Annotated[
        str | None, typer.Option(help="Omni-Net flow to adapt: meta (default), pre or joint.")
    ] = None,
    sample: Annotated[
        bool, typer.Option(help="Film sampled actions instead of the policy's mean action.")
    ] = False,
    horizon: Annotated[
        int | None,
        typer.Option(min=1, help="Steps per episode (default: the run's, else the family's)."),
    ] = None,
) -> None:
    """Adapt to one task and show the learner after each listed number of steps.

    RL: a video (HalfCheetah through MuJoCo offscreen, MUJOCO_GL=egl or osmesa picked
    automatically; Navigation2D as the trajectory towards the goal). Sinusoid: the recovered
    waves as an image.
    """
    from omnirl.options import RenderOptions

    with user_errors():
        options = RenderOptions(
            task=task,
            steps=steps,
            out=out,
            shots=shots,
            episodes=episodes,
            seed=seed,
            checkpoint=checkpoint,
            flow=flow,
            sample=sample,
            horizon=horizon,
        )
    with user_errors():
        kind = _kind_of_runs([run])
        with console.status(f"rendering {run}"):
            report = kind.load("render")(run, options)
        show_report(report)


from omnirl import cli_scale  # noqa: E402, F401  (registers sweep and report on app)

if __name__ == "__main__":  # python -m omnirl.cli: the app cli_scale registered its commands on
    cli_scale.app()
