"""The ``omnirl`` command line.

Start-up imports neither torch nor MuJoCo; each command imports what it needs. Bad input
(an unknown family, a malformed task) is one clear line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from omnirl import __version__, registry

app = typer.Typer(
    name="omnirl",
    help="Omni-Training for data-efficient meta-reinforcement learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Redirected to a file, rich would fold tables to 80 columns and cut run names; a log keeps
# the full table (a terminal still uses its own width, and COLUMNS still wins).
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit (code 2) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


# Supervised (non-RL) modules by the `family:` their configs and run folders carry. A module
# offers `Config` (its config schema), `Trainer` (same interface as omnirl.trainer.Trainer,
# including `resume`), and `evaluate_command(console, runs, **options)` /
# `render_command(console, run, **options)`, which raise ConfigError or OSError on bad input.
# Adding a module is one entry here.
SUPERVISED = {
    "sinusoid": "omnirl.regression",
    "fewshot": "omnirl.fewshot",
}


def _family_of(source: str | Path | None) -> str | None:
    """The ``family:`` of a run folder, packaged config or YAML file, or ``source`` itself."""
    if source is None:
        return None
    import importlib.resources

    import yaml

    from omnirl.config import packaged_configs

    path = Path(source)
    try:
        if (path / "config.yaml").is_file():
            text = (path / "config.yaml").read_text(encoding="utf-8")
        elif str(source) in packaged_configs():
            packaged = importlib.resources.files("omnirl.configs") / f"{source}.yaml"
            text = packaged.read_text(encoding="utf-8")
        elif path.is_file():
            text = path.read_text(encoding="utf-8")
        else:
            return str(source)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # not readable here: the RL path reports it properly
    return data.get("family") if isinstance(data, dict) else None


def _supervised(source: str | Path | None) -> Any:
    """The supervised module for a family, config or run folder; None for the RL families."""
    import importlib

    module = SUPERVISED.get(str(_family_of(source)))
    return None if module is None else importlib.import_module(module)


def _supervised_command(module: Any, command: str, **options: Any) -> None:
    """Run ``module``'s ``<command>_command``; bad input is one line and exit code 2."""
    from omnirl.config import ConfigError

    function = getattr(module, f"{command}_command", None)
    if function is None:
        raise fail(f"omnirl {command} does not apply to {module.__name__} runs")
    try:
        function(console, **options)
    except (ConfigError, OSError) as exc:
        raise fail(str(exc)) from None


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
    """List the task families with their task distributions and horizons."""
    if family is None:
        table = Table(
            title="omnirl task families", caption="omnirl list FAMILY shows one in detail"
        )
        for column in ("family", "Gymnasium id", "tasks", "horizon"):
            table.add_column(column, no_wrap=True)
        for fam in registry.families().values():
            table.add_row(fam.name, fam.env_id, fam.tasks.describe(), str(fam.horizon))
        console.print(table)
        from omnirl.config import packaged_configs

        console.print(f"agents:  {', '.join(registry.agent_names())}", highlight=False)
        console.print(f"configs: {', '.join(packaged_configs())}", highlight=False)
        supervised = ", ".join(SUPERVISED)
        console.print(f"supervised modules: {supervised} (omnirl train NAME)", highlight=False)
        return
    try:
        fam = registry.get_family(family)
    except registry.UnknownNameError as exc:
        raise fail(str(exc)) from None
    import numpy as np

    console.print(f"[bold]{fam.name}[/]  ({fam.env_id})")
    console.print(f"  {fam.tasks.summary}")
    console.print(f"  tasks:   {fam.tasks.describe()}")
    console.print(f"  horizon: {fam.horizon}")
    rng = np.random.default_rng(seed)
    for task in fam.tasks.sample(samples, rng):
        console.print(f"  e.g.     {json.dumps(task)}", highlight=False)


def _progress(unit: str, trailer: str = "") -> Any:
    """A rich progress bar: description, bar, done/total ``unit``, elapsed, eta, ``trailer``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn(trailer),
        console=console,
    )


def _rl_stats(metrics: dict[str, float]) -> str:
    stats = f"{metrics.get('time/sps', 0):,.0f} steps/s"
    for key, label in (("rollout/return_pre", "pre"), ("rollout/return_post", "post")):
        if key in metrics:
            stats += f"  return {label} {metrics[key]:.1f}"
    return stats


def _progress_bar(total: int, start: int, stats_of: Any = _rl_stats) -> Any:
    progress = _progress("iterations", "{task.fields[stats]}")
    task = progress.add_task("train", total=total, completed=start, stats="")

    def update(iteration: int, metrics: dict[str, float]) -> None:
        progress.update(task, completed=iteration, stats=stats_of(metrics))

    return progress, update


@app.command()
def train(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A family (navigation-2d, halfcheetah-vel, ...), config name or YAML path."
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="omni, maml, pretrain, joint, random or oracle.")
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
    """Train an agent on a task family (Omni-Training, MAML, pre-training, ...)."""
    from omnirl.config import ConfigError, TrainConfig, load_config
    from omnirl.trainer import Trainer

    # A supervised module (sinusoid, ...) brings its own config schema and trainer.
    module = _supervised(resume if resume is not None else source)
    trainer_class, schema = (
        (Trainer, TrainConfig) if module is None else (module.Trainer, module.Config)
    )
    try:
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
            sets = list(overrides or [])
            sets += [f"agent={agent}"] if agent is not None else []
            sets += [f"iterations={iterations}"] if iterations is not None else []
            sets += [f"seed={seed}"] if seed is not None else []
            if data is not None:  # as a JSON string: YAML would read 123 or a: b otherwise
                if "data" not in getattr(schema, "__dataclass_fields__", {}):
                    raise ConfigError("--data applies to few-shot runs (omnirl train fewshot)")
                sets.append(f"data={json.dumps(data)}")
            trainer = trainer_class(load_config(source, sets, schema=schema))
    except (ConfigError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    _run_training(trainer, progress)


def _interrupt(signum: int, frame: Any) -> None:
    """Signal handler: raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C does."""
    raise KeyboardInterrupt


def _run_training(trainer: Any, progress: bool) -> None:
    from omnirl.trainer import TrainingError

    cfg = trainer.cfg
    console.print(
        f"[bold]{cfg.agent}[/] on [bold]{cfg.family}[/], seed {cfg.seed}: "
        f"run folder {trainer.run_dir}",
        highlight=False,
        soft_wrap=True,
    )
    # A trainer may say what its bar shows (the supervised ones: loss and MSE, not returns).
    stats_of = getattr(trainer, "progress_stats", _rl_stats)
    bar, update = (
        _progress_bar(cfg.iterations, trainer.iteration, stats_of) if progress else (None, None)
    )
    # SIGTERM (kill, a scheduler's time limit) stops the run like Ctrl-C: `latest.pt` holds the
    # last finished iteration, and the user is told how to continue. Background jobs of a
    # non-interactive shell ignore SIGINT, so SIGTERM is their way to stop a run.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if bar is not None:
            with bar:
                trainer.train(on_iteration=update)
        else:
            trainer.train()
    except TrainingError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted; continue with: omnirl train --resume {trainer.run_dir}",
            highlight=False,
            soft_wrap=True,  # never break the command inside the path
        )
        raise typer.Exit(code=130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        trainer.close()
    console.print(
        f"done: {trainer.iteration} iterations in {trainer.run_dir}",
        highlight=False,
        soft_wrap=True,
    )


def _run_result(
    run: Path, cfg: Any, agent: Any, flow: str | None, lrs: list[float], returns: Any
) -> dict[str, Any]:
    """One run's entry in eval.json: per-step mean and 95% CI, and every task's return."""
    import numpy as np

    from omnirl.evaluation import mean_ci95

    stats = [mean_ci95(r) for r in returns]
    return {
        "run": str(run),
        "agent": cfg.agent,
        "family": cfg.family,
        "flow": agent.eval_flow if flow is None else flow,
        "lrs": lrs,
        "mean": [m for m, _ in stats],
        "ci95": [c for _, c in stats],
        "returns": np.asarray(returns).tolist(),
    }


def _task_progress(total: int) -> Any:
    """A progress bar counting evaluated tasks (one bar; its description names the run)."""
    progress = _progress("tasks")
    progress.add_task("evaluate", total=total)
    return progress


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in ("best", "latest"):
        raise fail(f"--checkpoint must be best or latest, got {checkpoint!r}")


def _check_flow(run: Path, agent: Any, flow: str | None) -> None:
    if flow is not None and flow not in agent.policy.flows:
        flows = ", ".join(str(f) for f in agent.policy.flows if f is not None) or "none"
        raise fail(f"--flow {flow!r} does not exist in {run} (its flows: {flows})")


def _lr_schedule(text: str | None, steps: int) -> Any:
    """``inner_lr -> [lr per step]``: the default schedule, or the rates given by the user."""
    from omnirl.evaluation import default_lrs

    if text is None:
        return lambda inner_lr: default_lrs(inner_lr, steps)
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        raise fail(f"--lr-schedule takes comma-separated numbers, got {text!r}") from None
    if len(rates) != steps or min(rates, default=1.0) <= 0:
        raise fail(f"--lr-schedule needs {steps} positive rates (one per step), got {text!r}")
    return lambda inner_lr: rates


def _evaluate_supervised(runs: list[Path], options: dict[str, Any]) -> bool:
    """Hand runs of a supervised module to it (True), or leave RL runs to evaluate (False)."""
    families = {_family_of(run) for run in runs}
    if not families & set(SUPERVISED):
        return False
    for run in runs:  # a missing folder is named as such, not as a family of its own
        if not (run / "config.yaml").is_file():
            raise fail(f"{run} is not a run folder (no config.yaml)")
    if len(families) != 1:
        names = sorted(str(f) for f in families)
        raise fail(f"runs of different families cannot share test tasks: {names}")
    _supervised_command(_supervised(runs[0]), "evaluate", runs=runs, **options)
    return True


@app.command()
def evaluate(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to evaluate (same family).")],
    tasks: Annotated[int, typer.Option(min=1, help="Fresh test tasks (paper: 2000).")] = 100,
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
) -> None:
    """Return on fresh tasks after 0..STEPS adaptation steps (alpha, then alpha/2), per run.

    Writes eval.json (every task's returns), eval.csv and eval.png (mean ± 95% CI per step,
    with the MAML paper's numbers as markers when the protocol matches).
    """
    from omnirl.collector import Collector
    from omnirl.evaluation import (
        chunked_adaptation_returns,
        load_run,
        sample_test_tasks,
    )
    from omnirl.report import check_writable, write_report

    _check_checkpoint(checkpoint)
    options = dict(tasks=tasks, steps=steps, episodes=episodes, shots=shots, seed=seed)
    options.update(checkpoint=checkpoint, flow=flow, lr_schedule=lr_schedule, out=out)
    if data:  # few-shot only (cross-domain tests); the other modules never see the key
        options["data"] = data
    if _evaluate_supervised(runs, options):
        return
    if data:
        raise fail("--data applies to few-shot runs (omnirl evaluate RUN --data PATH)")
    steps, episodes = 4 if steps is None else steps, 20 if episodes is None else episodes
    try:
        loaded = [load_run(run, checkpoint) for run in runs]
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    folder = out or (runs[0] if len(runs) == 1 else Path("eval"))
    try:
        check_writable(folder)
    except OSError as exc:
        raise fail(str(exc)) from None
    families = {cfg.family for cfg, _ in loaded}
    if len(families) != 1:
        raise fail(f"runs of different families cannot share test tasks: {sorted(families)}")
    family = registry.get_family(families.pop())
    for run, (_, agent) in zip(runs, loaded, strict=True):
        _check_flow(run, agent, flow)
    lrs_of = _lr_schedule(lr_schedule, steps)
    task_list = sample_test_tasks(family, tasks, seed)
    results = []
    table = Table(title=f"{family.name}: mean return ± 95% CI on {tasks} test tasks")
    table.add_column("run")
    for step in range(steps + 1):
        table.add_column(f"{step} step{'s' if step != 1 else ''}", justify="right")
    bar = _task_progress(len(runs) * tasks)
    with bar:
        for run, (cfg, agent) in zip(runs, loaded, strict=True):
            bar.update(bar.task_ids[0], description=f"evaluate {cfg.agent} ({run.name})")
            with Collector(family.env_id, seed=seed) as collector:
                returns = chunked_adaptation_returns(
                    agent,
                    collector,
                    task_list,
                    lrs_of(cfg.inner_lr),
                    episodes,
                    flow=flow,
                    seed=seed,
                    on_chunk=lambda done: bar.advance(bar.task_ids[0], done),
                )
            results.append(_run_result(run, cfg, agent, flow, lrs_of(cfg.inner_lr), returns))
    for result in results:
        cells = (f"{m:.1f} ± {c:.1f}" for m, c in zip(result["mean"], result["ci95"], strict=True))
        table.add_row(f"{result['agent']} ({Path(result['run']).name})", *cells)
    console.print(table)
    payload = {
        "family": family.name,
        "tasks": task_list,
        "steps": steps,
        "episodes": episodes,
        "seed": seed,
        "runs": results,
    }
    # Evaluation always uses the family's horizon; the paper also used 20 episodes per step.
    published = episodes == 20
    for path in write_report(folder, payload, published):
        console.print(f"wrote {path}", highlight=False)


def _render_task(family: Any, text: str | None, seed: int) -> dict[str, Any]:
    """The task given as JSON and checked against the family, or a test task drawn with seed."""
    from omnirl.evaluation import sample_test_tasks

    if text is None:
        return sample_test_tasks(family, 1, seed)[0]
    try:
        return family.tasks.validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise fail(
            f"--task must be JSON like {json.dumps(family.tasks.example())}: {exc}"
        ) from None
    except ValueError as exc:
        raise fail(f"--task does not fit {family.name}: {exc}") from None


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
    """Adapt to one task and film an episode after each listed number of steps (alpha, alpha/2).

    HalfCheetah is rendered with MuJoCo offscreen (MUJOCO_GL=egl or osmesa, picked
    automatically); Navigation2D is drawn as the trajectory towards the goal.
    """
    from omnirl.evaluation import default_lrs, load_run
    from omnirl.render import (
        RenderError,
        check_video_path,
        choose_gl_backend,
        needs_gl,
        parse_steps,
    )

    _check_checkpoint(checkpoint)
    if (module := _supervised(run)) is not None:
        options = dict(task=task, steps=steps, out=out, episodes=episodes, shots=shots, seed=seed)
        options.update(checkpoint=checkpoint, flow=flow, sample=sample, horizon=horizon)
        _supervised_command(module, "render", run=run, **options)
        return
    steps, out = steps or "0,1,4", out or Path("render.mp4")
    try:
        step_list = parse_steps(steps)
        check_video_path(out)
        cfg, agent = load_run(run, checkpoint)
    except (RenderError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    family = registry.get_family(cfg.family)
    the_task = _render_task(family, task, seed)
    if not getattr(agent, "adapts", True):
        raise fail(f"{run} is a {cfg.agent} run, which does not adapt; render a meta-learned run")
    _check_flow(run, agent, flow)
    if needs_gl(family.env_id):
        try:
            backend = choose_gl_backend()
        except RenderError as exc:
            raise fail(str(exc)) from None
        console.print(f"MuJoCo offscreen rendering with MUJOCO_GL={backend}", highlight=False)
    from omnirl.render import render_run

    with console.status(f"adapting to {json.dumps(the_task)} and filming steps {steps}"):
        stages = render_run(
            agent,
            family.env_id,
            the_task,
            step_list,
            default_lrs(cfg.inner_lr, step_list[-1]),
            episodes or cfg.episodes_per_task,
            out,
            flow=flow,
            sample=sample,
            seed=seed,
            horizon=horizon or cfg.horizon,
        )
    table = Table(title=f"{cfg.agent} on {family.name}, task {json.dumps(the_task)}")
    for column in (
        "adaptation steps",
        "filmed episode return",
        "mean return of adaptation episodes",
    ):
        table.add_column(column, justify="right")
    for stage in stages:
        table.add_row(str(stage.step), f"{stage.film_return:.1f}", f"{stage.adaptation_return:.1f}")
    console.print(table)
    console.print(f"wrote {out}", highlight=False)


if __name__ == "__main__":
    app()
