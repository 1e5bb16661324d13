"""An int8 ONNX model next to the float32 one: onnxruntime's static quantization, calibrated on
training images, released only through its own gate.

Static quantization (onnxruntime.quantization.quantize_static, QDQ format) stores weights as
int8 per output channel and activations as uint8 with scales fixed by calibration, so on CPUs
with AVX-512 VNNI the convolutions and the dense layers run as integer kernels (QLinearConv,
QGemm). Activations are uint8 and weights int8 ("U8S8"), the combination onnxruntime's x86
kernels are fastest at. Every op the quantizer knows is quantized (pooling, reshapes and
transposes then move one byte per value instead of four) except the softmax: probabilities
keep float32 resolution, so top-k lists and scores stay meaningful.

The gate compares the int8 model with the float32 one on the whole test set, both run by
onnxruntime: the accuracy drop must stay within `export.int8.max_accuracy_drop`. Calibration
uses training images only (a seeded sample), never the test images that judge it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import INPUT_NAME, NUM_CLASSES, PRECISION_KEY, QUANTIZED_FROM_KEY
from mnistflow.core.onnx_metadata import replace_metadata
from mnistflow.core.onnx_runs import batched_outputs, cpu_session
from mnistflow.params import Int8Params
from mnistflow.release.gates import Verdict

logger = logging.getLogger(__name__)

CALIBRATION_KEY = "calibration"
CALIBRATION_BATCH = 100
GATE_BATCH = 1024
# Metadata keys onnxruntime's tools add about themselves; the model's own contract stays.
TOOL_METADATA = ("onnx.infer", "onnx.quant.pre_process")


def calibration_images(train_images: np.ndarray, params: Int8Params) -> np.ndarray:
    """A seeded sample of training images (never test images) to fix activation ranges."""
    count = min(params.calibration_images, len(train_images))
    chosen = np.random.default_rng(params.calibration_seed).choice(
        len(train_images), size=count, replace=False
    )
    return np.ascontiguousarray(train_images[np.sort(chosen)])


def quantize_int8(fp32_bytes: bytes, calibration: np.ndarray) -> bytes:
    """The int8 (QDQ) model of `fp32_bytes`, with its metadata plus what it was made from.

    The same inputs on one CPU kind give the same bytes: MinMax calibration is a pure function
    of the images and of onnxruntime's float32 kernels, and the float32 graph's names are
    already canonical (mnistflow.release.export)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                [
                    {INPUT_NAME: calibration[start : start + CALIBRATION_BATCH]}
                    for start in range(0, len(calibration), CALIBRATION_BATCH)
                ]
            )

        def get_next(self):
            return next(self._batches, None)

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one training image")
    source = onnx.load_model_from_string(fp32_bytes)
    softmax_nodes = [node.name for node in source.graph.node if node.op_type == "Softmax"]
    # quant_pre_process reads and writes files, and quantize_static writes one; a private
    # folder keeps them and the calibration model out of the workspace.
    with tempfile.TemporaryDirectory(prefix="mnistflow-int8-") as folder:
        fp32_path, prepared, int8_path = (Path(folder) / name for name in ("a", "b", "c"))
        fp32_path.write_bytes(fp32_bytes)
        # Shape inference and constant folding, as onnxruntime recommends before quantizing;
        # symbolic shape inference would need sympy, and the graph's shapes are static anyway.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=softmax_nodes,
        )
        quantized = onnx.load_model(str(int8_path))
    _mark_int8(quantized, fp32_bytes, len(calibration))
    return quantized.SerializeToString()


def _mark_int8(quantized, fp32_bytes: bytes, calibration_images: int) -> None:
    """The int8 model's metadata: the float32 model's own, without the quantization tools'
    notes about themselves, plus its precision, its source's sha256 and its calibration."""
    calibration = {"images": calibration_images, "split": "train", "method": "minmax"}
    replace_metadata(
        quantized,
        drop=TOOL_METADATA,
        add=[
            (PRECISION_KEY, "int8"),
            (QUANTIZED_FROM_KEY, hashlib.sha256(fp32_bytes).hexdigest()),
            (CALIBRATION_KEY, json.dumps(calibration, sort_keys=True)),
        ],
    )


@dataclass(frozen=True)
class Int8Report:
    """The int8 model against the float32 one on the whole test set (both by onnxruntime)."""

    accuracy: float
    fp32_accuracy: float
    argmax_agreement: float  # with the float32 model
    max_abs_diff: float  # of the probabilities
    images: int
    calibration_images: int
    int8_seconds: float
    fp32_seconds: float

    @property
    def accuracy_drop(self) -> float:
        return round(self.fp32_accuracy - self.accuracy, 6)

    def as_json(self) -> dict:
        """What reports/export.json records (timings go to the log: they change every run)."""
        return {
            "accuracy": self.accuracy,
            "fp32_accuracy": self.fp32_accuracy,
            "accuracy_drop": self.accuracy_drop,
            "argmax_agreement": self.argmax_agreement,
            "max_abs_diff": self.max_abs_diff,
            "images": self.images,
            "calibration_images": self.calibration_images,
        }


def _probabilities(model_bytes: bytes, images: np.ndarray) -> tuple[np.ndarray, float]:
    session = cpu_session(model_bytes)
    started = time.perf_counter()
    probabilities = batched_outputs(session, images, GATE_BATCH, NUM_CLASSES)
    return probabilities, time.perf_counter() - started


def compare_int8(
    fp32_bytes: bytes,
    int8_bytes: bytes,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    calibration_count: int,
) -> Int8Report:
    if len(test_images) != len(test_labels) or len(test_images) == 0:
        raise ValueError(
            f"the int8 gate needs test images with their labels; got {len(test_images)} "
            f"images and {len(test_labels)} labels"
        )
    fp32, fp32_seconds = _probabilities(fp32_bytes, test_images)
    int8, int8_seconds = _probabilities(int8_bytes, test_images)
    labels = np.asarray(test_labels).astype(np.int64)
    return Int8Report(
        accuracy=round(float((int8.argmax(axis=1) == labels).mean()), 6),
        fp32_accuracy=round(float((fp32.argmax(axis=1) == labels).mean()), 6),
        argmax_agreement=round(float((int8.argmax(axis=1) == fp32.argmax(axis=1)).mean()), 6),
        max_abs_diff=round(float(np.abs(int8 - fp32).max()), 6),
        images=len(labels),
        calibration_images=calibration_count,
        int8_seconds=round(int8_seconds, 3),
        fp32_seconds=round(fp32_seconds, 3),
    )


def int8_refusals(report: Int8Report, params: Int8Params) -> list[str]:
    """Why the int8 model may not be served beside the float32 one; empty when it may."""
    if report.accuracy_drop > params.max_accuracy_drop:
        return [
            f"int8 test accuracy {report.accuracy:.4f} is {report.accuracy_drop:.4f} below "
            f"float32's {report.fp32_accuracy:.4f} (export.int8.max_accuracy_drop "
            f"{params.max_accuracy_drop:.4f})"
        ]
    return []


def gated_int8(
    fp32_bytes: bytes, raw, params: Int8Params, fp32_verdict: Verdict
) -> tuple[bytes | None, Int8Report | None, Verdict]:
    """Quantize the float32 candidate, compare it on the test set, and decide.

    `raw` holds the ingested splits (training images calibrate, test images judge). The int8
    model is always made and measured, so a refused one is recorded with the same figures; it
    is released only beside a released float32 model. A quantization that fails (an op the
    quantizer cannot handle) refuses the int8 model with the reason instead of failing the
    export, whose float32 model does not depend on it: (None, None, refusal)."""
    calibration = calibration_images(raw.x_train, params)
    try:
        int8_bytes = quantize_int8(fp32_bytes, calibration)
        report = compare_int8(fp32_bytes, int8_bytes, raw.x_test, raw.y_test, len(calibration))
    except Exception as error:  # noqa: BLE001 - onnxruntime's tools raise many kinds
        logger.exception("int8 quantization failed")
        reason = f"int8 quantization failed ({type(error).__name__}: {error})"
        return None, None, Verdict(False, (reason,))
    reasons = int8_refusals(report, params)
    if not fp32_verdict.released:
        reasons.append("the float32 model it was made from was not released")
    return int8_bytes, report, Verdict(not reasons, tuple(reasons))
