"""An incremental, idempotent inbox: each run predicts only what no earlier run predicted.

Files are known by the sha256 of their content, so a renamed copy is not predicted again and a
changed file is. Each run writes its rows to a new Parquet partition, then records in the
manifest which files it predicted, when, by which model, into which partition; both writes are
durable (fsynced, file and folder). The manifest is the commit point: a partition it does not
list (a run killed before committing) is moved aside into uncommitted/ by the next run, whose
work then covers those files again. Predictions are never deleted: a missing manifest is
rebuilt from the partitions (their rows name file, content hash, model and time), because
they may be the only copy of predictions whose files have left the inbox.

A file predicted by an earlier model is not predicted again when a new model is released,
unless asked (`repredict=True`): a new model never silently re-predicts the whole history.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mnistflow.durable import durable_file
from mnistflow.hashing import sha256_of_file
from mnistflow.serving.arrays import display_name

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.parquet"
UNCOMMITTED_FOLDER = "uncommitted"
PARTITION_PREFIX = "part-"
# Only names this module writes are ever removed (not Spark's part-00000-… files, say).
PARTITION_NAME = re.compile(r"part-\d{8}T\d{12}Z\.parquet")
MANIFEST_COLUMNS = (
    "content_sha256",
    "source",
    "size",
    "mtime_ns",
    "model_sha256",
    "model_version",
    "partition",
    "predicted_at",
    "images",
    "error",
)


@dataclass(frozen=True)
class InboxFile:
    path: Path  # as read
    name: str  # relative to the inbox, as the manifest records it
    content_sha256: str
    size: int
    mtime_ns: int

    @property
    def source(self) -> str:
        """How prediction rows name this file (without an array index)."""
        return display_name(self.path)


def _manifest_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("content_sha256", pa.string()),
            ("source", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("model_sha256", pa.string()),
            ("model_version", pa.string()),
            ("partition", pa.string()),
            ("predicted_at", pa.string()),
            ("images", pa.int64()),
            ("error", pa.string()),
        ]
    )


def read_manifest(folder: Path) -> list[dict]:
    """The manifest's records, oldest first: empty for a new output folder, rebuilt from the
    partitions where the manifest went missing."""
    import pyarrow.parquet as pq

    path = Path(folder) / MANIFEST_FILE
    if path.is_file():
        return pq.read_table(path).to_pylist()
    partitions = committed_partition_files(folder)
    if not partitions:
        return []
    logger.warning(
        "%s is missing; rebuilding it from %d partition(s) instead of discarding them",
        path,
        len(partitions),
    )
    records = records_from_partitions(partitions)
    write_manifest(folder, records)
    return records


def committed_partition_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in Path(folder).glob(f"{PARTITION_PREFIX}*.parquet")
        if PARTITION_NAME.fullmatch(path.name)
    )


def records_from_partitions(partitions: list[Path]) -> list[dict]:
    """Manifest records recovered from partitions' rows: per partition and file, its content
    hash, model, time, images and errors (size and modification time are unknown: -1, so the
    next run hashes those files again rather than trusting a name)."""
    import pyarrow.parquet as pq

    records: dict[tuple[str, str], dict] = {}
    for partition in partitions:
        columns = ("file", "content_sha256", "predicted_at", "model_sha256", "model_version",
                   "error")  # fmt: skip
        rows = pq.read_table(partition, columns=list(columns)).to_pylist()
        for row in rows:
            key = (partition.name, row["file"])
            record = records.setdefault(
                key,
                {
                    "content_sha256": row["content_sha256"],
                    "source": row["file"],
                    "size": -1,
                    "mtime_ns": -1,
                    "model_sha256": row["model_sha256"],
                    "model_version": row["model_version"],
                    "partition": partition.name,
                    "predicted_at": row["predicted_at"],
                    "images": 0,
                    "error": None,
                },
            )
            if row["error"] is None:
                record["images"] += 1
            else:
                record["error"] = (
                    row["error"]
                    if record["error"] is None
                    else f"{record['error']}; {row['error']}"
                )
    return list(records.values())


def write_manifest(folder: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records, schema=_manifest_schema())
    with durable_file(Path(folder) / MANIFEST_FILE) as temporary:
        pq.write_table(table, temporary)


def set_aside_uncommitted_partitions(folder: Path, records: list[dict]) -> list[str]:
    """Move partitions the manifest does not list (their run died before committing) into
    uncommitted/: the files they cover are predicted again, and nothing is deleted."""
    committed = {record["partition"] for record in records}
    moved = []
    for path in committed_partition_files(folder):
        if path.name not in committed:
            aside = Path(folder) / UNCOMMITTED_FOLDER
            aside.mkdir(exist_ok=True)
            os.replace(path, aside / path.name)
            moved.append(path.name)
    if moved:
        logger.warning(
            "moved partitions of a run that did not finish to %s/: %s", UNCOMMITTED_FOLDER, moved
        )
    return moved


def identify(paths: list[Path], inbox: Path, records: list[dict]) -> list[InboxFile]:
    """Each file with its content hash; a file whose name, size and modification time match a
    manifest record reuses that record's hash instead of being read again."""
    known = {
        (record["source"], record["size"], record["mtime_ns"]): record["content_sha256"]
        for record in records
    }
    files = []
    for path in paths:
        status = os.stat(path)
        name = display_name(path.relative_to(inbox))
        digest = known.get((name, status.st_size, status.st_mtime_ns)) or sha256_of_file(path)
        files.append(InboxFile(path, name, digest, status.st_size, status.st_mtime_ns))
    return files


def pending(files: list[InboxFile], records: list[dict], model_sha256: str, repredict: bool):
    """The files to predict now: content never predicted (by any model, or, with `repredict`,
    by this model). Copies of one content within the inbox are predicted once."""
    done = {
        record["content_sha256"]
        for record in records
        if not repredict or record["model_sha256"] == model_sha256
    }
    chosen, seen = [], set()
    for inbox_file in files:
        if inbox_file.content_sha256 in done or inbox_file.content_sha256 in seen:
            continue
        seen.add(inbox_file.content_sha256)
        chosen.append(inbox_file)
    return chosen


def partition_name(now: datetime) -> str:
    return f"{PARTITION_PREFIX}{now.strftime('%Y%m%dT%H%M%S%fZ')}.parquet"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def file_of(source: str, by_source: dict[str, InboxFile]) -> InboxFile:
    """The file a row's source belongs to: "name" or "name[index]" for arrays."""
    if source in by_source:
        return by_source[source]
    return by_source[source[: source.rindex("[")]]


def new_records(
    files: list[InboxFile],
    images_per_file: dict[str, int],
    errors: dict[str, str],
    model_sha256: str,
    model_version: str,
    partition: str,
    predicted_at: str,
) -> list[dict]:
    """One manifest record per predicted file: how many images it gave, or why it failed."""
    return [
        {
            "content_sha256": inbox_file.content_sha256,
            "source": inbox_file.name,
            "size": inbox_file.size,
            "mtime_ns": inbox_file.mtime_ns,
            "model_sha256": model_sha256,
            "model_version": model_version,
            "partition": partition,
            "predicted_at": predicted_at,
            "images": images_per_file.get(inbox_file.name, 0),
            "error": errors.get(inbox_file.name),
        }
        for inbox_file in files
    ]
