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
from typing import Literal

import numpy as np

from mnistflow.constants import INPUT_NAME, OUTPUT_NAME, REFUSED_KEY
from mnistflow.errors import PipelineInputError
from mnistflow.hashing import sha256_of_file
from mnistflow.params import Int8Params
from mnistflow.serving.gates import Verdict

logger = logging.getLogger(__name__)

PRECISION_KEY = "precision"
QUANTIZED_FROM_KEY = "quantized_from_sha256"
CALIBRATION_KEY = "calibration"
CALIBRATION_BATCH = 100
GATE_BATCH = 1024
# CPU flags (Linux names) of integer dot-product units onnxruntime's u8×s8 kernels use.
CPU_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
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
    already canonical (mnistflow.serving.export)."""
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
    kept = [entry for entry in quantized.metadata_props if entry.key not in TOOL_METADATA]
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(kept)
    quantized.metadata_props.add(key=PRECISION_KEY, value="int8")
    quantized.metadata_props.add(
        key=QUANTIZED_FROM_KEY, value=hashlib.sha256(fp32_bytes).hexdigest()
    )
    quantized.metadata_props.add(
        key=CALIBRATION_KEY,
        value=json.dumps(
            {"images": len(calibration), "split": "train", "method": "minmax"}, sort_keys=True
        ),
    )
    return quantized.SerializeToString()


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
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )
    started = time.perf_counter()
    probabilities = np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: images[start : start + GATE_BATCH]})[0]
            for start in range(0, len(images), GATE_BATCH)
        ]
    )
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


def int8_path_for(fp32_path: Path) -> Path:
    """Where the int8 model of `fp32_path` lives: models/model.onnx -> models/model.int8.onnx."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(f"{fp32_path.stem}.int8{fp32_path.suffix}")


def fp32_path_for(int8_path: Path) -> Path:
    """The float32 model an int8 file pairs with: models/model.int8.onnx -> models/model.onnx."""
    int8_path = Path(int8_path)
    stem = int8_path.stem.removesuffix(".int8")
    return int8_path.with_name(f"{stem}{int8_path.suffix}")


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


Precision = Literal["auto", "int8", "fp32"]
# Where export records the hashes of the pair it wrote, relative to the project.
EXPORT_REPORT = Path("reports") / "export.json"


@dataclass(frozen=True)
class ServedPrecision:
    path: Path
    precision: Literal["int8", "fp32"]
    why: str
    # The sha256 the served bytes must have (an int8 model: the one export recorded), so a file
    # swapped between this choice and the session's load is refused, not served.
    sha256: str | None = None


def choose_precision(
    model_path: Path,
    precision: Precision,
    device: str = "cpu",
    cpu_flags: frozenset[str] = frozenset(),
) -> ServedPrecision:
    """The model file to serve for `precision`: the file as given, or its int8 sibling.

    `auto` takes the int8 model when one is released beside the float32 one (made from those
    very bytes, not refused by its gate) and the CPU has integer dot-product units (VNNI or
    AMX): there it is the faster at every batch size (benchmarks/results/precision.md) and its
    gate bounds the accuracy it may lose. Without them onnxruntime's u8×s8 kernels can
    saturate 16-bit intermediates, so the gate's figures, measured on such a CPU, would not
    hold; a GPU runs the float32 model."""
    model_path = Path(model_path)
    if _metadata(model_path).get(PRECISION_KEY) == "int8":
        if precision == "fp32":
            raise PipelineInputError(
                f"--precision fp32: {model_path} is an int8 model; give the float32 file"
            )
        # Given directly, an int8 file is still served only as half of the pair export
        # released, never on its own metadata's word.
        fp32_path = fp32_path_for(model_path)
        problem = int8_problem(fp32_path, model_path)
        if problem is not None:
            raise PipelineInputError(
                f"{model_path} is an int8 model, served only as export released it beside "
                f"{fp32_path.name}: {problem}"
            )
        return ServedPrecision(
            model_path, "int8", "the file given is int8", released_int8_sha256(fp32_path)
        )
    if precision == "fp32":
        return ServedPrecision(model_path, "fp32", "asked for")
    int8_path = int8_path_for(model_path)
    problem = int8_problem(model_path, int8_path)
    if precision == "auto" and problem is None:
        problem = _int8_hardware_problem(device, cpu_flags)
    if problem is None:
        why = "asked for" if precision == "int8" else "the fastest released (auto)"
        return ServedPrecision(int8_path, "int8", why, released_int8_sha256(model_path))
    if precision == "int8":
        raise PipelineInputError(f"--precision int8: {problem}; use --precision fp32")
    return ServedPrecision(model_path, "fp32", f"auto: {problem}")


def _int8_hardware_problem(device: str, cpu_flags: frozenset[str]) -> str | None:
    if device != "cpu":
        return f"the int8 model is for CPUs, not {device}"
    if not cpu_flags & CPU_INT8_FLAGS:
        return "this CPU has no VNNI or AMX int8 units"
    return None


def _metadata(path: Path) -> dict[str, str]:
    """The ONNX file's metadata; empty when it is absent or unreadable (serving says why)."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises protobuf's and its own errors
        return {}
    return {entry.key: entry.value for entry in model.metadata_props}


def int8_problem(fp32_path: Path, int8_path: Path) -> str | None:
    """Why `int8_path` may not be served for `fp32_path`; None when it may."""
    if not int8_path.is_file():
        return f"no int8 model at {int8_path}"
    if not fp32_path.is_file():
        return f"{fp32_path} does not exist"
    metadata = _metadata(int8_path)
    if not metadata:
        return f"{int8_path} is not a readable ONNX model"
    if REFUSED_KEY in metadata:
        return f"{int8_path} was refused by its gate ({metadata[REFUSED_KEY]})"
    fp32_sha256 = sha256_of_file(fp32_path)
    if metadata.get(QUANTIZED_FROM_KEY) != fp32_sha256:
        return f"{int8_path} was not made from {fp32_path} (another export)"
    # The int8 file's own metadata is its own word: the pair is served only as export
    # recorded it, both hashes in the project's reports/export.json.
    report = export_report_for(fp32_path)
    recorded = _recorded_pair(report)
    if recorded is None:
        return f"no export report ({report}) records an int8 model for {fp32_path}"
    if recorded != (fp32_sha256, sha256_of_file(int8_path)):
        return f"{int8_path} and {fp32_path} are not the pair {report} records"
    return None


def export_report_for(fp32_path: Path) -> Path:
    """The export report of the project a models/model.onnx belongs to: found by where the
    path says the model is, not through links (a link to another project's model must not
    borrow that project's report)."""
    return Path(fp32_path).absolute().parent.parent / EXPORT_REPORT


def released_int8_sha256(fp32_path: Path) -> str | None:
    """The int8 sha256 the export report records as released beside `fp32_path`."""
    recorded = _recorded_pair(export_report_for(fp32_path))
    return recorded[1] if recorded else None


def _recorded_pair(report: Path) -> tuple[str, str] | None:
    """(float32 sha256, int8 sha256) as the export report records them, the int8 released."""
    import json

    try:
        content = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    int8 = content.get("int8") if isinstance(content, dict) else None
    if not isinstance(int8, dict) or int8.get("released") is not True:
        return None
    fp32_sha256, int8_sha256 = content.get("onnx_sha256"), int8.get("onnx_sha256")
    if not isinstance(fp32_sha256, str) or not isinstance(int8_sha256, str):
        return None
    return fp32_sha256, int8_sha256
