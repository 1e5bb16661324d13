"""The export stage's work: this run's float32 and int8 candidates made, judged, written and
reported.

Both files are always this run's candidates, whatever the workspace held before. A refused
candidate is written with the refusal in its metadata (serving refuses it) and the verdict in
reports/export.json (`released`, `verdict`); the stage succeeds, so the run is recorded and
visible in `dvc exp show` (export.strict fails it instead). The int8 model is released only
beside a released float32 one and within export.int8.max_accuracy_drop of its accuracy; where
quantization failed, the float32 candidate stands in for it, marked refused.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from mnistflow.core.atomic import atomic_file, write_json
from mnistflow.data.normalization import Normalization
from mnistflow.data.sources import load_npz
from mnistflow.errors import PipelineInputError, require_file
from mnistflow.params import Params
from mnistflow.reference.input_profile import input_profile_metadata
from mnistflow.release.export import gated_export, marked_refused, model_metadata
from mnistflow.release.gates import Verdict, load_baseline, read_accuracy
from mnistflow.release.quantization import Int8Report, gated_int8
from mnistflow.validation.bounds import applied_bounds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportPaths:
    """What the export stage reads and writes, as dvc.yaml names them."""

    model: Path
    normalization: Path
    raw: Path
    metrics: Path
    validation: Path
    reference: Path | None
    baseline: Path
    output: Path
    int8_output: Path
    outcomes: Path
    report: Path


def export_candidates(paths: ExportPaths, params: Params) -> None:
    """Judge this run's model as float32 and int8 ONNX, write both candidates and the report."""
    import keras

    require_file(paths.model)
    normalization = Normalization.load(paths.normalization)
    raw = load_npz(paths.raw)
    gated = gated_export(
        keras.models.load_model(paths.model),
        normalization,
        raw.x_test,
        raw.y_test,
        read_accuracy(paths.metrics),
        load_baseline(paths.baseline),
        params.export,
        params.model.name,
        _metadata(paths, params, normalization),
    )
    onnx_bytes, report, verdict = gated.onnx_bytes, gated.parity, gated.verdict
    if not verdict.released and params.export.strict:
        raise PipelineInputError(
            f"the gates refused the model ({verdict.describe()}); export.strict is set; "
            f"nothing is written"
        )
    int8_bytes, int8_report, int8_verdict = gated_int8(onnx_bytes, raw, params.export.int8, verdict)
    served = write_candidate(paths.output, onnx_bytes, verdict)
    served_int8 = write_candidate(
        paths.int8_output, onnx_bytes if int8_bytes is None else int8_bytes, int8_verdict
    )
    write_json(paths.outcomes, gated.outcomes.as_json())
    write_json(
        paths.report,
        {
            **report.as_json(),
            **verdict.as_json(),
            "quality": gated.quality.record,
            "opset": params.export.opset,
            # What consumers verify the written model against (the inbox flow does).
            "onnx_sha256": hashlib.sha256(served).hexdigest(),
            "int8": {
                **(int8_report.as_json() if int8_report else {}),
                **int8_verdict.as_json(),
                "onnx_sha256": hashlib.sha256(served_int8).hexdigest(),
            },
        },
    )
    log_quality(gated.quality.record)
    log = logger.info if verdict.released else logger.warning
    log(
        "%s: %s; argmax agreement %.4f, max abs diff %.2g on %d test images "
        "(onnxruntime %.2f s, Keras %.2f s)",
        paths.output,
        verdict.describe(),
        report.argmax_agreement,
        report.max_abs_diff,
        report.images,
        report.onnxruntime_seconds,
        report.keras_seconds,
    )
    log_int8(paths.int8_output, int8_report, int8_verdict)


def _metadata(paths: ExportPaths, params: Params, normalization: Normalization) -> dict:
    """What the model carries: its contract, lineage, the input checks and the drift profile."""
    return model_metadata(
        params,
        normalization,
        {"model": paths.model, "raw_data": paths.raw},
        applied_bounds(paths.validation, params.checks),
        input_profile_metadata(paths.reference, params.checks.drift.model_dump())
        if paths.reference
        else None,
    )


def log_quality(record: dict) -> None:
    """The accuracy with its interval, and how it compares with the baseline's."""
    logger.info(
        "test accuracy %.4f [%.4f, %.4f] (%.0f %% interval, %d images)",
        record["accuracy"],
        record["accuracy_low"],
        record["accuracy_high"],
        record["confidence"] * 100,
        record["test_images"],
    )
    baseline = record["baseline"]
    if baseline is None:
        return
    logger.info(
        "against the baseline %s (%.4f): difference %+.4f, one-sided p=%.3g (%s)",
        baseline["source"],
        baseline["baseline_accuracy"],
        baseline["difference"],
        baseline["p_value_worse"],
        baseline["test"],
    )


def log_int8(output: Path, report: Int8Report | None, verdict: Verdict) -> None:
    log = logger.info if verdict.released else logger.warning
    if report is None:
        log("%s: %s", output, verdict.describe())
        return
    log(
        "%s: %s; test accuracy %.4f (float32 %.4f), argmax agreement %.4f with float32 "
        "(onnxruntime on %d test images: int8 %.2f s, float32 %.2f s)",
        output,
        verdict.describe(),
        report.accuracy,
        report.fp32_accuracy,
        report.argmax_agreement,
        report.images,
        report.int8_seconds,
        report.fp32_seconds,
    )


def write_candidate(output: Path, candidate: bytes, verdict: Verdict) -> bytes:
    """Write this run's candidate to `output`, marked refused when its gates refused it (DVC
    needs the output and the run must be recorded; serving refuses it); return the bytes."""
    written = candidate if verdict.released else marked_refused(candidate, verdict)
    if not verdict.released:
        logger.warning("%s holds the refused candidate, marked as refused (not served)", output)
    with atomic_file(output) as temporary:
        temporary.write_bytes(written)
    return written
