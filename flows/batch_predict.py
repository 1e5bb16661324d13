"""Batch prediction as a Prefect flow: the inputs split into shards, a task per shard.

By default the shards run on Prefect's thread pool; with `dask=True` on a Dask cluster
through prefect-dask's DaskTaskRunner — a local cluster of `dask_workers` processes, or the
scheduler at `dask_address`. Each shard runs the same code as `mnistflow predict`; the
parts are joined in shard order, so the output is identical however it was run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from mnistflow.atomic import atomic_file
from mnistflow.constants import NUM_CLASSES
from mnistflow.serving.inputs import expand_inputs
from mnistflow.serving.predict import check_output, predict_files


def shard_inputs(files: list[Path], shards: int) -> list[list[Path]]:
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
def predict_shard(
    index: int, files: list[str], model: str, part: str, top_k: int, chunk_size: int
) -> dict[str, Any]:
    summary = predict_files(
        [Path(name) for name in files],
        Path(model),
        Path(part),
        top_k=top_k,
        chunk_size=chunk_size,
        progress=False,
    )
    return {
        "index": index,
        "images": summary.images,
        "flagged": summary.flagged,
        "errors": summary.errors,
        "class_counts": summary.class_counts,
    }


def join_csv_parts(parts: list[Path], output: Path) -> None:
    with atomic_file(output) as temporary, open(temporary, "w", newline="") as joined:
        for position, part in enumerate(parts):
            with open(part, newline="") as handle:
                header = handle.readline()
                if position == 0:
                    joined.write(header)
                shutil.copyfileobj(handle, joined)


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
    groups: list[list[str]], model: str, parts: list[str], top_k: int, chunk_size: int
) -> list[dict[str, Any]]:
    """One task per shard on this flow's task runner; results in shard order."""
    futures = [
        predict_shard.submit(index, group, model, parts[index], top_k, chunk_size)
        for index, group in enumerate(groups)
    ]
    return [future.result() for future in futures]


@flow(name="batch-predict")
def batch_predict(
    inbox: str,
    output: str,
    model: str = "models/model.onnx",
    shards: int = 4,
    top_k: int = 3,
    chunk_size: int = 1024,
    dask: bool = False,
    dask_workers: int = 2,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Predict every image in `inbox` into `output` (CSV), sharded across task workers."""
    logger = get_run_logger()
    files = expand_inputs([Path(inbox)])
    check_output(Path(output), files)
    if not files:
        logger.info("inbox %s is empty; nothing to predict", inbox)
        return {"images": 0, "shards": 0}
    groups = [[str(path) for path in group] for group in shard_inputs(files, shards)]
    runner = _task_runner(dask, dask_workers, dask_address)
    shard_flow = predict_shards.with_options(task_runner=runner) if runner else predict_shards
    with tempfile.TemporaryDirectory(prefix="batch-predict-") as scratch:
        parts = [str(Path(scratch) / f"part-{index:04d}.csv") for index in range(len(groups))]
        results = shard_flow(groups, str(Path(model).resolve()), parts, top_k, chunk_size)
        join_csv_parts([Path(part) for part in parts], Path(output))
    # Each part carries its quarantined inputs as rows with a reason in `error`.
    errors = [tuple(error) for result in results for error in result["errors"]]
    summary = {
        "images": sum(r["images"] for r in results),
        "flagged": sum(r["flagged"] for r in results),
        "errors": len(errors),
        "shards": len(groups),
        "runner": "dask" if dask else "threads",
        "class_counts": [sum(r["class_counts"][d] for r in results) for d in range(NUM_CLASSES)],
        "output": output,
    }
    logger.info("predicted %d images in %d shards -> %s", summary["images"], len(groups), output)
    return summary
