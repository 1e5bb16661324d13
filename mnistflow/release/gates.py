"""The gates a model passes before it is exported: quality (against a floor and a baseline)
and parity (onnxruntime against Keras on the whole test set)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, get_args

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.atomic import write_json
from mnistflow.core.onnx_runs import batched_outputs, cpu_session
from mnistflow.data.normalization import Normalization
from mnistflow.errors import PipelineInputError, read_json_object
from mnistflow.params import ExportParams, ModelName
from mnistflow.release.outcomes import (
    Outcomes,
    parse_digest,
    parse_misclassified,
    parse_outcomes,
    parse_test_images,
)
from mnistflow.release.paired import DIGITS, compare, compare_unpaired, wilson_interval

logger = logging.getLogger(__name__)

PARITY_BATCH = 1024
# A recorded accuracy agrees with its misclassified count to this (it is rounded to 6 digits).
ACCURACY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AccuracyBaseline:
    """The released model's test outcome: what a new model must not fall far below.

    Kept in a git-tracked file that the export stage declares as a dependency, so the gate's
    verdict depends only on what DVC records; `mnistflow baseline` and `mnistflow promote
    --stage prod` replace it deliberately. With the indices of the test images it got wrong
    and the test set's digest, the comparison is paired; baselines recorded before outcomes
    existed hold the accuracy only.
    """

    model_name: str
    accuracy: float
    source: str = ""
    test_set_sha256: str | None = None
    test_images: int | None = None
    misclassified: tuple[int, ...] | None = None

    @property
    def paired(self) -> bool:
        return self.misclassified is not None

    def save(self, path: Path) -> None:
        write_json(path, {key: value for key, value in asdict(self).items() if value is not None})


@dataclass(frozen=True)
class QualityJudgement:
    """The quality gate's reasons to refuse (none: it may be exported) and what
    reports/export.json records of it: accuracy with its interval, and the comparison."""

    reasons: tuple[str, ...]
    record: dict


@dataclass(frozen=True)
class ParityReport:
    argmax_agreement: float
    max_abs_diff: float
    images: int
    keras_seconds: float
    onnxruntime_seconds: float
    # onnxruntime's class probabilities for the test images: the model's outcomes
    # (mnistflow/release/outcomes.py) are read from them, not predicted a second time.
    onnx_probabilities: np.ndarray = field(repr=False, compare=False, default=None)

    def as_json(self) -> dict:
        """What reports/export.json records: the figures, not the timings (wall-clock time in
        a DVC output would change its hash on every run; the stage logs them instead)."""
        return {
            "argmax_agreement": self.argmax_agreement,
            "max_abs_diff": self.max_abs_diff,
            "images": self.images,
        }


def read_accuracy(metrics_path: Path) -> float:
    return _accuracy(read_json_object(metrics_path, "the evaluate stage's metrics"), metrics_path)


def _accuracy(metrics: dict, where: Path | str) -> float:
    value = metrics.get("accuracy")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PipelineInputError(f"{where}: accuracy {value!r}; expected a number")
    return float(value)


def recorded_baseline(
    metrics_text: str, params_text: str, outcomes_text: str | None, source: str
) -> AccuracyBaseline:
    """The baseline a model's recorded files make: its family (params' model.name,
    validated), and its test outcomes (reports/test_outcomes.json) where it has them, else
    only the evaluate stage's accuracy; `source` says where they were recorded."""
    import json

    import yaml

    from mnistflow.params import parse_params

    try:
        metrics = json.loads(metrics_text)
        params = parse_params(yaml.safe_load(params_text) or {}, f"{source}: params.yaml")
    except (ValueError, yaml.YAMLError) as error:
        raise PipelineInputError(f"{source}: unreadable metrics or params ({error})") from None
    if not isinstance(metrics, dict):
        raise PipelineInputError(f"{source}: metrics are not a JSON object")
    if outcomes_text is None:
        return AccuracyBaseline(params.model.name, _accuracy(metrics, source), source)
    outcomes = parse_outcomes(outcomes_text, f"{source}: test outcomes")
    return AccuracyBaseline(
        params.model.name,
        outcomes.accuracy,
        source,
        outcomes.test_set_sha256,
        outcomes.images,
        tuple(outcomes.misclassified.tolist()),
    )


def load_baseline(path: Path) -> AccuracyBaseline | None:
    """The baseline in `path`; None when the file holds none yet (`{}`)."""
    content = read_json_object(path, "a baseline: model_name, accuracy, source")
    if not content:
        return None
    model_name, accuracy = content.get("model_name"), content.get("accuracy")
    if model_name not in get_args(ModelName):
        raise PipelineInputError(
            f"{path}: model_name {model_name!r}; expected one of {', '.join(get_args(ModelName))}"
        )
    if (
        isinstance(accuracy, bool)
        or not isinstance(accuracy, int | float)
        or not 0 <= accuracy <= 1
    ):
        raise PipelineInputError(f"{path}: accuracy {accuracy!r}; expected a number in 0..1")
    baseline = AccuracyBaseline(model_name, float(accuracy), str(content.get("source", "")))
    if "misclassified" not in content:
        return baseline
    images = parse_test_images(content.get("test_images"), str(path), "test_images")
    digest = parse_digest(content.get("test_set_sha256"), str(path))
    misclassified = parse_misclassified(content["misclassified"], images, str(path))
    # The accuracy the unpaired fallback and the report use must be the indices' own.
    if abs(baseline.accuracy - (1 - len(misclassified) / images)) > ACCURACY_TOLERANCE:
        raise PipelineInputError(
            f"{path}: accuracy {baseline.accuracy} disagrees with its {len(misclassified)} "
            f"misclassified of {images} test images; expected {1 - len(misclassified) / images}"
        )
    return AccuracyBaseline(
        model_name,
        baseline.accuracy,
        baseline.source,
        digest,
        images,
        tuple(misclassified.tolist()),
    )


def quality_gate(
    accuracy: float,
    outcomes: Outcomes,
    baseline: AccuracyBaseline | None,
    params: ExportParams,
    model_name: ModelName,
) -> QualityJudgement:
    """The family's floor on the evaluate stage's `accuracy`, and the comparison of this
    model's test `outcomes` with the baseline's.

    A drop below the baseline refuses the model only when it is both larger than
    export.max_accuracy_drop and statistically supported (the one-sided p-value below
    export.significance): on 10,000 images, runs that differ only by noise land 20 images
    apart. A baseline of another model family is no like-for-like comparison (a softmax
    experiment is not a regression of the released CNN): then only the floor applies.
    """
    reasons = []
    floor = params.min_accuracy.for_model(model_name)
    if accuracy < floor:
        reasons.append(
            f"test accuracy {accuracy:.4f} is below export.min_accuracy.{model_name} {floor:.4f}"
        )
    comparison = None
    if baseline is not None and baseline.model_name == model_name:
        comparison = compare_with_baseline(outcomes, baseline, params.interval_confidence)
        drop = comparison.drop
        # Decided on the exact figures; the record holds them rounded.
        if drop > params.max_accuracy_drop and comparison.p_value_worse < params.significance:
            reasons.append(
                f"test accuracy {outcomes.accuracy:.4f} is {drop:.4f} below the baseline "
                f"{comparison.record['baseline_accuracy']:.4f} (export.max_accuracy_drop "
                f"{params.max_accuracy_drop:.4f}), and not by chance: "
                f"{_described(comparison.record)} < export.significance {params.significance}"
            )
    low, high = wilson_interval(outcomes.correct, outcomes.images, params.interval_confidence)
    record = {
        "accuracy": round(outcomes.accuracy, DIGITS),
        "accuracy_low": round(low, DIGITS),
        "accuracy_high": round(high, DIGITS),
        "confidence": params.interval_confidence,
        "test_images": outcomes.images,
        "baseline": None
        if comparison is None
        else {"source": baseline.source, "model_name": baseline.model_name, **comparison.record},
    }
    return QualityJudgement(tuple(reasons), record)


class Comparison(NamedTuple):
    record: dict  # what reports/export.json holds, rounded
    p_value_worse: float  # exact
    drop: float  # baseline minus candidate accuracy, exact (paired: from the image counts)


def compare_with_baseline(
    outcomes: Outcomes, baseline: AccuracyBaseline, confidence: float
) -> Comparison:
    """Paired where the baseline recorded its misclassified images of this very test set;
    otherwise unpaired (Fisher's exact test), and the record says which and why."""
    import numpy as np

    if baseline.paired and baseline.test_set_sha256 == outcomes.test_set_sha256:
        if baseline.test_images != outcomes.images:
            raise PipelineInputError(
                f"baseline {baseline.source}: names this test set but counts "
                f"{baseline.test_images} images; it has {outcomes.images}"
            )
        paired = compare(
            outcomes.misclassified,
            np.asarray(baseline.misclassified, np.int64),
            outcomes.images,
            confidence,
        )
        return Comparison(paired.as_json(), paired.p_value_worse, -paired.difference)
    why = (
        "the baseline was measured on another test set"
        if baseline.paired
        else "the baseline recorded no per-image outcomes"
    )
    logger.warning("quality gate: unpaired comparison: %s", why)
    record, p_value = compare_unpaired(
        outcomes.correct,
        outcomes.images,
        baseline.accuracy,
        baseline.test_images or outcomes.images,
        confidence,
    )
    drop = baseline.accuracy - outcomes.accuracy
    return Comparison({**record, "unpaired_because": why}, p_value, drop)


def _described(comparison: dict) -> str:
    if comparison["test"] == "mcnemar_exact":
        return (
            f"{comparison['baseline_only_correct']} test images only the baseline gets right, "
            f"{comparison['candidate_only_correct']} only this model; McNemar's exact "
            f"p={comparison['p_value_worse']:.3g}"
        )
    return (
        f"unpaired ({comparison['unpaired_because']}); "
        f"Fisher's exact p={comparison['p_value_worse']:.3g}"
    )


def parity(
    model, onnx_bytes: bytes, images: np.ndarray, normalization: Normalization
) -> ParityReport:
    """onnxruntime on the raw uint8 images vs Keras on the same images normalized in numpy."""
    session = cpu_session(onnx_bytes)
    started = time.perf_counter()
    onnx_probabilities = batched_outputs(session, images, PARITY_BATCH, NUM_CLASSES)
    onnx_seconds = time.perf_counter() - started
    keras_input = normalization.apply(images).reshape(-1, *model.input_shape[1:])
    started = time.perf_counter()
    keras_probabilities = model.predict(keras_input, batch_size=PARITY_BATCH, verbose=0)
    keras_seconds = time.perf_counter() - started
    return ParityReport(
        argmax_agreement=float(
            (onnx_probabilities.argmax(axis=1) == keras_probabilities.argmax(axis=1)).mean()
        ),
        max_abs_diff=float(np.abs(onnx_probabilities - keras_probabilities).max()),
        images=len(images),
        keras_seconds=round(keras_seconds, 3),
        onnxruntime_seconds=round(onnx_seconds, 3),
        onnx_probabilities=onnx_probabilities,
    )


def parity_failures(report: ParityReport, params: ExportParams) -> list[str]:
    reasons = []
    if report.argmax_agreement < 1.0:
        disagreeing = round((1 - report.argmax_agreement) * report.images)
        reasons.append(
            f"onnxruntime and Keras disagree on {disagreeing} of {report.images} argmaxes"
        )
    if report.max_abs_diff > params.max_abs_diff:
        reasons.append(
            f"max |p_onnx - p_keras| = {report.max_abs_diff:.3g} exceeds export.max_abs_diff "
            f"{params.max_abs_diff:.3g}"
        )
    return reasons


@dataclass(frozen=True)
class Verdict:
    """Whether the gates release the model: a record of the decision, not a failure.

    A refused model is still recorded (its metrics, the reasons, in reports/export.json and
    `dvc exp show`); it only does not replace the served model, and is not registered."""

    released: bool
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        if not self.released:
            return "not released: " + "; ".join(self.reasons)
        if self.reasons:
            return "released despite: " + "; ".join(self.reasons) + " (export.allow_regression)"
        return "released"

    def as_json(self) -> dict:
        return {"released": self.released, "verdict": self.describe()}


def decide(
    quality_refusals: list[str], parity_refusals: list[str], params: ExportParams
) -> Verdict:
    """Parity refusals always hold; quality refusals yield to export.allow_regression."""
    quality = [f"quality: {reason}" for reason in quality_refusals]
    parity_reasons = [f"parity: {reason}" for reason in parity_refusals]
    if parity_reasons or (quality and not params.allow_regression):
        return Verdict(False, tuple(quality + parity_reasons))
    for reason in quality:
        logger.warning("releasing despite the %s (export.allow_regression)", reason)
    return Verdict(True, tuple(quality))
