"""`python -m mnistflow.stack`: the team stack's command line (up, down, status, join).

Thin: each command calls mnistflow.stack.team or .machine and prints a few lines.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mnistflow.errors import PipelineInputError
from mnistflow.stack import team
from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.machine import (
    configure_dvc_remote,
    configure_publishing,
    read_machine_settings,
)

app = typer.Typer(
    help="The team's stack on loopback: PostgreSQL, Prefect server, S3 (SeaweedFS), Dask.",
    no_args_is_help=True,
    add_completion=False,
)

Directory = Annotated[
    Path, typer.Option("--dir", help="The stack's folder: everything it writes lives there.")
]


def _fail(error: Exception) -> None:
    print(f"error: {error}", file=sys.stderr)
    raise typer.Exit(1)


@app.command()
def up(
    directory: Directory,
    first_port: Annotated[
        int | None,
        typer.Option(help="Take consecutive ports from this one (default: free ones)."),
    ] = None,
) -> None:
    """Start the stack in DIR and write DIR/team.env for the machines."""
    try:
        state = team.up(directory, first_port)
    except StackError as error:
        _fail(error)
    layout = StackLayout.of(directory)
    settings = team.machine_settings(layout, state)
    services = state.services
    print(f"team stack up in {state.startup_seconds:.1f} s: {layout.root}")
    print(f"  prefect server  {settings.prefect_api_url}  (pid {services['prefect-server'].pid})")
    print(f"  postgres        127.0.0.1:{state.ports['postgres']}  "
          f"(pid {services['postgres'].pid})")  # fmt: skip
    print(f"  s3 (seaweedfs)  {settings.dvc_endpoint_url}  {settings.dvc_remote_url}  "
          f"(pid {services['seaweedfs'].pid})")  # fmt: skip
    print(f"  dask            {settings.dask_address}  dashboard "
          f"http://127.0.0.1:{state.ports['dask_dashboard']}  (pids "
          f"{services['dask-scheduler'].pid}, {services['dask-worker'].pid})")  # fmt: skip
    print(f"  git remote      {settings.git_remote}")
    print(f"machines: set -a; . {layout.machine_env_file}; set +a")


@app.command()
def down(directory: Directory) -> None:
    """Stop every process of the stack in DIR (its data stays for the next `up`)."""
    try:
        outcomes = team.down(directory)
    except StackError as error:
        _fail(error)
    summary = ", ".join(f"{name} {outcome}" for name, outcome in outcomes.items())
    print(f"team stack down: {summary or 'nothing was running'}; every port free")


@app.command()
def status(directory: Directory) -> None:
    """Each service of the stack in DIR: running, answering, where."""
    try:
        statuses = team.status(directory)
    except StackError as error:
        _fail(error)
    for entry in statuses:
        health = "down"
        if entry.running:
            health = "answers" if entry.answers else "running, not answering"
        pid = f"pid {entry.pid}" if entry.running else ""
        print(f"  {entry.name:<15} {health:<23} {entry.where}  {pid}".rstrip())
    if not all(entry.answers for entry in statuses):
        raise typer.Exit(1)


@app.command()
def join(
    directory: Directory,
    clone: Annotated[Path, typer.Option(help="The machine's clone of the project.")] = Path("."),
    publishes: Annotated[
        bool,
        typer.Option(
            "--publishes/--experiments-only",
            help="Whether this clone publishes (pushes records, data, registry tags).",
        ),
    ] = False,
) -> None:
    """Point a clone at the stack: the bucket as its default DVC remote (local config), and
    whether it publishes (its own .git/config)."""
    layout = StackLayout.of(directory)
    try:
        settings = read_machine_settings(layout.machine_json_file)
        configure_dvc_remote(clone, settings)
        configure_publishing(clone, publishes)
    except (StackError, PipelineInputError) as error:
        _fail(error)
    role = "publishes" if publishes else "experiments only"
    print(f"{clone.resolve()}: DVC remote {settings.dvc_remote_url} (local config), {role}")
    print(f"then: set -a; . {layout.machine_env_file}; set +a")
