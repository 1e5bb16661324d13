"""Export stage: models/model.keras → models/model.onnx, behind a quality gate and a parity gate.

Normalisation lives inside the ONNX graph: its input `image` is uint8 0..255 shaped
(N, 28, 28), whatever the model family, so a caller cannot feed the wrong scale or layout.
Its output `probabilities` is float32 (N, 10). The file carries metadata: class names,
input layout and scale, the run's params and the training data's hash from dvc.lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stages.atomic import atomic_file, write_json
from stages.errors import PipelineInputError, run_stage
from stages.git_history import committed_json, committed_yaml
from stages.model import model_name_in
from stages.params import load_section, read_params_file

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
CLASS_NAMES = [str(digit) for digit in range(10)]
INPUT_DESCRIPTION = "uint8 (N, 28, 28), pixels 0..255, light digit on dark background"


@dataclass(frozen=True)
class MinAccuracyParams:
    """The test accuracy floor of each model family: a weaker family is still worth an
    experiment (`dvc exp run -S model.name=mlp`), but must not fall below what it reaches."""

    cnn: float = 0.99
    mlp: float = 0.97
    softmax: float = 0.91


@dataclass(frozen=True)
class ExportParams:
    opset: int = 17
    # Parity gate: onnxruntime vs Keras on the whole test set.
    max_abs_diff: float = 1e-5
    # Quality gate ("blessing"): the test accuracy the model must reach, and how far below the
    # last committed reports/metrics.json (of the same model family) it may fall.
    min_accuracy: MinAccuracyParams = field(default_factory=MinAccuracyParams)
    max_accuracy_drop: float = 0.002
    # Set true to export a deliberate regression anyway; recorded in dvc.lock like any param.
    allow_regression: bool = False


@dataclass(frozen=True)
class ParityReport:
    argmax_agreement: float
    max_abs_diff: float
    images: int
    keras_seconds: float
    onnxruntime_seconds: float


def quality_gate(
    accuracy: float,
    committed_accuracy: float | None,
    params: ExportParams,
    model_name: str = "cnn",
) -> list[str]:
    """The reasons to refuse the model; empty when it may be exported."""
    reasons = []
    floor = getattr(params.min_accuracy, model_name)
    if accuracy < floor:
        reasons.append(
            f"test accuracy {accuracy:.4f} is below export.min_accuracy.{model_name} {floor:.4f}"
        )
    if committed_accuracy is not None and accuracy < committed_accuracy - params.max_accuracy_drop:
        reasons.append(
            f"test accuracy {accuracy:.4f} is {committed_accuracy - accuracy:.4f} below the last "
            f"committed {committed_accuracy:.4f} (export.max_accuracy_drop "
            f"{params.max_accuracy_drop:.4f})"
        )
    return reasons


def committed_metric(path: Path, key: str, params_path: Path, model_name: str) -> float | None:
    """`key` of `path` as committed at git HEAD if HEAD's params train the same model family;
    None outside git, before a first commit, or when HEAD's model differs (no like-for-like
    baseline: a softmax experiment is not a regression of the committed CNN)."""
    committed_params = committed_yaml(params_path)
    if committed_params and model_name_in(committed_params) != model_name:
        return None
    try:
        return float(committed_json(path)[key])
    except (KeyError, TypeError, ValueError):
        return None


def serving_function(model):
    """A tf.function taking uint8 (N, 28, 28) that normalises and reshapes for `model`."""
    import tensorflow as tf

    model_input_shape = tuple(model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28), tf.uint8, name=INPUT_NAME)])
    def serve(image):
        scaled = tf.cast(image, tf.float32) / 255.0
        return {OUTPUT_NAME: model(tf.reshape(scaled, (-1, *model_input_shape)), training=False)}

    return serve


def convert(model, opset: int, metadata: dict[str, str]):
    """The ONNX ModelProto for `model`, with `metadata` as metadata_props."""
    import tf2onnx

    serve = serving_function(model)
    # from_keras fails on Keras 3 models (DESIGN.md section 4); a tf.function converts cleanly.
    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=opset
    )
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "mnistflow MNIST classifier; see metadata_props for the input contract"
    return proto


def parity(model, onnx_bytes: bytes, images: np.ndarray) -> ParityReport:
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    onnx_probabilities = np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: images[start : start + 1024]})[0]
            for start in range(0, len(images), 1024)
        ]
    )
    onnx_seconds = time.perf_counter() - started
    keras_input = (images.astype(np.float32) / np.float32(255)).reshape(-1, *model.input_shape[1:])
    started = time.perf_counter()
    keras_probabilities = model.predict(keras_input, batch_size=1024, verbose=0)
    keras_seconds = time.perf_counter() - started
    return ParityReport(
        argmax_agreement=float(
            (onnx_probabilities.argmax(axis=1) == keras_probabilities.argmax(axis=1)).mean()
        ),
        max_abs_diff=float(np.abs(onnx_probabilities - keras_probabilities).max()),
        images=len(images),
        keras_seconds=round(keras_seconds, 3),
        onnxruntime_seconds=round(onnx_seconds, 3),
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


def training_data_hashes(lock_path: Path) -> dict[str, str]:
    try:
        lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    except OSError:
        return {}
    hashes = {}
    for stage in ("ingest", "prepare"):
        for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
            hashes[out["path"]] = out.get("md5", "")
    return hashes


def run_metadata(all_params: dict[str, Any], lock_path: Path) -> dict[str, str]:
    return {
        "class_names": json.dumps(CLASS_NAMES),
        "input_name": INPUT_NAME,
        "input_layout": INPUT_DESCRIPTION,
        "input_scale": "0..255 (uint8); the graph divides by 255",
        "output_name": OUTPUT_NAME,
        "params": json.dumps(
            {key: all_params.get(key) for key in ("data", "prepare", "model", "train")},
            sort_keys=True,
        ),
        "training_data_md5": json.dumps(training_data_hashes(lock_path), sort_keys=True),
    }


def export(
    model,
    test_images: np.ndarray,
    accuracy: float,
    committed_accuracy: float | None,
    params: ExportParams,
    metadata: dict[str, str],
    model_name: str = "cnn",
) -> tuple[bytes, ParityReport]:
    """Gate, convert and check; raise PipelineInputError with the figures when a gate fails."""
    refusals = quality_gate(accuracy, committed_accuracy, params, model_name)
    if refusals and not params.allow_regression:
        raise PipelineInputError(
            "quality gate refused the model: "
            + "; ".join(refusals)
            + ". The previous models/model.onnx is kept; set export.allow_regression: true "
            "to export it deliberately."
        )
    for refusal in refusals:
        logger.warning("exporting despite the quality gate (allow_regression): %s", refusal)
    onnx_bytes = convert(model, params.opset, metadata).SerializeToString()
    report = parity(model, onnx_bytes, test_images)
    failures = parity_failures(report, params)
    if failures:
        raise PipelineInputError(
            "parity gate failed: "
            + "; ".join(failures)
            + ". The previous models/model.onnx is kept."
        )
    return onnx_bytes, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw/mnist.npz"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"))
    parser.add_argument("--output", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--report", type=Path, default=Path("reports/export.json"))
    arguments = parser.parse_args()
    import keras

    params = load_section(ExportParams, "export", arguments.params)
    model = keras.models.load_model(arguments.model)
    with np.load(arguments.raw, allow_pickle=False) as raw:
        test_images = raw["x_test"]
    accuracy = float(json.loads(arguments.metrics.read_text(encoding="utf-8"))["accuracy"])
    all_params = read_params_file(arguments.params)
    model_name = model_name_in(all_params)
    onnx_bytes, report = export(
        model,
        test_images,
        accuracy,
        committed_metric(arguments.metrics, "accuracy", arguments.params, model_name),
        params,
        run_metadata(all_params, arguments.lock),
        model_name,
    )
    with atomic_file(arguments.output) as temporary:
        temporary.write_bytes(onnx_bytes)
    write_json(arguments.report, {**report.__dict__, "opset": params.opset})
    logger.info(
        "exported %s: argmax agreement %.4f, max abs diff %.2g on %d test images",
        arguments.output,
        report.argmax_agreement,
        report.max_abs_diff,
        report.images,
    )


if __name__ == "__main__":
    run_stage(main)
