"""Batch prediction as a Prefect flow: an incremental inbox, sharded across task workers.

Each run predicts only the inbox files no earlier run predicted (mnistflow.serving.inbox),
writes their rows to a new Parquet partition and commits them to the manifest. The files are
split into shards, a task per shard; by default on Prefect's thread pool, with `dask=True` on
a Dask cluster through prefect-dask's DaskTaskRunner — a local cluster of `dask_workers`
processes, or an operator-allowed scheduler at `dask_address`. Every shard predicts with the
same model bytes: a snapshot taken once per run, verified against the hash the export stage
recorded, opened once per worker. The parts are joined in shard order, so the partition is
identical however it was run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from mnistflow import registry
from mnistflow.constants import NUM_CLASSES
from mnistflow.durable import durable_file
from mnistflow.errors import PipelineInputError
from mnistflow.project import find_project_root
from mnistflow.serving import inbox as inbox_records
from mnistflow.serving.confinement import confined_dask_address, confined_files, confined_path
from mnistflow.serving.inputs import expand_inputs
from mnistflow.serving.predict import cached_predictor, predict_files
from mnistflow.writer_lock import exclusive_lock

# The model the export stage writes, and the report holding its sha256.
MODELS_FOLDER = Path("models")
EXPORTED_MODEL = MODELS_FOLDER / "model.onnx"
EXPORT_REPORT = Path("reports") / "export.json"
# Runs on one output folder are serialised by a lock kept in the project's .dvc/tmp/, not in the
# output folder, where whoever may write predictions could plant a file or a link in its place.
INBOX_LOCKS = Path(".dvc") / "tmp" / "inbox-locks"


def inbox_lock(project: Path, output_dir: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(os.fsencode(output_dir)).hexdigest()[:16]
    return project / INBOX_LOCKS / f"{digest}.lock"


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


@task(task_run_name="shard-{index}")
def predict_shard(  # `files`: inbox_records.path_as_parameter of each file
    index: int, files: list[str], model: str, model_sha256: str, model_version: str | None,
    part: str, top_k: int, chunk_size: int,
) -> dict[str, Any]:  # fmt: skip
    summary = predict_files(
        [inbox_records.parameter_as_path(name) for name in files],
        Path(model),
        Path(part),
        top_k=top_k,
        chunk_size=chunk_size,
        progress=False,
        predictor=cached_predictor(model, model_sha256, model_version),
    )
    return {
        "index": index,
        "images": summary.images,
        "flagged": summary.flagged,
        "errors": summary.errors,
        "class_counts": summary.class_counts,
        "model_version": summary.model_version,
    }


def _task_runner(dask: bool, dask_workers: int, dask_address: str | None):
    if not dask:
        return None
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True}
    )


@flow(name="predict-shards")
def predict_shards(
    groups: list[list[str]], model: str, model_sha256: str, model_version: str | None,
    parts: list[str], top_k: int, chunk_size: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """One task per shard on this flow's task runner; results in shard order."""
    futures = [
        predict_shard.submit(
            index, group, model, model_sha256, model_version, parts[index], top_k, chunk_size
        )
        for index, group in enumerate(groups)
    ]
    return [future.result() for future in futures]


def recorded_model_sha256(root: Path, model: Path) -> str | None:
    """The sha256 the export stage recorded for the project's model (None for other models)."""
    report = root / EXPORT_REPORT
    if model != (root / EXPORTED_MODEL).resolve() or not report.is_file():
        return None
    return json.loads(report.read_text(encoding="utf-8")).get("onnx_sha256")


def snapshot_model(model: Path, expected_sha256: str | None, folder: Path) -> tuple[Path, str]:
    """A private copy of the model's bytes for this run, and their sha256: an export that
    lands mid-run cannot give two shards two models."""
    import hashlib

    if not model.is_file():
        raise PipelineInputError(f"{model}: ONNX model not found; run `dvc repro export`")
    content = model.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise PipelineInputError(
            f"{model}: sha256 {digest} differs from {expected_sha256} recorded by the export "
            "stage; the model was replaced or is half-written, refusing to serve it"
        )
    snapshot = folder / f"model-{digest[:16]}.onnx"
    snapshot.write_bytes(content)
    return snapshot, digest


def write_partition(
    parts: list[Path], files: list, predicted_at: str, target: Path
) -> tuple[int, dict[str, int], dict[str, str]]:
    """Join the shards' Parquet parts in order, with each row's inbox file, its content hash
    and the time, into `target` (atomically). Returns the row count and, per inbox file, the
    images predicted and the reasons it was skipped (what the manifest records)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

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


# Deployment parameters are untrusted: each number has a range that bounds memory and processes.
PARAMETER_BOUNDS = {"shards": (1, 64), "top_k": (1, 10), "chunk_size": (1, 65536),
                    "dask_workers": (1, 32)}  # fmt: skip


def check_bounds(**values: int) -> None:
    for name, value in values.items():
        low, high = PARAMETER_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PipelineInputError(
                f"parameter {name}={value!r}: expected an integer from {low} to {high}; refused"
            )


@flow(name="batch-predict")
def batch_predict(
    inbox: str = "data/inbox",
    output: str = "predictions/inbox",
    model: str = registry.SERVED,
    shards: int = 4,
    top_k: int = 3,
    chunk_size: int = 1024,
    dask: bool = False,
    dask_workers: int = 2,
    dask_address: str | None = None,
    repredict: bool = False,
    root: str | None = None,
) -> dict[str, Any]:
    """Predict the inbox files no earlier run predicted into a new partition under `output`.

    Paths are relative to the project (`root`, default: around the working directory or
    $MNISTFLOW_ROOT) and must stay inside it. `model` is an ONNX file or a registry model
    (`mnist-classifier:prod`, `mnist-classifier@v0.2.0`). `repredict=True` predicts again, with
    the current model, the files an older model predicted; without it a new model changes
    nothing here.
    """
    logger = get_run_logger()
    project = find_project_root(Path(root) if root else None)
    inbox_dir = confined_path(project, inbox, "inbox")
    output_dir = confined_path(project, output, "output")
    check_bounds(shards=shards, top_k=top_k, chunk_size=chunk_size, dask_workers=dask_workers)
    if model == registry.SERVED:
        model = registry.served_model(project)
    from_registry = model.startswith(registry.ARTIFACT)
    model_path = None if from_registry else confined_path(project, model, "model")
    if model_path is not None and not model_path.is_relative_to(project / MODELS_FOLDER):
        # Whoever can write the inbox must not be able to choose the model that serves it.
        raise PipelineInputError(
            f"parameter model={model!r}: expected a file under {project / MODELS_FOLDER} or a "
            f"registry model ({registry.ARTIFACT}:STAGE, {registry.ARTIFACT}@VERSION); refused"
        )
    dask_address = confined_dask_address(dask_address)
    if not inbox_dir.is_dir():
        raise PipelineInputError(f"{inbox_dir}: the inbox folder does not exist")
    output_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(inbox_lock(project, output_dir), report=logger.warning):
        records = inbox_records.read_manifest(output_dir)
        inbox_records.set_aside_uncommitted_partitions(output_dir, records)
        with tempfile.TemporaryDirectory(prefix="batch-predict-") as scratch:
            if from_registry:
                fetched, model_version = registry.fetch_to_temporary(project, model, Path(scratch))
                snapshot, model_sha256 = snapshot_model(fetched, None, Path(scratch))
            else:
                model_version = None
                snapshot, model_sha256 = snapshot_model(
                    model_path, recorded_model_sha256(project, model_path), Path(scratch)
                )
            found, escaping = confined_files(project, expand_inputs([inbox_dir]))
            for path in escaping:
                logger.warning("skipping %s: it resolves outside the allowed roots", path)
            files = inbox_records.identify(found, inbox_dir, records)
            todo = inbox_records.pending(files, records, model_sha256, repredict)
            summary: dict[str, Any] = {
                "files_seen": len(files),
                "files_predicted": len(todo),
                "images": 0,
                "errors": 0,
                "partition": None,
                "model_sha256": model_sha256,
            }
            if not todo:
                logger.info("inbox %s: %d file(s), none new; nothing to predict", inbox, len(files))
                return summary
            groups = [
                [inbox_records.path_as_parameter(f.path) for f in group]
                for group in shard_inputs(todo, shards)
            ]
            parts = [str(Path(scratch) / f"part-{i:04d}.parquet") for i in range(len(groups))]
            runner = _task_runner(dask, dask_workers, dask_address)
            shard_flow = (
                predict_shards.with_options(task_runner=runner) if runner else predict_shards
            )
            results = shard_flow(
                groups, str(snapshot), model_sha256, model_version, parts, top_k, chunk_size
            )
            now = inbox_records.utc_now()
            predicted_at = now.isoformat(timespec="seconds")
            partition = inbox_records.partition_name(now)
            rows, images, errors = write_partition(
                [Path(p) for p in parts], todo, predicted_at, output_dir / partition
            )
            # The manifest is the commit point: from here on the partition counts.
            new = inbox_records.new_records(
                todo, images, errors, model_sha256, results[0]["model_version"], partition,
                predicted_at,
            )  # fmt: skip
            inbox_records.write_manifest(output_dir, records + new)
    summary.update(
        images=sum(r["images"] for r in results),
        flagged=sum(r["flagged"] for r in results),
        errors=sum(len(r["errors"]) for r in results),
        rows=rows,
        partition=partition,
        shards=len(groups),
        runner="dask" if dask else "threads",
        class_counts=[sum(r["class_counts"][d] for r in results) for d in range(NUM_CLASSES)],
    )
    logger.info(
        "inbox %s: %d new of %d file(s), %d images, %d skipped -> %s",
        inbox, len(todo), len(files), summary["images"], summary["errors"], partition,
    )  # fmt: skip
    return summary


@flow(name="inbox-predictions")
def inbox_predictions(repredict: bool = False) -> dict[str, Any]:
    """The deployed inbox: what anyone who can reach the Prefect API may start.

    A caller chooses nothing but `repredict`: the inbox (data/inbox), the output
    (predictions/inbox), the model (`served`: the registry's prod version, else the project's
    released export) and the project (the worker's) are the operator's. Where the operator
    gives the worker MNISTFLOW_DASK_ADDRESS (listed in MNISTFLOW_DASK_ADDRESSES too), the shards
    run on that cluster.
    """
    address = os.environ.get("MNISTFLOW_DASK_ADDRESS") or None
    return batch_predict(
        model=registry.SERVED,
        repredict=bool(repredict),
        dask=address is not None,
        dask_address=address,
    )
