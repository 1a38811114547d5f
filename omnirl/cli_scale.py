"""The scale-out commands of the command line: ``omnirl sweep`` and ``omnirl report``.

Registered on :data:`omnirl.cli.app` (which imports this module); like every command they
parse arguments, call one library function (:func:`omnirl.sweep.run_sweep`,
:func:`omnirl.aggregate.aggregate_report`) and print its reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from omnirl.cli import app
from omnirl.terminal import err_console, progress_bar, show_report, user_errors

ADDRESS_HELP = "Ray cluster: auto, ray://host:port or host:port (default: a local instance)."


@app.command()
def sweep(
    spec: Annotated[
        str | None,
        typer.Argument(
            help="A sweep spec: packaged (quickstart) or a YAML path, or SWEEP/sweep.yaml."
        ),
    ] = None,
    family: Annotated[
        list[str] | None, typer.Option("--family", help="Family or config (repeatable).")
    ] = None,
    agent: Annotated[
        list[str] | None, typer.Option("--agent", help="Learner (repeatable).")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 0,1,2.")] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="Iterations of every run.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key=value for every run (repeatable).")
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs of each run's task.")] = None,
    out: Annotated[str | None, typer.Option(help="The sweep folder (default sweeps/NAME).")] = None,
    evaluate: Annotated[
        bool, typer.Option(help="Evaluate every run after training, then aggregate.")
    ] = True,
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    dry_run: Annotated[bool, typer.Option(help="List the runs and what each needs.")] = False,
    progress: Annotated[bool, typer.Option(help="Show every run's progress.")] = True,
) -> None:
    """Train a grid of runs (families x agents x seeds x variants) on Ray, then aggregate.

    Re-running it continues: finished runs are skipped, unfinished ones resume bit for bit,
    failed ones are reported without stopping the others.
    """
    from omnirl.sweep import failed, run_sweep
    from omnirl.sweep_spec import load_spec

    with user_errors():
        resolved = load_spec(
            spec,
            families=family or None,
            agents=agent or None,
            seeds=seeds,
            iterations=iterations,
            overrides=overrides or [],
            num_cpus=num_cpus,
            out=out,
            evaluate=None if evaluate else False,
        )
        bar, tasks = progress_bar("iterations", "{task.fields[doing]}"), {}

        def on_progress(rows: dict[str, tuple[int, int, str]]) -> None:
            if not tasks:
                bar.start()
            for name, (iteration, total, doing) in rows.items():
                if name not in tasks:
                    tasks[name] = bar.add_task(escape(name), total=total, doing="")
                bar.update(tasks[name], completed=iteration, doing=doing)

        try:
            reports = run_sweep(resolved, address, dry_run, on_progress if progress else None)
        except KeyboardInterrupt:
            err_console.print(
                "interrupted; run the same command again to continue",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(code=130) from None
        finally:
            if tasks:  # started
                bar.stop()
        for report in reports:
            show_report(report)
    if not dry_run and failed(reports):
        raise typer.Exit(code=1)


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="Sweep folders or evaluated run folders.")],
    reference: Annotated[
        str | None,
        typer.Option(help="Label of the paired differences (default: maml; fewshot: protonet)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for report.json/.csv/.png (default: the one given).")
    ] = None,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap replicates.")] = 2000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the bootstrap.")] = 0,
) -> None:
    """Aggregate evaluated runs over seeds: mean and IQM with stratified bootstrap CIs.

    RL returns per split, sinusoid MSE per K, few-shot accuracy per dataset and shot; per
    agent (or sweep variant), over seeds x test tasks, with paired
    differences against --reference; learning curves from metrics.jsonl.
    """
    from omnirl.aggregate import aggregate_report

    with user_errors():
        show_report(aggregate_report(paths, reference, out, resamples, seed))
