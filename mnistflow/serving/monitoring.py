"""Serving you can watch: each inbox run's statistics, compared with the test set's.

After each inbox run commits its partition, the run's figures are read back from that
partition (what was delivered, not what the shards meant to deliver): images, the predicted-
class shares, the mean and low-percentile confidence, inputs flagged by the input checks,
images in chunks that drift from the training data, and quarantined inputs. They are compared
with what the served model predicted on the test set (reports/test_outcomes.json of its
record): a run whose class shares move further than serving.max_class_shift (total variation
distance) or whose mean confidence falls more than serving.max_confidence_drop below the test
set's is flagged; it still delivers its predictions.

Each run's figures are written to `<output>/statistics/<partition>.json`. That folder is as
writable as the predictions: the report reads every file through `parse_run_statistics` and
shows nothing it cannot check.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.json_files import json_object
from mnistflow.errors import PipelineInputError
from mnistflow.params import ServingParams
from mnistflow.release.outcomes import LOW_CONFIDENCE_PERCENTILE, PredictionProfile

STATISTICS_FOLDER = "statistics"
# Drift is marked per row as drift_<measure> among the row's flags (serving/predict.py).
DRIFT_MARK = "drift_"
DIGITS = 6
# A statistics file larger than this is no run's: refused unread.
MAX_STATISTICS_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunStatistics:
    partition: str
    predicted_at: str
    model_version: str
    model_sha256: str
    images: int
    class_shares: list[float]
    confidence_mean: float
    confidence_low: float
    flagged: int  # images an input check flagged (drift marks aside)
    drifting: int  # images in chunks that drift from the training data
    quarantined: int  # inputs refused whole (unreadable, wrong shape, ...)
    # Against the served model's test-set predictions; None where there is none to compare.
    class_shift: float | None = None
    confidence_drop: float | None = None
    alerts: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return asdict(self)


def partition_statistics(partition: Path) -> RunStatistics:
    """The figures of a committed partition's rows (model and time read from them too)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(
        partition,
        columns=["predicted", "probability", "flagged", "error", "model_version",
                 "model_sha256", "predicted_at"],
    )  # fmt: skip
    delivered = rows.filter(rows["error"].is_null())
    predicted = np.asarray(delivered["predicted"].to_pylist(), np.int64)
    confidence = np.asarray(delivered["probability"].to_pylist(), np.float64)
    marks = [(flag or "").split(";") for flag in delivered["flagged"].to_pylist()]
    images = len(predicted)
    counts = np.bincount(predicted, minlength=NUM_CLASSES)

    def first(column: str) -> str:
        return str(rows[column][0].as_py()) if rows.num_rows else ""

    return RunStatistics(
        partition=partition.name,
        predicted_at=first("predicted_at"),
        model_version=first("model_version"),
        model_sha256=first("model_sha256"),
        images=images,
        class_shares=[round(float(c) / images, DIGITS) if images else 0.0 for c in counts],
        confidence_mean=round(float(confidence.mean()), DIGITS) if images else 0.0,
        confidence_low=round(float(np.percentile(confidence, LOW_CONFIDENCE_PERCENTILE)), DIGITS)
        if images
        else 0.0,
        flagged=sum(any(m and not m.startswith(DRIFT_MARK) for m in row) for row in marks),
        drifting=sum(any(m.startswith(DRIFT_MARK) for m in row) for row in marks),
        quarantined=rows.num_rows - delivered.num_rows,
    )


def total_variation(first: list[float], second: tuple[float, ...] | list[float]) -> float:
    """Half the L1 distance of two class distributions: the share of predictions that would
    have to change class for one to become the other."""
    return 0.5 * float(np.abs(np.asarray(first) - np.asarray(second)).sum())


def compared_with_test_set(
    run: RunStatistics, test_set: PredictionProfile | None, params: ServingParams
) -> RunStatistics:
    """The run with its distance from the test set's predictions and the alerts they raise
    (none for a run of fewer than serving.min_images: its figures are shown, not judged)."""
    if run.images == 0:
        # Nothing delivered: no distribution to compare, but a run that refused every input
        # is worth a look.
        alerts = [f"all {run.quarantined} input(s) quarantined"] if run.quarantined else []
        return RunStatistics(**{**asdict(run), "alerts": alerts})
    if test_set is None:
        return run
    shift = round(total_variation(run.class_shares, test_set.class_shares), DIGITS)
    drop = round(test_set.confidence_mean - run.confidence_mean, DIGITS)
    judged = run.images >= params.min_images
    alerts = []
    if judged and shift > params.max_class_shift:
        alerts.append(
            f"predicted classes moved {shift:.3f} (total variation) from the test set's; "
            f"serving.max_class_shift {params.max_class_shift}"
        )
    if judged and drop > params.max_confidence_drop:
        alerts.append(
            f"mean confidence {run.confidence_mean:.3f} is {drop:.3f} below the test set's "
            f"{test_set.confidence_mean:.3f}; serving.max_confidence_drop "
            f"{params.max_confidence_drop}"
        )
    return RunStatistics(
        **{**asdict(run), "class_shift": shift, "confidence_drop": drop, "alerts": alerts}
    )


def statistics_name(partition: str) -> str:
    return f"{Path(partition).stem}.json"


def write_run_statistics(output: Path, run: RunStatistics) -> Path:
    """Write the run's figures into `output`/statistics/, through no link: the folder is
    opened without following one (a planted link or file there is refused by name), and the
    file is written under a temporary name in it and renamed."""
    folder = output / STATISTICS_FOLDER
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o755)
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise PipelineInputError(
            f"{folder}: expected a folder for the runs' statistics, found something else "
            f"({error.strerror}); move it away"
        ) from None
    name = statistics_name(run.partition)
    temporary = f".{name}.{os.getpid()}.tmp"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(temporary, flags, 0o644, dir_fd=folder_fd), "w") as handle:
            json.dump(run.as_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        os.fsync(folder_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder_fd)
        os.close(folder_fd)
    return folder / name


def parse_run_statistics(text: str, where: str) -> RunStatistics:
    """A statistics file, every field checked: such a file may have been planted."""
    content = json_object(text, where)
    shares = content.get("class_shares")
    if not isinstance(shares, list) or len(shares) != NUM_CLASSES:
        raise PipelineInputError(f"{where}: class_shares: expected {NUM_CLASSES} shares")
    alerts = content.get("alerts", [])
    if not isinstance(alerts, list) or not all(isinstance(a, str) and len(a) < 400 for a in alerts):
        raise PipelineInputError(f"{where}: alerts: expected a list of short texts")

    def number(name: str, low: float, high: float) -> float:
        return _checked_number(content.get(name), name, low, high, where)

    def optional(name: str, low: float, high: float) -> float | None:
        return None if content.get(name) is None else number(name, low, high)

    return RunStatistics(
        **{name: _short_text(content.get(name), name, where)
           for name in ("partition", "predicted_at", "model_version", "model_sha256")},
        **{name: int(number(name, 0, 1e12))
           for name in ("images", "flagged", "drifting", "quarantined")},
        class_shares=[_checked_number(s, "class_shares", 0, 1, where) for s in shares],
        confidence_mean=number("confidence_mean", 0, 1),
        confidence_low=number("confidence_low", 0, 1),
        class_shift=optional("class_shift", 0, 1),
        confidence_drop=optional("confidence_drop", -1, 1),
        alerts=alerts,
    )  # fmt: skip


def _checked_number(value: object, name: str, low: float, high: float, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise PipelineInputError(f"{where}: {name} {value!r}; expected a number in {low}..{high}")
    return float(value)


def _short_text(value: object, name: str, where: str) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise PipelineInputError(f"{where}: {name}: expected a text of at most 200 characters")
    return value


def read_run_statistics(output: Path) -> tuple[list[RunStatistics], list[str]]:
    """Every run's statistics under `output`, oldest first, and why any file was not shown."""
    folder = output / STATISTICS_FOLDER
    runs, refused = [], []
    if not folder.is_dir() or folder.is_symlink():
        return [], []
    for path in sorted(folder.glob("*.json")):
        try:
            if path.is_symlink() or not path.is_file():
                raise PipelineInputError(f"{path.name}: not a plain file")
            if path.stat().st_size > MAX_STATISTICS_BYTES:
                raise PipelineInputError(f"{path.name}: larger than {MAX_STATISTICS_BYTES} bytes")
            runs.append(parse_run_statistics(path.read_text(encoding="utf-8"), path.name))
        except (OSError, UnicodeDecodeError, PipelineInputError) as error:
            refused.append(str(error))
    runs.sort(key=lambda run: (run.predicted_at, run.partition))
    return runs, refused


def markdown_summary(run: RunStatistics, test_set: PredictionProfile | None) -> str:
    """The run beside the test set, for the run's Prefect artifact."""

    def shares(values) -> str:
        return " ".join(f"{digit}:{share:.2f}" for digit, share in enumerate(values))

    reference = test_set or PredictionProfile(0, (), 0.0, 0.0)
    known = test_set is not None
    lines = [
        f"# Inbox run {run.partition}",
        "",
        f"model {run.model_version} (sha256 {run.model_sha256[:16]}…)",
        "",
        "| | this run | served model on the test set |",
        "|---|---|---|",
        f"| images | {run.images} | {reference.images if known else '–'} |",
        f"| predicted-class shares | {shares(run.class_shares)} | "
        f"{shares(reference.class_shares) if known else '–'} |",
        f"| mean confidence | {run.confidence_mean:.4f} | "
        f"{f'{reference.confidence_mean:.4f}' if known else '–'} |",
        f"| {LOW_CONFIDENCE_PERCENTILE}th-percentile confidence | {run.confidence_low:.4f} | "
        f"{f'{reference.confidence_low:.4f}' if known else '–'} |",
        f"| flagged / drifting / quarantined | {run.flagged} / {run.drifting} / "
        f"{run.quarantined} | |",
        "",
    ]
    if not known:
        lines.append("No test-set predictions recorded for this model: nothing to compare with.")
    else:
        lines.append(
            f"class shift {run.class_shift:.3f} (total variation), confidence drop "
            f"{run.confidence_drop:+.3f}"
        )
    lines += ["", *(f"**Flagged**: {alert}" for alert in run.alerts)]
    return "\n".join(lines)
