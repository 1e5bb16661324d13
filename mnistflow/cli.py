"""The `mnistflow` command line: thin commands that forward to plain functions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.writer_lock import DEFAULT_WAIT_SECONDS
from mnistflow.paths import BASELINE, METRICS, PARAMS, PRESETS, REFERENCE, TEST_OUTCOMES

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """mnistflow: a reproducible, orchestrated Keras training pipeline for MNIST."""


@contextlib.contextmanager
def reported_input_errors() -> Iterator[None]:
    """Bad input ends the command with its one-paragraph message and exit code 2."""
    try:
        yield
    except PipelineInputError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _project_root() -> Path:
    from mnistflow.orchestration.project import find_project_root

    with reported_input_errors():
        return find_project_root()


def _entrypoint(root: Path, entrypoint: str):
    """A function of the project's flows/ by its `path:name`, loaded as Prefect deployments
    load flows: the flows import the library, never the other way round."""
    from prefect.utilities.importtools import import_object

    return import_object(f"{root / entrypoint}")


def _heartbeats_as_configured() -> contextlib.AbstractContextManager:
    """No flow-run heartbeats for a run in the caller's own process unless the settings ask
    for them (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, as the team's hosts set it for their
    zombie automation, README: Running as a team). Prefect 3.8.8 sends one every 180 s by
    default from a thread it joins at the end of the run while that thread sleeps in 1 s
    steps: up to a second on every run, a third of a no-op run's overhead over `dvc repro`
    (benchmarks/results/flow_overhead.md). Such a run's workspace is released by its
    guardian when it dies (orchestration/process_guard.py); a worker's runs keep Prefect's
    default."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    # Set anywhere Prefect reads settings (environment, profile, prefect.toml, .env, the
    # legacy runner name): as configured.
    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        return contextlib.nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _validate_params(params_file: Path | None):
    """(the `validate` section, the accepted reference or None): of --params and the reference
    beside it, else of the project around the working directory, else neither (MNIST's
    built-in bounds then apply), so predict and validate work from any directory."""
    from mnistflow.orchestration.project import find_project_root
    from mnistflow.params import ValidateParams, load_validate_params
    from mnistflow.reference.folder import load_reference

    if params_file is None:
        try:
            params_file = find_project_root() / PARAMS
        except PipelineInputError:
            return ValidateParams(), None
    reference_folder = params_file.parent / REFERENCE
    reference = load_reference(reference_folder) if reference_folder.is_dir() else None
    return load_validate_params(params_file), reference


def _orchestrated_project(keep_server: bool = False) -> Path:
    """The project root, with this process set up to orchestrate it: the project's Prefect
    home (and its server when one is up; with `keep_server`, one kept for the next commands
    is started where none is: mnistflow/orchestration/kept_server.py), and a guardian that
    stops every process this one starts when it ends, however it ends. Call before anything
    imports Prefect."""
    from mnistflow.orchestration.prefect_home import use_project_prefect
    from mnistflow.orchestration.process_guard import guard_children

    root = _project_root()
    if keep_server and not os.environ.get("PREFECT_API_URL"):
        from mnistflow.orchestration.kept_server import ensure_kept_server, keep_seconds

        with reported_input_errors():
            kept = ensure_kept_server(root)
        if kept and kept[1]:
            typer.echo(
                f"Prefect server kept for the next runs: {kept[0]} (stops after "
                f"{keep_seconds() / 60:g} min idle; `mnistflow server stop`)",
                err=True,
            )
    use_project_prefect(root)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    guard_children()
    return root


def _mark_kept_server_used(root: Path) -> None:
    """Idle time of a kept server counts from the end of a run, not its start."""
    from mnistflow.orchestration.kept_server import keep_seconds, mark_used

    if keep_seconds() > 0:
        mark_used(root)


def parse_overrides(assignments: list[str]) -> dict[str, object]:
    """["train.epochs=3", ...] → {"train.epochs": 3}; values are read as YAML scalars (as
    params.yaml is: `1e-05` is a number)."""
    import yaml

    from mnistflow.params import ParamsLoader

    overrides = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"{assignment!r}: expected key=value, e.g. train.epochs=3")
        overrides[key.strip()] = yaml.load(value, Loader=ParamsLoader)  # a SafeLoader
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
    wait: Annotated[
        float,
        typer.Option(help="Seconds to wait while another run holds the workspace, then fail."),
    ] = DEFAULT_WAIT_SECONDS,
    publish: Annotated[
        bool | None,
        typer.Option(
            "--publish/--no-publish",
            help="Push the record and data, and register a released model (default: as the "
            "clone is set: git config mnistflow.publish true).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the training pipeline as a Prefect flow (one task per DVC stage).

    With --set or --preset it runs as a DVC experiment (`dvc exp run --temp`): compare with
    `dvc exp show`, keep one with `dvc exp apply`.
    """
    from mnistflow.training.presets import preset_overrides

    root = _orchestrated_project(keep_server=True)
    overrides: dict[str, object] = {}
    if preset:
        with reported_input_errors():
            overrides.update(preset_overrides(root / PRESETS, preset))
        name = name or preset
    overrides.update(parse_overrides(set_params or []))
    training_pipeline = _entrypoint(root, "flows/pipeline.py:training_pipeline")
    with _heartbeats_as_configured():
        state = training_pipeline(
            overrides=overrides or None,
            root=str(root),
            experiment_name=name,
            wait_seconds=wait,
            publish=publish,
            return_state=True,
        )
    _mark_kept_server_used(root)
    if not state.is_completed():
        typer.echo(f"error: the pipeline failed: {state.message}", err=True)
        raise typer.Exit(1)
    result = state.result()
    if "experiment" in result:
        experiment = result["experiment"]
        typer.echo(f"experiment {experiment['experiment']} ({experiment['revision'][:7]})")
        typer.echo("compare with: dvc exp show")
        return
    from mnistflow.reporting.summary import print_summary, record_line

    print_summary(result["stages"], result["summary"], record_line(result["record"]))


@app.command()
def baseline(
    metrics: Annotated[
        Path, typer.Option(help="Test metrics of the model to accept (the evaluate stage's).")
    ] = Path(METRICS),
    output: Annotated[Path, typer.Option(help="The baseline file export depends on.")] = Path(
        BASELINE
    ),
) -> None:
    """Accept the current model's test outcome as the quality gate's baseline.

    A deliberate step, like a release: export re-runs (the baseline is one of its declared
    inputs) and from then on refuses models clearly worse than this one on the same test
    images (more than export.max_accuracy_drop below it, and not by chance).
    """
    from mnistflow.errors import require_file
    from mnistflow.orchestration.dvc_runs import changed_stages
    from mnistflow.release.gates import recorded_baseline

    root = _project_root()
    # The model family comes from params.yaml, the outcomes from export: only sound while
    # both are current.
    stale = changed_stages(root, "export")
    if stale:
        typer.echo(
            f"error: the test outcomes are not current ({', '.join(stale)} changed since they "
            "were made); run the pipeline first",
            err=True,
        )
        raise typer.Exit(2)
    with reported_input_errors():
        for path in (metrics, PARAMS, TEST_OUTCOMES):
            require_file(root / path)
        read = {
            path: (root / path).read_text(encoding="utf-8")
            for path in (metrics, PARAMS, TEST_OUTCOMES)
        }
        accepted = recorded_baseline(
            read[metrics], read[PARAMS], read[TEST_OUTCOMES], f"{TEST_OUTCOMES}"
        )
        accepted.save(root / output)
    typer.echo(
        f"baseline: {accepted.model_name} test accuracy {accepted.accuracy:.4f}, "
        f"{len(accepted.misclassified or ())} misclassified test images -> {output}"
    )


@app.command()
def presets() -> None:
    """List the tutorial presets (presets.yaml) and the `dvc exp run` each stands for."""
    from mnistflow.training.presets import load_presets

    with reported_input_errors():
        known = load_presets(_project_root() / PRESETS)
    for preset in known.values():
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
    root = _orchestrated_project()
    _entrypoint(root, "flows/deployments.py:serve_deployments")(root, every, port)


@app.command()
def validate(
    inputs: Annotated[
        list[Path], typer.Argument(help="Files or folders: .npz, .npy, IDX, or images.")
    ],
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="params.yaml whose `validate` bounds apply (default: the "
            "project's, else MNIST's).",
        ),
    ] = None,
) -> None:
    """Check a prediction batch: each image against the bounds (shape, scale, ink, blanks), and
    the batch against the project's reference profile for drift (from 500 images)."""
    from mnistflow.serving.inputs import read_inputs
    from mnistflow.validation.suite import validate_batch

    with reported_input_errors():
        params, reference = _validate_params(params_file)
        batch = read_inputs(inputs)
    for _, reason in batch.errors:
        typer.echo(f"unreadable: {reason}", err=True)
    if len(batch.images) == 0:
        typer.echo("error: no images found in the inputs", err=True)
        raise typer.Exit(2)
    report = validate_batch(batch.images, params, reference)
    total = len(batch.images)
    for result in report.results:
        status = "ok  " if result.success else "FAIL"
        if result.table == "batch":
            typer.echo(
                f"{status} {result.name:<22} batch {result.observed:>9} (expected {result.bound})"
            )
            continue
        failing = result.unexpected_count or 0
        typer.echo(
            f"{status} {result.name:<22} {failing:>7} of {total} images fail "
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


def _resolved_bounds(params_file: Path):
    """--params' `validate` bounds, null ones inferred from the reference beside it."""
    from mnistflow.validation.bounds import resolve_bounds

    params, reference = _validate_params(params_file)
    return resolve_bounds(params, reference.profile if reference else None)[0]


@contextlib.contextmanager
def _model_file(model: str) -> Iterator[tuple[Path, str | None]]:
    """(the ONNX file, its registry version): a path as given, or a registry model fetched
    from the project's DVC cache or remote into a temporary folder for the block."""
    import tempfile

    from mnistflow.release.registry import ARTIFACT, SERVED, fetch_to_folder, served_model

    if model == SERVED:
        root = _project_root()
        model = served_model(root)
        if not model.startswith(ARTIFACT):
            model = str(root / model)
    if Path(model).exists() or not model.startswith(ARTIFACT):
        yield Path(model), None
        return
    with tempfile.TemporaryDirectory(prefix="mnistflow-model-") as folder:
        yield fetch_to_folder(_project_root(), model, Path(folder))


reference_app = typer.Typer(
    no_args_is_help=True, help="The accepted reference profile validate compares data with."
)
app.add_typer(reference_app, name="reference")


@reference_app.command("accept")
def reference_accept(
    label_model: Annotated[
        str,
        typer.Option(
            help="auto: the released model when it was trained on this data, else "
            "cross-validated MLPs; or released, or cross-validated."
        ),
    ] = "auto",
) -> None:
    """Accept the ingested data (data/raw/mnist.npz) as the reference.

    Profiles it, takes or fits a label model, writes reference/ and records it in
    reference.dvc; then run `dvc repro`."""
    from mnistflow.params import load_params
    from mnistflow.reference.acceptance import accept_reference

    if label_model not in ("auto", "released", "cross-validated"):
        typer.echo(
            f"error: --label-model {label_model}: expected auto, released or cross-validated",
            err=True,
        )
        raise typer.Exit(2)
    from mnistflow.orchestration.stderr_filter import filter_stderr, noise_patterns

    # Fitting the MLPs loads TensorFlow: its start-up lines (oneDNN, CUDA probing without a
    # GPU) are dropped as in the stages, and its tf.data attribute notices by the log level;
    # errors still raise in Python.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    filter_stderr(noise_patterns())
    root = _project_root()
    with reported_input_errors():
        source = load_params(root / PARAMS).data.source
        accepted = accept_reference(root, label_model, source=source)  # type: ignore[arg-type]
    typer.echo(
        f"accepted {accepted.images} images (data md5 {accepted.data_md5}) as the reference "
        f"in {accepted.folder}; label model: {accepted.label_model}. Commit reference.dvc and "
        "reference/, then run `dvc repro`."
    )


@reference_app.command("show")
def reference_show() -> None:
    """Which data the reference was accepted from, and what it holds."""
    from mnistflow.reference.folder import load_reference

    root = _project_root()
    with reported_input_errors():
        reference = load_reference(root / REFERENCE)
    data = reference.info.get("data", {})
    typer.echo(f"data md5  {data.get('md5')}  (source {data.get('source')})")
    for split, values in reference.profile.splits.items():
        typer.echo(
            f"{split:<5}  {values['size']} images {'x'.join(map(str, values['image_shape']))}"
        )
    typer.echo(f"label model  {reference.label_model_kind()}")


@app.command()
def report(
    output: Annotated[
        Path | None, typer.Option(help="Where to write it (default reports/report.html).")
    ] = None,
) -> None:
    """Write the offline run report: one self-contained HTML file (every `mnistflow run`
    ends by writing it; after a plain `dvc repro`, run this)."""
    from mnistflow.reporting.page import make_report

    root = _project_root()
    path, _ = make_report(root, target=output)
    typer.echo(f"report: {path}")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="A registered version, e.g. v0.2.0.")],
    stage: Annotated[str, typer.Option(help="The stage to assign.")] = "prod",
    force: Annotated[
        str | None,
        typer.Option(
            metavar="REASON", help="Skip the stage before this one; the reason is recorded."
        ),
    ] = None,
) -> None:
    """Assign a registry stage to a model version (a GTO tag, pushed where a git remote is).

    Stages go in the order `.gto` lists them (dev, staging, prod): a version reaches one only
    from the one before, unless --force REASON, which the assignment's tag keeps. Promoting to
    prod also makes that version's test outcome the quality gate's baseline
    (release/baseline.json, a declared input of export): commit it.
    """
    from mnistflow.orchestration.writer_lock import exclusive_writer
    from mnistflow.release.promotion import promote as assign_stage
    from mnistflow.release.registry import ARTIFACT, SERVED_STAGE

    root = _project_root()
    # The baseline is an input of export: never rewrite it under a running pipeline.
    with reported_input_errors(), exclusive_writer(root, DEFAULT_WAIT_SECONDS):
        promoted = assign_stage(root, version, stage, force)
    typer.echo(f"{ARTIFACT} {promoted.version} ({promoted.revision[:7]}) is now {stage}")
    if stage == SERVED_STAGE:
        typer.echo(f"baseline of the quality gate: {BASELINE} (commit it)")


server_app = typer.Typer(help="The project's Prefect server kept between runs.")
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status() -> None:
    """Whether the project's Prefect server is up, and where."""
    from mnistflow.orchestration.prefect_home import running_project_server, use_project_prefect

    root = _project_root()
    use_project_prefect(root)
    url = running_project_server(root)
    typer.echo(f"up: {url}" if url else "not running (the next `mnistflow run` starts one)")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the project's Prefect server now (it also stops by itself once idle)."""
    from mnistflow.orchestration.kept_server import stop_kept_server

    root = _project_root()
    stopped = stop_kept_server(root)
    typer.echo(f"stopped {stopped}" if stopped else "no project server was running")


@app.command()
def registry() -> None:
    """Every model version: stages, record, data, test accuracy with its interval, how it
    compared with its baseline, the verdict; then who moved which version where."""
    from mnistflow.release.listing import listing_lines

    root = _project_root()
    with reported_input_errors():
        lines = listing_lines(root)
    if not lines:
        typer.echo("no model version registered yet")
        return
    typer.echo("\n".join(lines))


@app.command()
def verify(
    target: Annotated[
        str,
        typer.Argument(
            help="A git revision, a recorded run (dvc exp list) or a registry version "
            "(mnist-classifier@v0.2.0, mnist-classifier:prod)."
        ),
    ] = "HEAD",
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary replay (its path is printed).")
    ] = False,
) -> None:
    """Replay TARGET on this machine and compare every output with its dvc.lock.

    Prints, per output, identical or differs; for a model that differs, its agreement with the
    recorded one and the metric deltas; and both sides' compute fingerprints. Exit code 0 only
    when every output is identical, 1 when one differs, 2 when it cannot replay.
    """
    from mnistflow.orchestration.stderr_filter import filter_stderr, noise_patterns
    from mnistflow.release.verification import describe
    from mnistflow.release.verification import verify as replay_and_compare

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    filter_stderr(noise_patterns())
    root = _project_root()
    with reported_input_errors():
        result = replay_and_compare(
            root, target, report=lambda line: typer.echo(line, err=True), keep=keep
        )
    for line in describe(result):
        typer.echo(line)
    if not result.identical:
        raise typer.Exit(1)


@app.command()
def predict(
    inputs: Annotated[
        list[Path], typer.Argument(help="Files or folders: .npz, .npy, IDX, or images.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="predictions.csv, or a .parquet file.")
    ] = Path("predictions.csv"),
    model: Annotated[
        str,
        typer.Option(
            help="served: the registry's prod version, else the project's own export when its "
            "gates released it; or a registry model: mnist-classifier:prod (a stage), "
            "mnist-classifier@v0.2.0 (a version); or an ONNX file."
        ),
    ] = "served",
    precision: Annotated[
        str,
        typer.Option(
            help="auto: the fastest released model (int8 when one is released beside the "
            "float32 one and the CPU has VNNI or AMX, else fp32); int8: its int8 model "
            "(models/model.int8.onnx beside models/model.onnx); fp32: the file as given."
        ),
    ] = "auto",
    top_k: Annotated[
        int, typer.Option(min=1, max=10, help="How many top classes to list per image.")
    ] = 3,
    chunk_size: Annotated[
        int,
        typer.Option(min=1, help="Images read and predicted at a time (memory grows with it)."),
    ] = 1024,
    threads: Annotated[
        int, typer.Option(help="onnxruntime intra-op threads (0: one per physical core).")
    ] = 0,
    optimization: Annotated[
        str, typer.Option(help="Graph optimisation: disable, basic, extended or all.")
    ] = "all",
    device: Annotated[str, typer.Option(help="cpu, or cuda when onnxruntime has it.")] = "cpu",
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="params.yaml whose `validate` bounds flag inputs "
            "(default: the bounds embedded in the model at export, else MNIST's).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Predict digits with onnxruntime, streaming in chunks; flags inputs that fail the checks.

    Inputs that cannot be read or trusted are skipped, each with a row whose `error` column
    says why; the rest is delivered (exit code 1 then; 2 for usage errors, before any work).
    """
    from mnistflow.compute.cpu_features import detect_cpu_flags
    from mnistflow.serving.precision import choose_precision
    from mnistflow.serving.predict import SessionOptions, predict_files

    if precision not in ("auto", "int8", "fp32"):
        typer.echo(f"error: --precision {precision}: expected auto, int8 or fp32", err=True)
        raise typer.Exit(2)
    with reported_input_errors(), _model_file(model) as (model_path, version):
        served = choose_precision(model_path, precision, device, detect_cpu_flags())
        typer.echo(f"model: {served.path} ({served.precision}; {served.why})")
        summary = predict_files(
            inputs,
            served.path,
            output,
            top_k=top_k,
            chunk_size=chunk_size,
            options=SessionOptions(threads, optimization, device),
            params=_resolved_bounds(params_file) if params_file else None,
            progress=progress,
            expected_sha256=served.sha256,
            model_version=version,
        )
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"predictions: {output}")
    if summary.errors:
        shown = 10
        for _, reason in summary.errors[:shown]:
            typer.echo(f"skipped: {reason}", err=True)
        more = f" ({len(summary.errors) - shown} more)" if len(summary.errors) > shown else ""
        typer.echo(
            f"{len(summary.errors)} input(s) skipped{more}; their rows in {output} give the "
            "reason in the `error` column",
            err=True,
        )
        raise typer.Exit(1)
