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


def _pipeline_root() -> Path:
    """The DVC project to run: the working directory if it is one, else this checkout."""
    from mnistflow import PROJECT_ROOT

    return Path.cwd() if (Path.cwd() / "dvc.yaml").is_file() else PROJECT_ROOT


def _quiet_prefect_defaults() -> None:
    # No network here: Prefect's telemetry would only log failures.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_overrides(assignments: list[str]) -> dict[str, object]:
    """["train.epochs=3", ...] → {"train.epochs": 3}; values are read as YAML scalars."""
    import yaml

    overrides = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"{assignment!r}: expected key=value, e.g. train.epochs=3")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@app.command()
def run(
    set_params: Annotated[
        list[str] | None,
        typer.Option("--set", "-S", help="Override a param (key=value); runs a DVC experiment."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Apply a preset from presets.yaml (see `mnistflow presets`)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the DVC experiment (with --set or --preset).")
    ] = None,
) -> None:
    """Run the training pipeline as a Prefect flow (one task per DVC stage).

    With --set or --preset it runs as a DVC experiment (`dvc exp run --temp`): compare with
    `dvc exp show`, keep one with `dvc exp apply`.
    """
    _quiet_prefect_defaults()
    from flows.pipeline import training_pipeline
    from mnistflow.presets import PRESETS_FILE, preset_overrides
    from stages.errors import PipelineInputError

    root = _pipeline_root()
    overrides: dict[str, object] = {}
    if preset:
        try:
            overrides.update(preset_overrides(root / PRESETS_FILE, preset))
        except PipelineInputError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        name = name or preset
    overrides.update(parse_overrides(set_params or []))
    state = training_pipeline(
        overrides=overrides or None, root=str(root), experiment_name=name, return_state=True
    )
    if not state.is_completed():
        typer.echo(f"error: the pipeline failed: {state.message}", err=True)
        raise typer.Exit(1)
    result = state.result()
    if "experiment" in result:
        experiment = result["experiment"]
        typer.echo(f"experiment {experiment['experiment']} ({experiment['revision'][:7]})")
        typer.echo("compare with: dvc exp show")
        return
    for stage in result["stages"]:
        outcome = "ran" if stage["ran"] else "up to date"
        typer.echo(f"{stage['stage']:<10} {outcome:<11} {stage['seconds']:>8.1f} s")
    subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=root, check=False)


@app.command()
def presets() -> None:
    """List the tutorial presets (presets.yaml) and the `dvc exp run` each stands for."""
    from mnistflow.presets import PRESETS_FILE, load_presets

    for preset in load_presets(_pipeline_root() / PRESETS_FILE).values():
        typer.echo(f"{preset.name}\n  {preset.description}\n  {preset.dvc_command()}\n")


@app.command()
def serve(
    every: Annotated[
        int | None,
        typer.Option(help="Replace every schedule by this interval in seconds (smoke tests)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the local server started if needed.")] = 4200,
) -> None:
    """Serve prefect.yaml's deployments on their schedules, in this process.

    Uses the server in PREFECT_API_URL; without one, starts a local `prefect server start`
    (SQLite under .prefect/) and stops it on exit.
    """
    _quiet_prefect_defaults()
    from contextlib import nullcontext

    from flows.deployments import build_deployments, deployment_specs, local_prefect_server

    root = _pipeline_root()
    os.environ.setdefault("MNISTFLOW_ROOT", str(root))
    os.chdir(root)
    server = (
        nullcontext(os.environ["PREFECT_API_URL"])
        if os.environ.get("PREFECT_API_URL")
        else local_prefect_server(root / ".prefect", port)
    )
    with server as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        typer.echo(f"serving against {api_url}")
        from prefect import serve as prefect_serve

        # pause_on_shutdown=False: stopping this process must not pause the schedules.
        prefect_serve(*build_deployments(deployment_specs(), every), pause_on_shutdown=False)


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
