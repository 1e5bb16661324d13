"""Export: the ONNX file's contract, and both gates tripping on real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from stages.errors import PipelineInputError
from stages.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportParams,
    MinAccuracyParams,
    committed_metric,
    convert,
    export,
    parity,
    parity_failures,
    quality_gate,
)

METADATA = {"class_names": json.dumps([str(d) for d in range(10)]), "training_data_md5": "{}"}


@pytest.fixture(scope="module")
def trained(small_trained_cnn, mnist_slice):
    return small_trained_cnn, mnist_slice.x_test[:500]


def test_onnx_contract_and_parity(trained):
    model, images = trained
    proto = convert(model, 17, METADATA)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.opset_import[0].version == 17
    assert {p.key: p.value for p in proto.metadata_props}["class_names"] == METADATA["class_names"]
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    # Dynamic batch dimension: any batch size works.
    for batch in (1, 7, 500):
        assert session.run(None, {INPUT_NAME: images[:batch]})[0].shape == (batch, 10)
    report = parity(model, proto.SerializeToString(), images)
    assert report.argmax_agreement == 1.0
    assert report.max_abs_diff <= 1e-5
    assert parity_failures(report, ExportParams()) == []


def test_parity_gate_trips_on_a_perturbed_weight(trained):
    model, images = trained
    onnx_bytes = convert(model, 17, METADATA).SerializeToString()
    weights = model.get_weights()
    perturbed = [w.copy() for w in weights]
    perturbed[-2][0, 3] += 0.05  # one weight of the output layer, after export
    model.set_weights(perturbed)
    try:
        report = parity(model, onnx_bytes, images)
    finally:
        model.set_weights(weights)
    failures = parity_failures(report, ExportParams())
    assert report.max_abs_diff > 1e-5
    assert any("exceeds export.max_abs_diff" in failure for failure in failures)


def test_quality_gate_refuses_a_worse_model(trained):
    model, images = trained
    params = ExportParams(min_accuracy=MinAccuracyParams(cnn=0.5), max_accuracy_drop=0.002)
    assert quality_gate(0.98, 0.981, params) == []
    with pytest.raises(PipelineInputError) as caught:
        export(model, images, 0.95, 0.99, params, METADATA)
    message = str(caught.value)
    assert "0.9500" in message and "0.9900" in message and "allow_regression" in message
    with pytest.raises(PipelineInputError, match="below export.min_accuracy.cnn 0.9900"):
        export(model, images, 0.9, None, ExportParams(), METADATA)
    # The deliberate override exports anyway.
    onnx_bytes, report = export(
        model, images, 0.95, 0.99, ExportParams(allow_regression=True), METADATA
    )
    assert onnx_bytes and report.argmax_agreement == 1.0


def test_export_stage_keeps_previous_model_when_gate_fails(trained, tmp_path):
    import subprocess
    import sys

    from mnistflow import PROJECT_ROOT

    model, images = trained
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    raw = tmp_path / "mnist.npz"
    np.savez(raw, x_test=images)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.5}))
    params = tmp_path / "params.yaml"
    params.write_text("export:\n  min_accuracy:\n    cnn: 0.99\n")
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"previous model")
    result = subprocess.run(
        [sys.executable, "-m", "stages.export", "--params", str(params), "--model",
         str(model_path), "--raw", str(raw), "--metrics", str(metrics), "--lock",
         str(tmp_path / "dvc.lock"), "--output", str(onnx_path), "--report",
         str(tmp_path / "export.json")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "quality gate refused the model: test accuracy 0.5000" in result.stderr
    assert onnx_path.read_bytes() == b"previous model"
    assert not (tmp_path / "export.json").exists()


def test_regression_baseline_is_the_committed_model_of_the_same_family(tmp_path, monkeypatch):
    import subprocess

    def git(*arguments):
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "params.yaml").write_text("model:\n  name: cnn\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.993}))
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", "cnn")
    monkeypatch.chdir(tmp_path)
    params, metrics = Path("params.yaml"), Path("metrics.json")
    assert committed_metric(metrics, "accuracy", params, "cnn") == 0.993
    # An MLP experiment is not a regression of the committed CNN ...
    assert committed_metric(metrics, "accuracy", params, "mlp") is None
    assert quality_gate(0.978, None, ExportParams(), "mlp") == []
    # ... but it still has its own floor.
    assert "export.min_accuracy.mlp 0.9700" in quality_gate(0.95, None, ExportParams(), "mlp")[0]
