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


@app.command()
def validate(
    inputs: Annotated[
        list[Path], typer.Argument(help="Files or folders: .npz, .npy, IDX, or images.")
    ],
    params_file: Annotated[
        Path, typer.Option("--params", help="params.yaml whose `validate` bounds apply.")
    ] = Path("params.yaml"),
) -> None:
    """Check a prediction batch with the image-level data checks (shape, scale, ink, blanks)."""
    from mnistflow.inputs import read_inputs
    from stages.data_checks import ValidateParams, validate_images
    from stages.errors import PipelineInputError
    from stages.params import load_section

    try:
        params = load_section(ValidateParams, "validate", params_file)
        batch = read_inputs(inputs)
    except PipelineInputError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for source, reason in batch.errors:
        typer.echo(f"unreadable: {source}: {reason}", err=True)
    if len(batch.images) == 0:
        typer.echo("error: no images found in the inputs", err=True)
        raise typer.Exit(2)
    report = validate_images(batch.images, params)
    total = len(batch.images)
    for result in report.results:
        failing = result.unexpected_count or 0
        status = "ok  " if result.success else "FAIL"
        typer.echo(
            f"{status} {result.name:<16} {failing:>7} of {total} images fail "
            f"(expected {result.bound})"
        )
    if not report.success or batch.errors:
        names = ", ".join(failure.name for failure in report.failures)
        typer.echo(
            f"{len(report.failures)} check(s) failed ({names or 'none'}); "
            f"{len(batch.errors)} unreadable input(s)",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"all {len(report.results)} checks passed on {total} images")


@app.command()
def predict(
    inputs: Annotated[
        list[Path], typer.Argument(help="Files or folders: .npz, .npy, IDX, or images.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="predictions.csv, or a .parquet file.")
    ] = Path("predictions.csv"),
    model: Annotated[Path, typer.Option(help="ONNX model from the export stage.")] = Path(
        "models/model.onnx"
    ),
    top_k: Annotated[int, typer.Option(help="How many top classes to list per image.")] = 3,
    chunk_size: Annotated[
        int, typer.Option(help="Images read and predicted at a time (memory grows with it).")
    ] = 1024,
    threads: Annotated[
        int, typer.Option(help="onnxruntime intra-op threads (0: one per physical core).")
    ] = 0,
    optimization: Annotated[
        str, typer.Option(help="Graph optimisation: disable, basic, extended or all.")
    ] = "all",
    device: Annotated[str, typer.Option(help="cpu, or cuda when onnxruntime has it.")] = "cpu",
    params_file: Annotated[
        Path, typer.Option("--params", help="params.yaml whose `validate` bounds flag inputs.")
    ] = Path("params.yaml"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Predict digits with onnxruntime, streaming in chunks; flags inputs that fail the checks."""
    from mnistflow.predict import SessionOptions, errors_path_for, predict_files
    from stages.data_checks import ValidateParams
    from stages.errors import PipelineInputError
    from stages.params import load_section

    try:
        summary = predict_files(
            inputs,
            model,
            output,
            top_k=top_k,
            chunk_size=chunk_size,
            options=SessionOptions(threads, optimization, device),
            params=load_section(ValidateParams, "validate", params_file),
            progress=progress,
        )
    except PipelineInputError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"predictions: {output}")
    if summary.errors:
        typer.echo(f"unreadable inputs listed in {errors_path_for(output)}", err=True)
        raise typer.Exit(1)
