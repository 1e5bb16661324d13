"""The inbox flow's steps as plain functions: check the request, snapshot the model, find the
files to predict, shard them, join the shards' parts into a partition and commit it.

flows/batch_predict.py wires these into Prefect tasks; nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mnistflow.core.git import file_at_revision
from mnistflow.errors import PipelineInputError
from mnistflow.params import ServingParams, parse_params, read_params_file
from mnistflow.paths import EXPORT_REPORT, INBOX_LOCKS, MODELS, ONNX_MODEL, PARAMS, TEST_OUTCOMES
from mnistflow.release import registry
from mnistflow.release.outcomes import PredictionProfile, parse_outcomes
from mnistflow.serving import inbox as inbox_records
from mnistflow.serving.confinement import confined_dask_address, confined_files, confined_path
from mnistflow.serving.inputs import expand_inputs
from mnistflow.serving.precision import recorded_fp32_sha256
from mnistflow.serving.predict import verified_model_bytes

# Request parameters are untrusted: each number has a range that bounds memory and processes.
PARAMETER_BOUNDS = {"shards": (1, 64), "top_k": (1, 10), "chunk_size": (1, 65536),
                    "dask_workers": (1, 32)}  # fmt: skip


@dataclass(frozen=True)
class BatchRequest:
    """A batch-predict request, its paths confined and its numbers bounded."""

    project: Path
    inbox: Path
    output: Path
    model: str  # a registry model (mnist-classifier:prod, …@v0.2.0) or a file under models/
    shards: int
    top_k: int
    chunk_size: int
    dask_workers: int
    dask_address: str | None
    # The bounds an inbox run's predictions are watched with (params.yaml's serving section).
    serving: ServingParams


@dataclass(frozen=True)
class ModelSnapshot:
    """This run's private copy of the model's bytes: every shard serves exactly these."""

    path: Path
    sha256: str
    version: str | None
    # The registry version's record commit (None for a file under models/): where its test
    # outcomes are, for the serving statistics.
    revision: str | None = None


def check_bounds(**values: int) -> None:
    for name, value in values.items():
        low, high = PARAMETER_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PipelineInputError(
                f"parameter {name}={value!r}: expected an integer from {low} to {high}; refused"
            )


def checked_batch_request(
    project: Path, inbox: str, output: str, model: str, **numbers
) -> BatchRequest:
    """The request with its paths confined to the project (or the operator's roots), its model
    under models/ or in the registry, its numbers bounded and its Dask address allowed."""
    dask_address = numbers.pop("dask_address", None)
    check_bounds(**numbers)
    if model == registry.SERVED:
        model = registry.served_model(project)
    if not model.startswith(registry.ARTIFACT):
        path = confined_path(project, model, "model")
        if not path.is_relative_to(project / MODELS):
            # Whoever can write the inbox must not be able to choose the model that serves it.
            raise PipelineInputError(
                f"parameter model={model!r}: expected a file under {project / MODELS} or a "
                f"registry model ({registry.ARTIFACT}:STAGE, {registry.ARTIFACT}@VERSION); refused"
            )
        model = str(path)
    request = BatchRequest(
        project=project,
        inbox=confined_path(project, inbox, "inbox"),
        output=confined_path(project, output, "output"),
        model=model,
        dask_address=confined_dask_address(dask_address),
        serving=serving_params(project),
        **numbers,
    )
    if not request.inbox.is_dir():
        raise PipelineInputError(f"{request.inbox}: the inbox folder does not exist")
    return request


def serving_params(project: Path) -> ServingParams:
    """params.yaml's serving section (defaults without a params.yaml), read before any work:
    a broken section stops the run before it predicts, not after it committed. Only this
    section: a mistake in another (say, train) must not stop serving."""
    params_file = project / PARAMS
    if not params_file.is_file():
        return ServingParams()
    section = read_params_file(params_file).get("serving") or {}
    return parse_params({"serving": section}, str(params_file)).serving


def inbox_lock(project: Path, output_dir: Path) -> Path:
    """The lock serialising runs on one output folder: in the project's .dvc/tmp/, not in the
    output folder, where whoever may write predictions could plant a file or a link."""
    digest = hashlib.sha256(os.fsencode(output_dir)).hexdigest()[:16]
    return project / INBOX_LOCKS / f"{digest}.lock"


def recorded_model_sha256(project: Path, model: Path) -> str | None:
    """The sha256 the export stage recorded for the project's model (None for other models)."""
    report = project / EXPORT_REPORT
    if model != (project / ONNX_MODEL).resolve() or not report.exists():
        return None
    recorded = recorded_fp32_sha256(report)
    if recorded is None:
        # A report that says nothing vouches for nothing: the model is not served unverified.
        raise PipelineInputError(f"{report}: no onnx_sha256 in it; run `dvc repro export`")
    return recorded


def snapshot_model(request: BatchRequest, folder: Path) -> ModelSnapshot:
    """A private copy of the model's bytes in `folder`, verified (a registry version against
    the md5 git records, the project's export against the sha256 export recorded): an export
    that lands mid-run cannot give two shards two models."""
    revision = None
    if request.model.startswith(registry.ARTIFACT):
        found = registry.resolve(request.project, request.model)
        source = registry.fetch_model(
            request.project, found, folder / f"{registry.ARTIFACT}-{found.version}.onnx"
        )
        version, revision, expected = found.version, found.revision, None
    else:
        source, version = Path(request.model), None
        expected = recorded_model_sha256(request.project, source)
    content, digest = verified_model_bytes(source, expected)
    snapshot = folder / f"model-{digest[:16]}.onnx"
    snapshot.write_bytes(content)
    return ModelSnapshot(snapshot, digest, version, revision)


def test_set_profile(request: BatchRequest, model: ModelSnapshot) -> PredictionProfile | None:
    """What the served model predicted on the test set, as its export recorded it: from the
    registry version's record in git, or the project's reports/test_outcomes.json beside the
    export report that vouches for these very bytes. None when there is no such record."""
    if model.revision is not None:
        text = file_at_revision(request.project, model.revision, TEST_OUTCOMES)
        where = f"{registry.ARTIFACT} {model.version}: {TEST_OUTCOMES}"
    else:
        path = request.project / TEST_OUTCOMES
        vouched = recorded_model_sha256(request.project, Path(request.model)) == model.sha256
        try:
            text = path.read_text(encoding="utf-8") if vouched and path.is_file() else None
        except (OSError, UnicodeDecodeError) as error:
            raise PipelineInputError(f"{path}: unreadable ({error})") from None
        where = str(path)
    return parse_outcomes(text, where).profile if text is not None else None


def inbox_files(request: BatchRequest) -> tuple[list, list[Path]]:
    """(the inbox's files with their content hashes, files that resolve out of the roots)."""
    found, escaping = confined_files(request.inbox, expand_inputs([request.inbox]))
    return inbox_records.identify(found, request.inbox), escaping


def shard_inputs(files: list, shards: int) -> list[list]:
    """Contiguous, near-equal groups of files (input order kept), no empty group."""
    shards = max(1, min(shards, len(files)))
    size, extra = divmod(len(files), shards)
    groups, start = [], 0
    for index in range(shards):
        stop = start + size + (1 if index < extra else 0)
        groups.append(files[start:stop])
        start = stop
    return groups


def write_partition(
    parts: list[Path], files: list, predicted_at: str, target: Path
) -> tuple[int, dict[str, int], dict[str, str]]:
    """Join the shards' Parquet parts in order, with each row's inbox file, its content hash
    and the time, into `target` (durably). Returns the row count and, per inbox file, the
    images predicted and the reasons it was skipped (what the manifest records)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mnistflow.core.durable import durable_file

    table = pa.concat_tables([pq.read_table(part) for part in parts])
    by_source = {inbox_file.source: inbox_file for inbox_file in files}
    owners = [inbox_records.file_of(source, by_source) for source in table["source"].to_pylist()]
    table = table.append_column("file", pa.array([owner.name for owner in owners], pa.string()))
    table = table.append_column(
        "content_sha256", pa.array([owner.content_sha256 for owner in owners], pa.string())
    )
    table = table.append_column("predicted_at", pa.array([predicted_at] * len(table), pa.string()))
    with durable_file(target) as temporary:
        pq.write_table(table, temporary)
    images: dict[str, int] = {}
    errors: dict[str, str] = {}
    for owner, error in zip(owners, table["error"].to_pylist(), strict=True):
        if error is None:
            images[owner.name] = images.get(owner.name, 0) + 1
        else:
            errors[owner.name] = f"{errors[owner.name]}; {error}" if owner.name in errors else error
    return len(table), images, errors


def commit_partition(
    output: Path, parts: list[Path], todo: list, records: list[dict], model: ModelSnapshot,
    model_version: str,
) -> tuple[str, int]:  # fmt: skip
    """Write the partition, then the manifest listing it (the commit point); returns the
    partition's name and its row count."""
    now = inbox_records.utc_now()
    predicted_at = now.isoformat(timespec="seconds")
    partition = inbox_records.partition_name(now)
    rows, images, errors = write_partition(parts, todo, predicted_at, output / partition)
    new = inbox_records.new_records(
        todo, images, errors, model.sha256, model_version, partition, predicted_at
    )
    inbox_records.write_manifest(output, records + new)
    return partition, rows
