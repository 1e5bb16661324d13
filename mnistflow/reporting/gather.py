"""Everything the report and the terminal summary show, gathered from the project on disk.

The run's own results are the files the stages wrote (reports/*.json, the predictions CSV,
the PNGs) and dvc.lock; comparisons come from DVC's own `metrics diff`, `params diff` and
`plots diff` against the baseline: the registry's prod version when there is one, else the
latest registered version, else the last commit. A file a failed run never wrote leaves its
section empty rather than failing the report.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mnistflow.compute.cpu_features import cpu_model, detect_cpu_flags
from mnistflow.constants import NUM_CLASSES
from mnistflow.core.git import git_or_none
from mnistflow.core.json_files import read_json
from mnistflow.errors import PipelineInputError
from mnistflow.evaluation.metrics import per_class_metrics
from mnistflow.params import read_params_file
from mnistflow.paths import (
    DVC_LOCK,
    EXPORT_REPORT,
    INBOX_PREDICTIONS,
    METRICS,
    PARAMS,
    RAW_DATA,
    TEST_OUTCOMES,
    TEST_PREDICTIONS,
    TRAIN_REPORT,
    VALIDATION_REPORT,
)
from mnistflow.release.lineage import code_changes, data_versions, output_paths
from mnistflow.reporting import dvc_views

logger = logging.getLogger(__name__)

# The five test-set figures the evaluate stage writes, in the order people read them.
TEST_METRICS = ("accuracy", "loss", "precision_macro", "recall_macro", "f1_macro")
LIBRARIES = (
    "tensorflow", "keras", "numpy", "dvc", "prefect", "great-expectations", "onnx",
    "onnxruntime", "tf2onnx", "gto", "vl-convert-python",
)  # fmt: skip
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class ComparedRevision:
    """The revision a report compares this run with (a registry version, a record, HEAD)."""

    label: str
    revision: str


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: float | None
    baseline: float | None

    @property
    def change(self) -> float | None:
        if self.value is None or self.baseline is None:
            return None
        return self.value - self.baseline


@dataclass(frozen=True)
class Chart:
    title: str
    svg: str


@dataclass(frozen=True)
class Picture:
    title: str
    revision: str
    data_uri: str


@dataclass
class ReportInputs:
    generated_at: str
    code_revision: str | None
    code_changes: list[str]
    baseline: ComparedRevision | None
    data_versions: dict[str, str]
    params_changes: list[tuple[str, Any, Any]]
    params: dict[str, Any]
    validation: dict[str, Any] | None
    training: dict[str, Any] | None
    metrics: list[MetricRow]
    per_class: list[dict[str, float]]
    export: dict[str, Any] | None
    # Every version (release/listing.py), the stage moves, release decisions per test set.
    registry: dict[str, Any]
    record: str | None
    environment: dict[str, str]
    # The deployed inbox's runs (serving/monitoring.py) beside the test set's predictions.
    serving: dict[str, Any] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    # Per split, the training examples whose labels the label check doubts most.
    suspicious_labels: list[Picture] = field(default_factory=list)
    # Drift against the reference: per split, and its worst class, per measure.
    drift_measures: list[str] = field(default_factory=list)
    drift_rows: list[dict[str, Any]] = field(default_factory=list)
    # What the page was built from (reporting/freshness.py); None: always rebuilt.
    fingerprint: str | None = None

    @property
    def baseline_record(self) -> dict[str, Any]:
        """What the page carries beside its fingerprint for a run that keeps it: the baseline
        and its test metrics (DVC's and GTO's answers; parse_baseline_record reads it back)."""
        return {
            "baseline": asdict(self.baseline) if self.baseline else None,
            "metrics": {row.name: row.baseline for row in self.metrics},
        }


def drift_rows(validation: dict[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
    """(measures, rows): per split its distance per measure, then its worst class's."""
    scopes = (validation or {}).get("drift_scopes") or []
    measures = list(dict.fromkeys(entry["measure"] for entry in scopes))
    rows = []
    for split in ("train", "test"):
        whole = {e["measure"]: e["value"] for e in scopes if e["scope"] == split}
        rows.append({"label": split, "cells": [f"{whole.get(m, 0):.4f}" for m in measures]})
        worst = []
        for measure in measures:
            per_class = [
                e for e in scopes if e["measure"] == measure and e["scope"].startswith(f"{split}/")
            ]
            top = max(per_class, key=lambda e: e["value"], default=None)
            worst.append(f"{top['value']:.4f} ({top['scope']})" if top else "–")
        rows.append({"label": f"{split}, worst class", "cells": worst})
    return measures, rows if scopes else []


def suspicious_label_pictures(root: Path, validation: dict[str, Any] | None) -> list[Picture]:
    """Per split, a grid of the examples validate found most likely mislabelled, captioned
    with their label and the label model's class. Drawn only from the very data the report
    validated (its md5), since indices into other data would show other images."""
    from mnistflow.core.hashing import md5_of_file
    from mnistflow.evaluation.figures import image_grid

    raw = root / RAW_DATA
    quality = (validation or {}).get("label_quality") or {}
    splits = {
        split: values
        for split, values in (quality.get("splits") or {}).items()
        if values.get("assessed") and values.get("suspicious")
    }
    if not splits or not raw.is_file():
        return []
    if md5_of_file(raw) != (validation or {}).get("data", {}).get("md5"):
        logger.warning("%s is not the data reports/validation.json checked; no pictures", raw)
        return []
    pictures = []
    with np.load(raw, allow_pickle=False) as arrays:
        for split, values in splits.items():
            images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
            indices = values["suspicious"][:32]
            tiles = [1.0 - images[index].astype(np.float32) / 255 for index in indices]
            captions = [
                f"label {labels[index]} pred {predicted}"
                for index, predicted in zip(indices, values["suspicious_predicted"], strict=False)
            ]
            picture = image_grid(tiles, captions, 8)
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / "grid.png"
                picture.save(path)
                pictures.append(
                    Picture(f"Most suspicious {split} labels", split, _png_data_uri(path))
                )
    return pictures


def git_output(root: Path, *arguments: str) -> str | None:
    output = git_or_none(root, *arguments)
    return output.strip() if output is not None else None


def choose_baseline(root: Path) -> ComparedRevision | None:
    """The registry's prod version, else its latest version, else the last commit; named
    by its git tag (or HEAD), which is what DVC's diffs and chart legends then show.

    Never the run itself: a registry version whose dvc.lock records the workspace's own model
    (the version this very run registered) is passed over."""
    from gto.exceptions import GTOException

    from mnistflow.core.git import file_at_revision
    from mnistflow.release import registry

    lock = root / DVC_LOCK
    own_model = registry.exported_model_hash(
        lock.read_text(encoding="utf-8") if lock.is_file() else None
    )

    def is_this_run(revision: str) -> bool:
        recorded = registry.exported_model_hash(file_at_revision(root, revision, DVC_LOCK))
        return own_model is not None and recorded == own_model

    candidates: list[ComparedRevision] = []
    try:
        prod = registry.version_in_stage(root, "prod")
        if prod and not is_this_run(prod.revision):
            candidates.append(ComparedRevision(
                f"{registry.ARTIFACT} {prod.version} (prod)", f"{registry.ARTIFACT}@{prod.version}"
            ))  # fmt: skip
        for version in registry.versions_newest_first(root):
            if not is_this_run(version.revision):
                candidates.append(ComparedRevision(
                    f"{registry.ARTIFACT} {version.version} (latest other version)",
                    f"{registry.ARTIFACT}@{version.version}",
                ))  # fmt: skip
                break
    except GTOException as error:
        logger.warning("the registry cannot be read (%s); comparing with the last commit", error)
    # The last commit stays the fallback even when this run reproduced it: that comparison
    # (every change +0.0000) is the news that the commit reproduces here.
    head = git_output(root, "rev-parse", "--short", "HEAD")
    if head:
        candidates.append(ComparedRevision(f"last commit {head}", "HEAD"))
    return candidates[0] if candidates else None


def metric_rows(root: Path, old: dict[str, Any]) -> list[MetricRow]:
    """This run's test metrics (its reports) beside `old`, the baseline's."""
    current = read_json(root / METRICS) or {}
    return [MetricRow(name, current.get(name), old.get(name)) for name in TEST_METRICS]


def baseline_metrics(root: Path, baseline: ComparedRevision | None) -> dict[str, Any]:
    """The baseline's test metrics, as DVC's metrics diff against it gives them."""
    if not baseline:
        return {}
    diff = dvc_views.metrics_diff(root, baseline.revision) or {}
    return {name: entry.get("old") for name, entry in (diff.get(METRICS) or {}).items()}


def params_changes(root: Path, baseline: ComparedRevision | None) -> list[tuple[str, Any, Any]]:
    if not baseline:
        return []
    diff = dvc_views.params_diff(root, baseline.revision) or {}
    return sorted(
        (name, entry.get("old"), entry.get("new"))
        for changes in diff.values()
        for name, entry in changes.items()
    )


def plots(root: Path, baseline: ComparedRevision | None) -> tuple[list[Chart], list[Picture]]:
    """DVC's plots of the workspace (and of the baseline, overlaid or side by side)."""
    from mnistflow.reporting.charts import vega_lite_svg

    with tempfile.TemporaryDirectory(prefix="mnistflow-plots-") as folder:
        revisions = [baseline.revision] if baseline else []
        answer = dvc_views.plots_json(root, revisions, Path(folder))
        charts, pictures = [], []
        for title, entries in ((answer or {}).get("data") or {}).items():
            for entry in entries:
                if entry.get("type") == "vega":
                    try:
                        charts.append(Chart(title, vega_lite_svg(entry["content"])))
                    except Exception as error:  # noqa: BLE001 - one chart, not the report
                        logger.warning("plot %r not rendered: %s", title, error)
                elif entry.get("type") == "image":
                    revision = entry["revisions"][0]
                    label = (
                        "this run"
                        if revision == "workspace"
                        else (baseline.label if baseline else revision)
                    )
                    pictures.append(Picture(title, label, _png_data_uri(Path(entry["url"]))))
    return charts, pictures


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def per_class(root: Path) -> list[dict[str, float]]:
    path = root / TEST_PREDICTIONS
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [(int(row["actual"]), int(row["predicted"])) for row in csv.DictReader(handle)]
    except (OSError, KeyError, TypeError, ValueError) as error:
        logger.warning("%s: no per-class figures (%s)", path, error)
        return []
    if not rows or not all(0 <= a < NUM_CLASSES and 0 <= p < NUM_CLASSES for a, p in rows):
        return []
    actual, predicted = (np.array(column) for column in zip(*rows, strict=True))
    figures = per_class_metrics(actual, predicted, NUM_CLASSES)
    return [
        {"class": digit, **{name: float(values[digit]) for name, values in figures.items()}}
        for digit in range(NUM_CLASSES)
    ]


def registry_versions(root: Path) -> dict[str, Any]:
    from gto.exceptions import GTOException

    from mnistflow.release.listing import (
        baseline_warnings,
        decisions_per_test_set,
        version_summaries,
    )
    from mnistflow.release.promotion import stage_moves
    from mnistflow.release.registry import SERVED_STAGE, version_in_stage

    try:
        moves = stage_moves(root)
        prod = version_in_stage(root, SERVED_STAGE)
        return {
            "versions": [summary.as_json() for summary in version_summaries(root, moves)],
            "moves": [move.as_json() for move in reversed(moves)],
            "decisions": dict(decisions_per_test_set(root)),
            "warnings": baseline_warnings(root, prod.version if prod else None),
        }
    except (GTOException, PipelineInputError) as error:
        logger.warning("registry: not shown (%s)", error)
        return {"versions": [], "moves": [], "decisions": {}, "warnings": [str(error)]}


def serving_runs(root: Path) -> dict[str, Any]:
    """The deployed inbox's runs, oldest first, the files not shown and why, and what this
    workspace's model predicted on the test set (each run was compared with its own model's)."""
    from mnistflow.release.outcomes import parse_outcomes
    from mnistflow.serving.monitoring import read_run_statistics

    runs, refused = read_run_statistics(root / INBOX_PREDICTIONS)
    for reason in refused:
        logger.warning("serving statistics not shown: %s", reason)
    test_set = None
    outcomes = root / TEST_OUTCOMES
    if outcomes.is_file():
        try:
            test_set = parse_outcomes(outcomes.read_text(encoding="utf-8"), str(outcomes)).profile
        except PipelineInputError as error:
            logger.warning("%s", error)
    return {
        "runs": [run.as_json() for run in runs],
        "refused": refused,
        "test_set": test_set.as_json() if test_set else None,
    }


def current_record(root: Path) -> str | None:
    """The record (DVC experiment) holding exactly this workspace's dvc.lock, if any."""
    from mnistflow.release.records import current_record_ref

    found = current_record_ref(root)
    return found[0].rsplit("/", 1)[-1] if found else None


def environment(training: dict[str, Any] | None) -> dict[str, str]:
    found: dict[str, str] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu cores": str(os.cpu_count()),
        "cpu features": ", ".join(flag for flag in CPU_FLAGS if flag in detect_cpu_flags()) or "-",
    }
    for library in LIBRARIES:
        try:
            found[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            continue
    if training:
        found["training device"] = str(training.get("device", "-"))
        for key, value in (training.get("environment") or {}).items():
            found.setdefault(f"training {key}", str(value))
    return found


@dataclass(frozen=True)
class SummaryInputs:
    """What the run's terminal summary and Prefect artifacts show (reporting/summary.py):
    the part of the report that is cheap to read again when the page itself is current."""

    baseline: ComparedRevision | None
    metrics: list[MetricRow]
    validation: dict[str, Any] | None
    export: dict[str, Any] | None


def gather_summary(root: Path, known: KnownBaseline | None = None) -> SummaryInputs:
    """The summary's figures for the project at `root` (the baseline, the test metrics
    against it, the validation and release verdicts). `known`: the baseline and its metrics
    as a kept page recorded them (parse_baseline_record), instead of asking GTO and DVC;
    this run's own figures are always read from its reports."""
    root = Path(root)
    if known is None:
        baseline = choose_baseline(root)
        old = baseline_metrics(root, baseline)
    else:
        baseline, old = known
    return SummaryInputs(
        baseline=baseline,
        metrics=metric_rows(root, old),
        validation=read_json(root / VALIDATION_REPORT),
        export=read_json(root / EXPORT_REPORT),
    )


# A baseline and its test metrics, as a page records them.
KnownBaseline = tuple[ComparedRevision | None, dict[str, float | None]]
# Baseline figures read back from a page: accuracies, losses and F1 are far inside this.
MAX_RECORDED_FIGURE = 1e6


def parse_baseline_record(text: str) -> KnownBaseline | None:
    """ReportInputs.baseline_record read back from a page's JSON; None unless every field
    has its kind: texts short and printable (they reach the terminal), figures finite
    numbers of a sane size, metric names the five of TEST_METRICS."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    if not isinstance(found, dict) or set(found) != {"baseline", "metrics"}:
        return None
    baseline, metrics = found["baseline"], found["metrics"]
    if baseline is not None:
        if not isinstance(baseline, dict) or set(baseline) != {"label", "revision"}:
            return None
        if not all(_short_printable(baseline[key]) for key in ("label", "revision")):
            return None
        baseline = ComparedRevision(baseline["label"], baseline["revision"])
    if not isinstance(metrics, dict) or set(metrics) != set(TEST_METRICS):
        return None
    if not all(value is None or _sane_figure(value) for value in metrics.values()):
        return None
    figures = {name: None if value is None else float(value) for name, value in metrics.items()}
    return baseline, figures


def _short_printable(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()


def _sane_figure(value: Any) -> bool:
    # One comparison refuses NaN, infinities and integers too large for a float alike.
    return (
        isinstance(value, float | int)
        and not isinstance(value, bool)
        and abs(value) <= MAX_RECORDED_FIGURE
    )


def gather(
    root: Path, stages: list[dict[str, Any]] | None = None, fingerprint: str | None = None
) -> ReportInputs:
    """Everything the report shows, for the project at `root` (`fingerprint`: what it was
    built from, reporting/freshness.py)."""
    root = Path(root)
    summary = gather_summary(root)
    lock = root / DVC_LOCK
    training = read_json(root / TRAIN_REPORT)
    charts, pictures = plots(root, summary.baseline)
    lock_text = lock.read_text(encoding="utf-8") if lock.is_file() else ""
    measures, drift = drift_rows(summary.validation)
    return ReportInputs(
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        code_revision=git_output(root, "rev-parse", "HEAD"),
        code_changes=code_changes(root, output_paths(lock_text)),
        baseline=summary.baseline,
        data_versions=data_versions(lock_text),
        params_changes=params_changes(root, summary.baseline),
        params=read_params_file(root / PARAMS),
        validation=summary.validation,
        training=training,
        metrics=summary.metrics,
        per_class=per_class(root),
        export=summary.export,
        registry=registry_versions(root),
        serving=serving_runs(root),
        record=current_record(root),
        environment=environment(training),
        charts=charts,
        pictures=pictures,
        stages=list(stages or []),
        suspicious_labels=suspicious_label_pictures(root, summary.validation),
        drift_measures=measures,
        drift_rows=drift,
        fingerprint=fingerprint,
    )
