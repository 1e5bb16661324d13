"""An incremental, idempotent inbox: each run predicts only what no earlier run predicted.

Files are known by the sha256 of their content, so a renamed copy is not predicted again and a
changed file is. Each run writes its rows to a new Parquet partition, then records in the
manifest which files it predicted, when, by which model, into which partition; both writes are
durable (fsynced, file and folder). The manifest is the commit point: a partition it does not
list (a run killed before committing) is moved aside into uncommitted/ by the next run, whose
work then covers those files again.

The output folder's state is verified, not believed, and predictions are never deleted: a
manifest that is missing, unreadable, a link, or not of the manifest's shape is moved aside
and rebuilt from the partitions (their rows name file, content hash, model and time), because
they may be the only copy of predictions whose files have left the inbox; a partition that
cannot be read is moved aside too. A rebuilt record is kept but marked `recovered`: nothing
vouches for a partition found lying in the folder, so it never stops a file in the inbox from
being predicted (a planted partition cannot hide files). Links named like partitions are
never read or moved, and nothing is moved through a link.

A file predicted by an earlier model is not predicted again when a new model is released,
unless asked (`repredict=True`): a new model never silently re-predicts the whole history.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

from mnistflow.core.durable import durable_file
from mnistflow.core.hashing import sha256_of_file
from mnistflow.serving.arrays import display_name

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.parquet"
UNCOMMITTED_FOLDER = "uncommitted"
PARTITION_PREFIX = "part-"
# Only names this module writes are ever removed (not Spark's part-00000-… files, say).
PARTITION_NAME = re.compile(r"part-\d{8}T\d{12}Z\.parquet")
# Columns that hold a value in every record (the rest may be null).
REQUIRED_COLUMNS = ("content_sha256", "source", "model_sha256", "partition", "predicted_at")
# Columns added after the first manifests: the value an older record reads as.
LATER_COLUMNS = {"recovered": False, "ctime_ns": -1, "inode": -1}
# State files are read only below these sizes, taken from their footer before any data: a 2 MB
# planted Parquet file can announce 500 M rows, or one 256 MiB cell in 12 KB, and take
# gigabytes to read. A column chunk this flow writes holds one row group (pyarrow's default:
# about a million rows of short text), far below the chunk cap.
MAX_MANIFEST_RECORDS = 1_000_000
MAX_PARTITION_ROWS = 50_000_000
MAX_COLUMN_CHUNK_BYTES = 128 * 1024 * 1024
# A manifest record keeps the start of a file's reasons; the partition's rows hold them all.
MAX_RECORDED_ERROR = 4000
# Rows read at a time where only a partition's content hashes are needed.
HASH_BATCH_ROWS = 65_536
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class InboxFile:
    path: Path  # as read
    name: str  # relative to the inbox, as the manifest records it
    content_sha256: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

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
            ("recovered", pa.bool_()),
            ("ctime_ns", pa.int64()),
            ("inode", pa.int64()),
        ]
    )


def _is_regular_file(path: Path) -> bool:
    """A plain file, not reached through a link."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _checked_records(table, schema) -> list[dict]:
    """The manifest table's records, or ValueError naming what is not of the manifest's shape."""
    for field in schema:
        if field.name in LATER_COLUMNS and field.name not in table.column_names:
            continue  # a manifest written before the column existed
        if field.name not in table.column_names:
            raise ValueError(f"no column {field.name!r}")
        found = table.schema.field(field.name).type
        if found != field.type:
            raise ValueError(f"column {field.name!r} holds {found}; expected {field.type}")
        if field.name in REQUIRED_COLUMNS and table.column(field.name).null_count:
            raise ValueError(f"column {field.name!r} has empty cells")
    records = table.select([f.name for f in schema if f.name in table.column_names]).to_pylist()
    for number, record in enumerate(records):
        if not SHA256_HEX.fullmatch(record["content_sha256"]):
            raise ValueError(f"record {number}: content_sha256 is not a sha256")
        if not PARTITION_NAME.fullmatch(record["partition"]):
            raise ValueError(f"record {number}: partition {record['partition']!r} is not one")
        for column, default in LATER_COLUMNS.items():
            record[column] = default if record.get(column) is None else record[column]
    return records


def _parquet_rows(path: Path, limit: int) -> None:
    """ValueError unless the Parquet file's footer announces at most `limit` rows, and no
    column chunk larger than MAX_COLUMN_CHUNK_BYTES once decompressed."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    if metadata.num_rows > limit:
        raise ValueError(
            f"its footer announces {metadata.num_rows:,} rows; at most {limit:,} are read"
        )
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(row_group.num_columns):
            size = row_group.column(column).total_uncompressed_size
            if size > MAX_COLUMN_CHUNK_BYTES:
                raise ValueError(
                    f"a column chunk of {size:,} bytes decompressed; at most "
                    f"{MAX_COLUMN_CHUNK_BYTES:,} are read"
                )


def read_manifest(folder: Path) -> list[dict]:
    """The manifest's records, oldest first: empty for a new output folder; rebuilt from the
    partitions where the manifest is missing or cannot be trusted (it is moved aside first)."""
    import pyarrow.parquet as pq

    path = Path(folder) / MANIFEST_FILE
    if _is_regular_file(path):
        try:
            _parquet_rows(path, MAX_MANIFEST_RECORDS)
            schema = _manifest_schema()
            present = set(pq.ParquetFile(path).schema_arrow.names)
            columns = [name for name in schema.names if name in present]
            records = _checked_records(pq.read_table(path, columns=columns), schema)
            return vouched(folder, records)
        except Exception as error:  # noqa: BLE001 - any unreadable manifest is set aside
            moved = set_aside(folder, MANIFEST_FILE)
            logger.warning(
                "%s cannot be trusted (%s); moved it to %s and rebuilding it from the "
                "partitions", path, error, moved,
            )  # fmt: skip
    elif os.path.lexists(path):
        moved = set_aside(folder, MANIFEST_FILE)
        logger.warning("%s is not a plain file; moved it to %s", path, moved)
    partitions = committed_partition_files(folder)
    if not partitions:
        return []
    logger.warning(
        "%s is missing; rebuilding it from %d partition(s) instead of discarding them",
        path,
        len(partitions),
    )
    records = records_from_partitions(folder, partitions)
    write_manifest(folder, records)
    return records


def _partition_files(partition: Path) -> set[tuple[str, str]]:
    """(file, content hash) of every row the partition holds an outcome for (a prediction or
    a reason), read a batch at a time."""
    import pyarrow.parquet as pq

    _parquet_rows(partition, MAX_PARTITION_ROWS)
    found: set[tuple[str, str]] = set()
    columns = ["file", "content_sha256", "predicted", "error"]
    for batch in pq.ParquetFile(partition).iter_batches(
        batch_size=HASH_BATCH_ROWS, columns=columns
    ):
        for file, digest, predicted, error in zip(
            *(batch.column(name).to_pylist() for name in columns), strict=True
        ):
            if (
                isinstance(file, str)
                and isinstance(digest, str)
                and (predicted is not None or error is not None)
            ):
                found.add((file, digest))
    return found


def vouched(folder: Path, records: list[dict]) -> list[dict]:
    """The records, each that its partition does not back (missing, not a plain file,
    unreadable, or without an outcome row for that file and content) marked `recovered`:
    kept, but it no longer stops the file from being predicted. A manifest is a file like any
    other in the folder: a planted one hides nothing; to pass it would have to come with a
    planted prediction row for that very file and content, which shows in the output."""
    backing: dict[str, set[tuple[str, str]]] = {}
    for name in {record["partition"] for record in records}:
        path = Path(folder) / name
        try:
            backing[name] = _partition_files(path) if _is_regular_file(path) else set()
        except Exception as error:  # noqa: BLE001 - an unreadable partition backs nothing
            logger.warning("%s cannot be read (%s); its records back nothing", path, error)
            backing[name] = set()
    unbacked = 0
    for record in records:
        key = (record["source"], record["content_sha256"])
        if not record["recovered"] and key not in backing[record["partition"]]:
            record["recovered"] = True
            unbacked += 1
    if unbacked:
        logger.warning(
            "%d manifest record(s) name a partition that does not hold them; their files are "
            "predicted again", unbacked,
        )  # fmt: skip
    return records


def committed_partition_files(folder: Path) -> list[Path]:
    """The partitions in the folder: plain files with the names this module writes (a link
    with such a name is neither read nor moved)."""
    found = []
    for path in sorted(Path(folder).glob(f"{PARTITION_PREFIX}*.parquet")):
        if not PARTITION_NAME.fullmatch(path.name):
            continue
        if _is_regular_file(path):
            found.append(path)
        else:
            logger.warning("ignoring %s: named like a partition but not a plain file", path)
    return found


PARTITION_COLUMNS = ("file", "content_sha256", "predicted_at", "model_sha256", "model_version",
                     "error")  # fmt: skip


def _partition_rows(partition: Path) -> list[dict]:
    """A partition's rows (the columns a manifest is rebuilt from), or ValueError."""
    import pyarrow.parquet as pq

    _parquet_rows(partition, MAX_PARTITION_ROWS)
    rows = pq.read_table(partition, columns=list(PARTITION_COLUMNS)).to_pylist()
    for row in rows:
        if not isinstance(row["file"], str) or not SHA256_HEX.fullmatch(str(row["content_sha256"])):
            raise ValueError("a row without a file name or a content sha256")
        if not isinstance(row["model_sha256"], str) or not isinstance(row["predicted_at"], str):
            raise ValueError("a row without its model or time")
    return rows


def records_from_partitions(folder: Path, partitions: list[Path]) -> list[dict]:
    """Manifest records recovered from partitions' rows: per partition and file, its content
    hash, model, time, images and errors, marked `recovered` (size and modification time are
    unknown: -1). A partition that cannot be read is moved aside, never deleted."""
    records: dict[tuple[str, str], dict] = {}
    for partition in partitions:
        try:
            rows = _partition_rows(partition)
        except Exception as error:  # noqa: BLE001 - any unreadable partition is set aside
            moved = set_aside(folder, partition.name)
            logger.warning("%s cannot be read (%s); moved it to %s", partition, error, moved)
            continue
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
                    **LATER_COLUMNS,
                    "recovered": True,
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


def _aside_folder(folder: Path) -> tuple[int, str]:
    """A descriptor and the name of the folder things are moved aside into: uncommitted/,
    made if needed and opened without following links; a fresh uncommitted-<time>/ where that
    name is taken by anything but a folder (a planted link must not decide where predictions
    go)."""
    for name in (UNCOMMITTED_FOLDER, f"{UNCOMMITTED_FOLDER}-{partition_stamp(utc_now())}"):
        aside = Path(folder) / name
        with contextlib.suppress(FileExistsError):
            os.mkdir(aside, 0o755)
        try:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(aside, flags), name
        except OSError as error:
            logger.warning("%s is not a folder (%s); not moving anything into it", aside, error)
    raise RuntimeError(f"{folder}: cannot make a folder to move partitions aside into")


def set_aside(folder: Path, name: str) -> str:
    """Move `name` (in `folder`, not followed if it is a link) into the aside folder, under a
    name no earlier move took; returns where it went, relative to `folder`."""
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    aside_fd, aside = _aside_folder(folder)
    try:
        target = name
        existing = set(os.listdir(aside_fd))
        if target in existing:
            target = f"{name}.{partition_stamp(utc_now())}"
        os.replace(name, target, src_dir_fd=folder_fd, dst_dir_fd=aside_fd)
        os.fsync(aside_fd)
        os.fsync(folder_fd)
        return f"{aside}/{target}"
    finally:
        os.close(aside_fd)
        os.close(folder_fd)


def set_aside_uncommitted_partitions(folder: Path, records: list[dict]) -> list[str]:
    """Move partitions the manifest does not list (their run died before committing) into
    uncommitted/: the files they cover are predicted again, and nothing is deleted."""
    committed = {record["partition"] for record in records}
    moved = [
        set_aside(folder, path.name)
        for path in committed_partition_files(folder)
        if path.name not in committed
    ]
    if moved:
        logger.warning("moved partitions of a run that did not finish aside: %s", moved)
    return moved


def identify(paths: list[Path], inbox: Path) -> list[InboxFile]:
    """Each file with the sha256 of its content, read every run: a hash remembered from the
    manifest would trust the manifest, which whoever writes the output folder controls."""
    files = []
    for path in paths:
        status = os.stat(path)
        name = display_name(path.relative_to(inbox))
        stamps = (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)
        files.append(InboxFile(path, name, sha256_of_file(path), *stamps))
    return files


def pending(files: list[InboxFile], records: list[dict], model_sha256: str, repredict: bool):
    """The files to predict now: content never predicted (by any model, or, with `repredict`,
    by this model). Copies of one content within the inbox are predicted once."""
    done = {
        record["content_sha256"]
        for record in records
        if not record["recovered"] and (not repredict or record["model_sha256"] == model_sha256)
    }
    chosen, seen = [], set()
    for inbox_file in files:
        if inbox_file.content_sha256 in done or inbox_file.content_sha256 in seen:
            continue
        seen.add(inbox_file.content_sha256)
        chosen.append(inbox_file)
    return chosen


def path_as_parameter(path: Path) -> str:
    """A path as text any orchestrator can serialise, whatever its bytes: percent-encoded
    (a name that is not valid UTF-8 cannot travel as JSON text), so plain names stay
    readable in the Prefect UI and `parameter_as_path` gives back the very bytes."""
    return quote_from_bytes(os.fsencode(path), safe="/")


def parameter_as_path(text: str) -> Path:
    return Path(os.fsdecode(unquote_to_bytes(text)))


def partition_stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def partition_name(now: datetime) -> str:
    return f"{PARTITION_PREFIX}{partition_stamp(now)}.parquet"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def file_of(source: str, by_source: dict[str, InboxFile]) -> InboxFile:
    """The file a row's source belongs to: "name" or "name[index]" for arrays."""
    if source in by_source:
        return by_source[source]
    return by_source[source[: source.rindex("[")]]


def _short(reason: str | None) -> str | None:
    if reason is None or len(reason) <= MAX_RECORDED_ERROR:
        return reason
    return f"{reason[:MAX_RECORDED_ERROR]}… (the partition's rows hold every reason)"


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
            "error": _short(errors.get(inbox_file.name)),
            "recovered": False,
            "ctime_ns": inbox_file.ctime_ns,
            "inode": inbox_file.inode,
        }
        for inbox_file in files
    ]
