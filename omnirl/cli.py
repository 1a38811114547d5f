"""The ``omnirl`` command line.

Start-up imports neither torch nor MuJoCo; each command imports what it needs. Bad input
(an unknown family, a malformed task) is one clear line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import json
from typing import Annotated

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
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit (code 2) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


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
