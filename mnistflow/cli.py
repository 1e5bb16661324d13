"""The `mnistflow` command line: thin commands that forward to plain functions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """mnistflow: a reproducible, orchestrated Keras training pipeline for MNIST."""


def _environment_for_stages() -> dict[str, str]:
    # dvc.yaml's commands call `python`; make it this interpreter, whatever PATH says.
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment["PATH"]])
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment


@app.command()
def run(
    targets: Annotated[
        list[str] | None, typer.Argument(help="Stages to reproduce (default: all).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run stages even if unchanged.")] = False,
) -> None:
    """Reproduce the DVC pipeline (dvc repro) and show the test metrics."""
    dvc = [sys.executable, "-m", "dvc"]
    command = [*dvc, "repro", *(["--force"] if force else []), *(targets or [])]
    environment = _environment_for_stages()
    result = subprocess.run(command, env=environment, check=False)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)
    subprocess.run([*dvc, "metrics", "show"], env=environment, check=False)
