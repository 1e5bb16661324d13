"""Batch prediction as a Prefect flow: an incremental inbox, sharded across task workers.

Each run predicts only the inbox files no earlier run predicted (mnistflow.serving.inbox),
writes their rows to a new Parquet partition and commits them to the manifest. The files are
split into shards, a task per shard; by default on Prefect's thread pool, with `dask=True` on
a Dask cluster through prefect-dask's DaskTaskRunner — a local cluster of `dask_workers`
processes, or an operator-allowed scheduler at `dask_address`. Every shard predicts with the
same model bytes: a snapshot taken once per run, verified, opened once per worker. The parts
are joined in shard order, so the partition is identical however it was run. The steps are
plain functions in mnistflow.serving.batch; this module wires them as tasks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from mnistflow.constants import NUM_CLASSES
from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.project import find_project_root
from mnistflow.orchestration.writer_lock import exclusive_lock
from mnistflow.paths import INBOX, INBOX_PREDICTIONS
from mnistflow.release import registry
from mnistflow.release.outcomes import PredictionProfile
from mnistflow.serving import batch, monitoring
from mnistflow.serving import inbox as inbox_records
from mnistflow.serving.predict import cached_predictor, predict_files


@task(task_run_name="shard-{index}")
def predict_shard(
    index: int, files: list[str], model: str, model_sha256: str, model_version: str | None,
    part: str, top_k: int, chunk_size: int,
) -> dict[str, Any]:  # fmt: skip
    """Predict one shard's files (each as inbox_records.path_as_parameter) into `part`."""
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


def _shard_parameters(
    groups: list[list[str]], model: str, model_sha256: str, model_version: str | None,
    parts: list[str], top_k: int, chunk_size: int,
) -> list[dict[str, Any]]:  # fmt: skip
    return [
        {
            "index": index, "files": group, "model": model, "model_sha256": model_sha256,
            "model_version": model_version, "part": parts[index], "top_k": top_k,
            "chunk_size": chunk_size,
        }
        for index, group in enumerate(groups)
    ]  # fmt: skip


@flow(name="predict-shards")
def predict_shard_tasks(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One task per shard on the running flow's task runner; results in shard order."""
    futures = [predict_shard.submit(**shard) for shard in shards]
    return [future.result() for future in futures]


def predict_shards(shards: list[dict[str, Any]], runner: Any | None) -> list[dict[str, Any]]:
    """The shards' results in shard order: as tasks of this flow run on its thread pool, or on
    `runner` (a Dask cluster) through the predict-shards subflow.

    Not a subflow on threads: creating a subflow's parent task run met the local server's
    SQLite write conflicts (503, after which Prefect's client waits 2, 4, 8, ... s): at least
    2 s of every inbox run, once over a minute. A subflow on Dask: Dask ships the running
    flow's context with every task, and the subflow's pickles on any worker, while
    batch-predict's, loaded from its entrypoint file by a deployment's worker, names a module
    (`batch_predict`) no Dask worker can import."""
    if runner is None:
        return predict_shard_tasks.fn(shards)
    return predict_shard_tasks.with_options(task_runner=runner)(shards)


@task(task_run_name="read-manifest")
def read_inbox_state(output: Path) -> list[dict]:
    """The manifest's records (rebuilt where it cannot be trusted); stray partitions set aside."""
    records = inbox_records.read_manifest(output)
    inbox_records.set_aside_uncommitted_partitions(output, records)
    return records


@task(task_run_name="snapshot-model")
def snapshot_model(request: batch.BatchRequest, folder: Path) -> batch.ModelSnapshot:
    return batch.snapshot_model(request, folder)


@task(task_run_name="find-new-files")
def find_new_files(
    request: batch.BatchRequest, records: list[dict], model_sha256: str, repredict: bool
) -> tuple[list, int]:
    """(the files to predict now, how many the inbox holds)."""
    files, escaping = batch.inbox_files(request)
    for path in escaping:
        get_run_logger().warning("skipping %s: it resolves outside the allowed roots", path)
    return inbox_records.pending(files, records, model_sha256, repredict), len(files)


@task(task_run_name="commit-partition")
def commit_partition(
    request: batch.BatchRequest, parts: list[str], todo: list, records: list[dict],
    model: batch.ModelSnapshot, model_version: str,
) -> tuple[str, int]:  # fmt: skip
    return batch.commit_partition(
        request.output, [Path(p) for p in parts], todo, records, model, model_version
    )


@task(task_run_name="test-set-reference")
def read_test_set_reference(
    request: batch.BatchRequest, model: batch.ModelSnapshot
) -> PredictionProfile | None:
    """What the served model predicted on the test set, read before predicting; a record
    that cannot be read is said and leaves the run unwatched, never unserved."""
    try:
        return batch.test_set_profile(request, model)
    except PipelineInputError as error:
        get_run_logger().warning("serving statistics without a test-set reference: %s", error)
        return None


@task(task_run_name="serving-statistics")
def record_serving_statistics(
    request: batch.BatchRequest, partition: str, test_set: PredictionProfile | None
) -> dict[str, Any] | None:
    """The run's figures beside the test set's, written next to the predictions, flagged in
    the log where they moved too far, and shown as this run's Prefect artifact. The
    predictions are committed by now: a failure here is logged, and the run still succeeds."""
    from prefect.artifacts import create_markdown_artifact

    logger = get_run_logger()
    try:
        run = monitoring.compared_with_test_set(
            monitoring.partition_statistics(request.output / partition), test_set,
            request.serving,
        )  # fmt: skip
        monitoring.write_run_statistics(request.output, run)
    except (PipelineInputError, OSError) as error:
        logger.warning("inbox run %s: statistics not recorded: %s", partition, error)
        return None
    for alert in run.alerts:
        logger.warning("inbox run %s flagged: %s", partition, alert)
    create_markdown_artifact(
        key="inbox-serving", markdown=monitoring.markdown_summary(run, test_set)
    )
    return run.as_json()


def _summary(todo: list, seen: int, model: batch.ModelSnapshot, results: list[dict]) -> dict:
    return {
        "files_seen": seen,
        "files_predicted": len(todo),
        "images": sum(r["images"] for r in results),
        "flagged": sum(r["flagged"] for r in results),
        "errors": sum(len(r["errors"]) for r in results),
        "partition": None,
        "model_sha256": model.sha256,
        "class_counts": [sum(r["class_counts"][d] for r in results) for d in range(NUM_CLASSES)],
    }


@flow(name="batch-predict")
def batch_predict(
    inbox: str = INBOX,
    output: str = INBOX_PREDICTIONS,
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
    $MNISTFLOW_ROOT) and must stay inside it. `model` is an ONNX file under models/ or a
    registry model (`mnist-classifier:prod`, `mnist-classifier@v0.2.0`). `repredict=True`
    predicts again, with the current model, the files an older model predicted; without it a
    new model changes nothing here.
    """
    logger = get_run_logger()
    project = find_project_root(Path(root) if root else None)
    request = batch.checked_batch_request(
        project, inbox, output, model, shards=shards, top_k=top_k, chunk_size=chunk_size,
        dask_workers=dask_workers, dask_address=dask_address,
    )  # fmt: skip
    request.output.mkdir(parents=True, exist_ok=True)
    with (
        exclusive_lock(batch.inbox_lock(project, request.output), report=logger.warning),
        tempfile.TemporaryDirectory(prefix="batch-predict-") as scratch,
    ):
        records = read_inbox_state(request.output)
        snapshot = snapshot_model(request, Path(scratch))
        test_set = read_test_set_reference(request, snapshot)
        todo, seen = find_new_files(request, records, snapshot.sha256, repredict)
        if not todo:
            logger.info("inbox %s: %d file(s), none new; nothing to predict", inbox, seen)
            return _summary(todo, seen, snapshot, [])
        groups = [
            [inbox_records.path_as_parameter(f.path) for f in group]
            for group in batch.shard_inputs(todo, shards)
        ]
        parts = [str(Path(scratch) / f"part-{i:04d}.parquet") for i in range(len(groups))]
        runner = _task_runner(dask, dask_workers, request.dask_address)
        shards = _shard_parameters(
            groups, str(snapshot.path), snapshot.sha256, snapshot.version, parts, top_k,
            chunk_size,
        )  # fmt: skip
        results = predict_shards(shards, runner)
        partition, rows = commit_partition(
            request, parts, todo, records, snapshot, results[0]["model_version"]
        )
        statistics = record_serving_statistics(request, partition, test_set)
    summary = _summary(todo, seen, snapshot, results)
    summary.update(partition=partition, rows=rows, shards=len(groups),
                   runner="dask" if dask else "threads", serving=statistics)  # fmt: skip
    logger.info(
        "inbox %s: %d new of %d file(s), %d images, %d skipped -> %s",
        inbox, len(todo), seen, summary["images"], summary["errors"], partition,
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
