"""The int8 model: onnxruntime's static quantization, its gate, and serving it by precision."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from mnistflow.cli import app
from mnistflow.compute.cpu_features import detect_cpu_flags
from mnistflow.constants import PRECISION_KEY, QUANTIZED_FROM_KEY, REFUSED_KEY
from mnistflow.data.normalization import Normalization
from mnistflow.errors import PipelineInputError
from mnistflow.params import Int8Params
from mnistflow.release.gates import Verdict
from mnistflow.release.quantization import (
    Int8Report,
    calibration_images,
    compare_int8,
    gated_int8,
    int8_refusals,
    quantize_int8,
)
from mnistflow.serving.precision import CPU_INT8_FLAGS, choose_precision, int8_path_for
from tests.project_root import PROJECT_ROOT

SCALE = Normalization(kind="scale", offset=0.0, scale=255.0)
VNNI = frozenset({"avx512_vnni"})
# What `mnistflow predict --precision auto` picks on this machine's CPU.
AUTO_HERE = "int8" if detect_cpu_flags() & CPU_INT8_FLAGS else "fp32"


def metadata_of(model_bytes: bytes) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_model_from_string(model_bytes).metadata_props}


@pytest.fixture(scope="module")
def fp32_bytes(small_onnx_model) -> bytes:
    return small_onnx_model.read_bytes()


@pytest.fixture(scope="module")
def int8_bytes(fp32_bytes, mnist_slice) -> bytes:
    return quantize_int8(fp32_bytes, calibration_images(mnist_slice.x_train, Int8Params()))


def test_calibration_is_a_seeded_sample_of_training_images(mnist_slice):
    params = Int8Params(calibration_images=300, calibration_seed=3)
    sample = calibration_images(mnist_slice.x_train, params)
    assert sample.shape == (300, 28, 28) and sample.dtype == np.uint8
    assert np.array_equal(sample, calibration_images(mnist_slice.x_train, params))
    train_rows = {image.tobytes() for image in mnist_slice.x_train}
    assert all(image.tobytes() in train_rows for image in sample)
    other = calibration_images(mnist_slice.x_train, Int8Params(calibration_images=300))
    assert not np.array_equal(sample, other)


def test_the_int8_model_is_quantized_deterministic_and_close(fp32_bytes, int8_bytes, mnist_slice):
    graph = onnx.load_model_from_string(int8_bytes).graph
    operators = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "no int8 weights in the quantized graph"
    # The softmax stays float: probabilities keep their resolution.
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    assert all(
        node.op_type != "QuantizeLinear" or softmax.output[0] not in node.input
        for node in graph.node
    )
    metadata = metadata_of(int8_bytes)
    assert metadata[PRECISION_KEY] == "int8"
    assert metadata[QUANTIZED_FROM_KEY] == hashlib.sha256(fp32_bytes).hexdigest()
    assert "onnx.quant.pre_process" not in metadata
    assert metadata["class_names"] == metadata_of(fp32_bytes)["class_names"]
    again = quantize_int8(fp32_bytes, calibration_images(mnist_slice.x_train, Int8Params()))
    assert again == int8_bytes

    report = compare_int8(fp32_bytes, int8_bytes, mnist_slice.x_test, mnist_slice.y_test, 1000)
    assert report.images == 1000 and report.argmax_agreement > 0.97
    assert abs(report.accuracy_drop) < 0.02 and report.fp32_accuracy > 0.8


def test_the_gate_refuses_an_int8_model_that_loses_accuracy(fp32_bytes, mnist_slice):
    """Calibrated on blank images, every activation range collapses: the real gate refuses."""
    blank = type(mnist_slice)(
        np.zeros_like(mnist_slice.x_train[:200]),
        mnist_slice.y_train[:200],
        mnist_slice.x_test,
        mnist_slice.y_test,
    )
    _, report, verdict = gated_int8(fp32_bytes, blank, Int8Params(), Verdict(True))
    assert report.accuracy_drop > 0.002
    assert not verdict.released
    assert "export.int8.max_accuracy_drop 0.0020" in verdict.describe()
    # Never released beside a refused float32 model, however good.
    _, _, paired = gated_int8(fp32_bytes, mnist_slice, Int8Params(max_accuracy_drop=1.0),
                              Verdict(False, ("quality: low",)))  # fmt: skip
    assert not paired.released and "float32 model it was made from" in paired.describe()


def test_the_refusal_is_the_drop_against_the_bound():
    def report(accuracy: float) -> Int8Report:
        return Int8Report(accuracy, 0.99, 0.99, 0.1, 10000, 1000, 0.1, 0.2)

    params = Int8Params(max_accuracy_drop=0.002)
    assert int8_refusals(report(0.989), params) == []
    assert int8_refusals(report(0.995), params) == []  # better than float32
    (reason,) = int8_refusals(report(0.9879), params)
    assert "0.0021 below float32's 0.9900" in reason


def test_a_failed_quantization_is_a_refusal_not_a_crash(mnist_slice):
    int8_bytes, report, verdict = gated_int8(b"not onnx", mnist_slice, Int8Params(), Verdict(True))
    assert int8_bytes is None and report is None
    assert not verdict.released and "int8 quantization failed" in verdict.describe()


def record_pair(project: Path, fp32: bytes, int8: bytes, released: bool = True) -> None:
    """reports/export.json as the export stage writes it for this pair."""
    report = project / "reports" / "export.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({
        "onnx_sha256": hashlib.sha256(fp32).hexdigest(),
        "int8": {"released": released, "onnx_sha256": hashlib.sha256(int8).hexdigest()},
    }))  # fmt: skip


def test_precision_choice_follows_what_was_released(fp32_bytes, int8_bytes, tmp_path):
    (tmp_path / "models").mkdir()
    fp32_path = tmp_path / "models" / "model.onnx"
    fp32_path.write_bytes(fp32_bytes)
    record_pair(tmp_path, fp32_bytes, int8_bytes)
    assert choose_precision(fp32_path, "auto", "cpu", VNNI).precision == "fp32"  # none beside
    with pytest.raises(PipelineInputError, match="--precision int8: no int8 model at"):
        choose_precision(fp32_path, "int8", "cpu", VNNI)
    int8_path = int8_path_for(fp32_path)
    assert int8_path.name == "model.int8.onnx"
    int8_path.write_bytes(int8_bytes)
    chosen = choose_precision(fp32_path, "auto", "cpu", VNNI)
    assert (chosen.path, chosen.precision) == (int8_path, "int8")
    assert choose_precision(fp32_path, "fp32", "cpu", VNNI).path == fp32_path
    # No integer dot-product units, or a GPU: auto serves float32; int8 is still there to ask.
    assert "no VNNI or AMX" in choose_precision(fp32_path, "auto", "cpu", frozenset()).why
    assert choose_precision(fp32_path, "auto", "cuda", VNNI).precision == "fp32"
    assert choose_precision(fp32_path, "int8", "cpu", frozenset()).path == int8_path
    # The int8 file itself, given: served as int8, never passed off as float32, and pinned to
    # the hash export recorded (a swap before the session loads it is refused).
    given = choose_precision(int8_path, "auto")
    assert given.precision == "int8" and given.sha256 == hashlib.sha256(int8_bytes).hexdigest()
    assert chosen.sha256 == given.sha256
    with pytest.raises(PipelineInputError, match="is an int8 model"):
        choose_precision(int8_path, "fp32")
    # Given directly but not released beside its float32 model (a copy elsewhere, or through
    # a link into this project): refused, not served on its own metadata's word.
    (tmp_path / "elsewhere" / "models").mkdir(parents=True)
    alone = tmp_path / "elsewhere" / "models" / "model.int8.onnx"
    alone.write_bytes(int8_bytes)
    with pytest.raises(PipelineInputError, match="served only as export released"):
        choose_precision(alone, "auto")
    (tmp_path / "elsewhere" / "models" / "model.onnx").symlink_to(fp32_path)
    with pytest.raises(PipelineInputError, match="no export report"):
        choose_precision(alone, "int8")
    # An int8 file whose own metadata claims the pair, but not the one export recorded.
    record_pair(tmp_path, fp32_bytes, int8_bytes + b"\x00")
    assert "not the pair" in choose_precision(fp32_path, "auto", "cpu", VNNI).why
    (tmp_path / "reports" / "export.json").unlink()
    assert "no export report" in choose_precision(fp32_path, "auto", "cpu", VNNI).why
    record_pair(tmp_path, fp32_bytes, int8_bytes)
    # Another float32 export beside an old int8 file: they do not pair.
    fp32_path.write_bytes(fp32_bytes + b"\x00")
    assert "was not made from" in choose_precision(fp32_path, "auto", "cpu", VNNI).why


def run_export(tmp_path, raw, params_text: str) -> subprocess.CompletedProcess:
    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    return subprocess.run(
        [sys.executable, "-m", "stages.export", "--params", str(params), "--model",
         str(tmp_path / "model.keras"), "--normalization", str(tmp_path / "normalization.json"),
         "--raw", str(raw), "--metrics", str(tmp_path / "metrics.json"), "--validation",
         str(tmp_path / "validation.json"), "--baseline", str(tmp_path / "baseline.json"),
         "--output", str(tmp_path / "models" / "model.onnx"), "--int8-output",
         str(tmp_path / "models" / "model.int8.onnx"), "--outcomes",
         str(tmp_path / "reports" / "test_outcomes.json"), "--report",
         str(tmp_path / "reports" / "export.json")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_export_stage_serves_int8_beside_float32_only_through_its_gate(
    small_trained_cnn, mnist_slice, tmp_path
):
    small_trained_cnn.save(tmp_path / "model.keras")
    SCALE.save(tmp_path / "normalization.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.95}))
    (tmp_path / "baseline.json").write_text("{}")
    (tmp_path / "validation.json").write_text(json.dumps({"bounds": []}))
    raw = tmp_path / "mnist.npz"
    np.savez(raw, **mnist_slice.as_npz_dict())
    released_params = (
        "export:\n  min_accuracy:\n    cnn: 0.5\n  int8:\n    max_accuracy_drop: 0.05\n"
    )
    # The project's layout: serving pairs the two models as reports/export.json records them.
    fp32_path = tmp_path / "models" / "model.onnx"
    int8_path = tmp_path / "models" / "model.int8.onnx"
    export_report = tmp_path / "reports" / "export.json"

    released = run_export(tmp_path, raw, released_params)
    assert released.returncode == 0, released.stderr
    report = json.loads(export_report.read_text())
    assert report["released"] and report["int8"]["released"], report
    assert report["int8"]["images"] == 1000 and report["int8"]["calibration_images"] == 1000
    assert report["int8"]["onnx_sha256"] == hashlib.sha256(int8_path.read_bytes()).hexdigest()
    assert metadata_of(int8_path.read_bytes())[QUANTIZED_FROM_KEY] == report["onnx_sha256"]

    digits = tmp_path / "digits.npy"
    np.save(digits, mnist_slice.x_test[:10])

    def predict(*options: str):
        return CliRunner().invoke(
            app, ["predict", str(digits), "-o", str(tmp_path / "out.csv"), "--model",
                  str(fp32_path), "--no-progress", *options],
        )  # fmt: skip

    auto = predict()
    assert auto.exit_code == 0, auto.output
    if AUTO_HERE == "int8":
        assert f"model: {int8_path} (int8; the fastest released (auto))" in auto.output
        int8_sha = hashlib.sha256(int8_path.read_bytes()).hexdigest()
        assert int8_sha in (tmp_path / "out.csv").read_text()
    else:
        assert "(fp32; auto: this CPU has no VNNI or AMX int8 units)" in auto.output
    assert "(fp32; asked for)" in predict("--precision", "fp32").output
    assert "(int8; asked for)" in predict("--precision", "int8").output

    # A refused float32 model: export writes the refused candidates (a pure function of its
    # inputs), the int8 one refused beside it; serving refuses both.
    kept = run_export(tmp_path, raw, "export:\n  min_accuracy:\n    cnn: 0.99\n")
    assert kept.returncode == 0, kept.stderr
    report = json.loads(export_report.read_text())
    assert not report["released"] and not report["int8"]["released"]
    assert REFUSED_KEY in metadata_of(fp32_path.read_bytes())
    assert predict("--precision", "int8").exit_code == 2
    assert predict().exit_code == 2

    # Training images that are blank calibrate nothing: the int8 gate refuses, float32 is
    # still released, and serving falls back to it.
    blank = tmp_path / "blank.npz"
    np.savez(blank, **{**mnist_slice.as_npz_dict(), "x_train": np.zeros_like(mnist_slice.x_train)})
    refused = run_export(tmp_path, blank, released_params.replace("0.05", "0.002"))
    assert refused.returncode == 0, refused.stderr
    report = json.loads(export_report.read_text())
    assert report["released"] and not report["int8"]["released"]
    assert "export.int8.max_accuracy_drop" in report["int8"]["verdict"]
    assert REFUSED_KEY in metadata_of(int8_path.read_bytes())
    fallback = predict()
    assert fallback.exit_code == 0 and "(fp32; auto: " in fallback.output
    forced = predict("--precision", "int8")
    assert forced.exit_code == 2 and "refused by its gate" in forced.output

    # A refused float32 model with no int8 file yet: one is written, marked refused.
    int8_path.unlink()
    first = run_export(tmp_path, raw, "export:\n  min_accuracy:\n    cnn: 0.99\n")
    assert first.returncode == 0, first.stderr
    assert REFUSED_KEY in metadata_of(int8_path.read_bytes())
