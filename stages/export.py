"""Export stage: models/model.keras → models/model.onnx (float32) and models/model.int8.onnx
(static int8 quantization of it), each judged by its gates.

A pure function of its declared inputs: both files are always this run's candidates, whatever
the workspace held before. A refused candidate is written with the refusal in its metadata
(serving refuses it) and the verdict in reports/export.json (`released`, `verdict`); the stage
succeeds, so the run is recorded and visible in `dvc exp show` (export.strict fails it
instead). What is served is the registry's decision, not a file this stage keeps in place
(README: which model predict and the inbox serve). The int8 model is released only beside a
released float32 one and within export.int8.max_accuracy_drop of its accuracy; where
quantization failed, the float32 candidate stands in for it, marked refused.

Every input is declared in dvc.yaml: the model, the normalization, the raw data (test images
judge both models, training images calibrate the int8 one), the test metrics, the baseline,
the compute fingerprint and the params. Nothing is read from git or dvc.lock.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from mnistflow.atomic import atomic_file, write_json
from mnistflow.cpu_kernels import apply_cpu_kernels
from mnistflow.data.applied_bounds import applied_bounds
from mnistflow.data.input_profile import input_profile_metadata
from mnistflow.data.normalization import Normalization
from mnistflow.data.sources import load_npz
from mnistflow.entrypoints import run_stage
from mnistflow.errors import PipelineInputError, require_file
from mnistflow.params import load_params
from mnistflow.serving.export import gated_export, marked_refused, model_metadata
from mnistflow.serving.gates import Verdict, load_baseline, read_accuracy
from mnistflow.serving.quantization import Int8Report, gated_int8

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--normalization", type=Path, default=Path("data/normalization.json"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw/mnist.npz"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    parser.add_argument("--validation", type=Path, default=Path("reports/validation.json"))
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the accepted reference: its profile travels in the model for predict's drift flags",
    )
    parser.add_argument("--baseline", type=Path, default=Path("release/baseline.json"))
    parser.add_argument("--output", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--int8-output", type=Path, default=Path("models/model.int8.onnx"))
    parser.add_argument("--report", type=Path, default=Path("reports/export.json"))
    arguments = parser.parse_args()
    params = load_params(arguments.params)
    # Before TensorFlow loads: which kernels run is a declared input (mnistflow/cpu_kernels.py).
    apply_cpu_kernels(params)
    require_file(arguments.model)
    import keras

    normalization = Normalization.load(arguments.normalization)
    inputs = {"model": arguments.model, "raw_data": arguments.raw}
    raw = load_npz(arguments.raw)
    onnx_bytes, report, verdict = gated_export(
        keras.models.load_model(arguments.model),
        normalization,
        raw.x_test,
        read_accuracy(arguments.metrics),
        load_baseline(arguments.baseline),
        params.export,
        params.model.name,
        model_metadata(
            params,
            normalization,
            inputs,
            applied_bounds(arguments.validation, params.checks),
            input_profile_metadata(arguments.reference, params.checks.drift.model_dump())
            if arguments.reference
            else None,
        ),
    )
    if not verdict.released and params.export.strict:
        raise PipelineInputError(
            f"the gates refused the model ({verdict.describe()}); export.strict is set; "
            f"nothing is written"
        )
    int8_bytes, int8_report, int8_verdict = gated_int8(onnx_bytes, raw, params.export.int8, verdict)
    served = write_candidate(arguments.output, onnx_bytes, verdict)
    served_int8 = write_candidate(
        arguments.int8_output, onnx_bytes if int8_bytes is None else int8_bytes, int8_verdict
    )
    write_json(
        arguments.report,
        {
            **report.as_json(),
            **verdict.as_json(),
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
    log = logger.info if verdict.released else logger.warning
    log(
        "%s: %s; argmax agreement %.4f, max abs diff %.2g on %d test images "
        "(onnxruntime %.2f s, Keras %.2f s)",
        arguments.output,
        verdict.describe(),
        report.argmax_agreement,
        report.max_abs_diff,
        report.images,
        report.onnxruntime_seconds,
        report.keras_seconds,
    )
    log_int8(arguments.int8_output, int8_report, int8_verdict)


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


if __name__ == "__main__":
    run_stage(main)
