"""Export stage: models/model.keras → models/model.onnx, released only when the gates pass.

The gates decide release, not recording: a refused model leaves the served models/model.onnx
as it was and the stage succeeds, with the verdict in reports/export.json (`released`,
`verdict`), so the run is recorded and visible in `dvc exp show`. export.strict fails it.
Where the workspace has no models/model.onnx yet, a refused model is written (DVC needs the
output) with the refusal in its metadata, which serving refuses.

Every input is declared in dvc.yaml: the model, the normalization, the raw test images, the
test metrics, the baseline and the params. Nothing is read from git or dvc.lock.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from mnistflow.atomic import atomic_file, write_json
from mnistflow.data.applied_bounds import applied_bounds
from mnistflow.data.input_profile import input_profile_metadata
from mnistflow.data.normalization import Normalization
from mnistflow.data.sources import load_npz
from mnistflow.entrypoints import run_stage
from mnistflow.errors import PipelineInputError, require_file
from mnistflow.params import load_params
from mnistflow.serving.export import gated_export, marked_refused, model_metadata
from mnistflow.serving.gates import load_baseline, read_accuracy

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
    parser.add_argument("--report", type=Path, default=Path("reports/export.json"))
    arguments = parser.parse_args()
    params = load_params(arguments.params)
    require_file(arguments.model)
    import keras

    normalization = Normalization.load(arguments.normalization)
    inputs = {"model": arguments.model, "raw_data": arguments.raw}
    onnx_bytes, report, verdict = gated_export(
        keras.models.load_model(arguments.model),
        normalization,
        load_npz(arguments.raw).x_test,
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
            f"{arguments.output} is left as it was"
        )
    # With no model in the workspace, a refused one is written all the same: DVC needs the
    # output and the run must be recorded. Its metadata carries the refusal, so serving
    # refuses it, and released: false keeps the registry from registering it.
    replace = verdict.released or not arguments.output.is_file()
    if verdict.released:
        served = onnx_bytes
    elif replace:
        served = marked_refused(onnx_bytes, verdict)
        logger.warning(
            "%s did not exist: it now holds the refused model, marked as refused (serving "
            "refuses it); recorded, not registered",
            arguments.output,
        )
    else:
        served = arguments.output.read_bytes()
    if replace:
        with atomic_file(arguments.output) as temporary:
            temporary.write_bytes(served)
    write_json(
        arguments.report,
        {
            **report.as_json(),
            **verdict.as_json(),
            "opset": params.export.opset,
            # What consumers verify the served model against (the inbox flow does), and the
            # candidate's own hash, which differs when the gates kept the previous model.
            "onnx_sha256": hashlib.sha256(served).hexdigest(),
            "candidate_onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
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


if __name__ == "__main__":
    run_stage(main)
