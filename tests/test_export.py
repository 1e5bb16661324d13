"""Export: the ONNX file's contract, the normalization inside it, and both gates tripping."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

from mnistflow.constants import INPUT_NAME, OUTPUT_NAME, REFUSED_KEY
from mnistflow.data.normalization import Normalization, fit_normalization
from mnistflow.errors import PipelineInputError
from mnistflow.params import ExportParams, MinAccuracyParams
from mnistflow.release.export import convert, gated_export
from mnistflow.release.gates import (
    AccuracyBaseline,
    decide,
    load_baseline,
    parity,
    parity_failures,
    quality_gate,
)
from mnistflow.serving.predict import Predictor
from tests.project_root import PROJECT_ROOT

METADATA = {"class_names": json.dumps([str(d) for d in range(10)])}
SCALE = Normalization(kind="scale", offset=0.0, scale=255.0)


@pytest.fixture(scope="module")
def trained(small_trained_cnn, mnist_slice):
    return small_trained_cnn, mnist_slice.x_test[:500]


def test_onnx_contract_and_parity(trained):
    model, images = trained
    proto = convert(model, SCALE, 17, METADATA)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.opset_import[0].version == 17
    assert {p.key: p.value for p in proto.metadata_props}["class_names"] == METADATA["class_names"]
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    # Dynamic batch dimension: any batch size works.
    for batch in (1, 7, 500):
        assert session.run(None, {INPUT_NAME: images[:batch]})[0].shape == (batch, 10)
    report = parity(model, proto.SerializeToString(), images, SCALE)
    assert report.argmax_agreement == 1.0
    assert report.max_abs_diff <= 1e-5
    assert parity_failures(report, ExportParams()) == []


def test_two_conversions_give_the_same_bytes(trained):
    """tf2onnx numbers generated names from a process-wide counter; the canonical names make
    the file a function of the model alone."""
    model, images = trained
    first = convert(model, SCALE, 17, METADATA).SerializeToString()
    second = convert(model, SCALE, 17, METADATA).SerializeToString()
    assert first == second
    proto = onnx.load_from_string(first)
    onnx.checker.check_model(proto)
    assert parity(model, first, images, SCALE).argmax_agreement == 1.0


def test_the_graph_applies_the_normalization_it_was_given(trained):
    """A fitted normalization travels into the graph: parity holds against Keras fed the same
    numpy normalization, and the graph's outputs differ from the fixed scale's."""
    model, images = trained
    standardize = fit_normalization("standardize", images)
    assert standardize.offset > 0 and standardize.scale > 1
    onnx_bytes = convert(model, standardize, 17, METADATA).SerializeToString()
    report = parity(model, onnx_bytes, images, standardize)
    assert report.max_abs_diff <= 1e-5 and report.argmax_agreement == 1.0
    standardized = onnxruntime.InferenceSession(onnx_bytes).run(None, {INPUT_NAME: images})[0]
    scaled_bytes = convert(model, SCALE, 17, METADATA).SerializeToString()
    scaled = onnxruntime.InferenceSession(scaled_bytes).run(None, {INPUT_NAME: images})[0]
    assert np.abs(standardized - scaled).max() > 1e-3


def test_parity_gate_trips_on_a_perturbed_weight(trained):
    model, images = trained
    onnx_bytes = convert(model, SCALE, 17, METADATA).SerializeToString()
    weights = model.get_weights()
    perturbed = [w.copy() for w in weights]
    # One bias of the output layer, after export (a kernel weight could meet a dead unit).
    perturbed[-1][3] += 0.05
    model.set_weights(perturbed)
    try:
        report = parity(model, onnx_bytes, images, SCALE)
    finally:
        model.set_weights(weights)
    failures = parity_failures(report, ExportParams())
    assert report.max_abs_diff > 1e-5
    assert any("exceeds export.max_abs_diff" in failure for failure in failures)


def test_the_gates_decide_release_with_their_reasons(trained):
    model, images = trained
    params = ExportParams(min_accuracy=MinAccuracyParams(cnn=0.5), max_accuracy_drop=0.002)
    baseline = AccuracyBaseline(model_name="cnn", accuracy=0.99)
    assert quality_gate(0.989, baseline, params, "cnn") == []
    onnx_bytes, report, verdict = gated_export(
        model, SCALE, images, 0.95, baseline, params, "cnn", METADATA
    )
    # Refused, yet converted and measured like a released model: the run is recorded whole.
    assert not verdict.released and onnx_bytes and report.argmax_agreement == 1.0
    assert "0.9500" in verdict.describe() and "baseline 0.9900" in verdict.describe()
    assert verdict.as_json()["released"] is False
    _, _, floor = gated_export(model, SCALE, images, 0.9, None, ExportParams(), "cnn", METADATA)
    assert "below export.min_accuracy.cnn 0.9900" in floor.describe()
    # The deliberate override releases, and says so.
    allowed = ExportParams(allow_regression=True)
    _, _, regression = gated_export(model, SCALE, images, 0.95, baseline, allowed, "cnn", METADATA)
    assert regression.released and "released despite" in regression.describe()
    # Parity refusals hold whatever allow_regression says.
    assert not decide([], ["argmaxes differ"], allowed).released


def test_a_baseline_of_another_family_is_not_compared():
    baseline = AccuracyBaseline(model_name="cnn", accuracy=0.993)
    # An MLP experiment is not a regression of the released CNN ...
    assert quality_gate(0.978, baseline, ExportParams(), "mlp") == []
    # ... but it still has its own floor.
    refusals = quality_gate(0.95, baseline, ExportParams(), "mlp")
    assert refusals == ["test accuracy 0.9500 is below export.min_accuracy.mlp 0.9700"]


def test_baseline_file(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text("{}")
    assert load_baseline(path) is None
    path.write_text(json.dumps({"model_name": "cnn", "accuracy": 0.99}))
    assert load_baseline(path) == AccuracyBaseline("cnn", 0.99)
    for content, message in [
        ({"model_name": "cnn"}, "accuracy None; expected a number in 0..1"),
        ({"model_name": "cnn", "accuracy": True}, "accuracy True; expected a number"),
        ({"model_name": "resnet", "accuracy": 0.9}, "model_name 'resnet'; expected one of cnn"),
    ]:
        path.write_text(json.dumps(content))
        with pytest.raises(PipelineInputError, match=f"{path}: {message}"):
            load_baseline(path)
    with pytest.raises(PipelineInputError, match="absent.json: missing"):
        load_baseline(tmp_path / "absent.json")


def test_export_stage_writes_a_refused_candidate_whatever_the_workspace_held(
    trained, mnist_slice, tmp_path
):
    model, _ = trained
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    raw = tmp_path / "mnist.npz"
    np.savez(raw, **mnist_slice.as_npz_dict())
    SCALE.save(tmp_path / "normalization.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    (tmp_path / "baseline.json").write_text("{}")
    # The bounds validation applied, which the model carries as its input checks.
    applied = [{"key": "min_max_pixel", "value": 200, "from": "reference"}]
    (tmp_path / "validation.json").write_text(json.dumps({"bounds": applied}))
    onnx_path = tmp_path / "model.onnx"

    def export(strict: bool):
        params = tmp_path / "params.yaml"
        params.write_text(
            f"export:\n  strict: {str(strict).lower()}\n  min_accuracy:\n    cnn: 0.99\n"
        )
        return subprocess.run(
            [sys.executable, "-m", "stages.export", "--params", str(params), "--model",
             str(model_path), "--normalization", str(tmp_path / "normalization.json"), "--raw",
             str(raw), "--metrics", str(tmp_path / "metrics.json"), "--validation",
             str(tmp_path / "validation.json"), "--baseline",
             str(tmp_path / "baseline.json"), "--output", str(onnx_path), "--int8-output",
             str(tmp_path / "model.int8.onnx"), "--report", str(tmp_path / "export.json")],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip

    # No model in the workspace yet: the refused candidate is written (DVC needs the output,
    # the run is recorded), marked as refused, and serving refuses it.
    first = export(strict=False)
    assert first.returncode == 0, first.stderr
    assert "marked as refused" in first.stderr
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["released"] is False
    assert report["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert metadata[REFUSED_KEY] == report["verdict"]
    assert json.loads(metadata["input_checks"])["min_max_pixel"] == 200
    with pytest.raises(PipelineInputError, match="the export gates refused this model"):
        Predictor(onnx_path)

    # A workspace that held another model: the output is the same refused candidate, byte for
    # byte (export is a function of its inputs, not of what the workspace held before).
    first_bytes = onnx_path.read_bytes()
    onnx_path.write_bytes(b"previous model")
    recorded = export(strict=False)
    assert recorded.returncode == 0, recorded.stderr
    assert "not released: quality: test accuracy 0.5000" in recorded.stderr
    assert onnx_path.read_bytes() == first_bytes
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["released"] is False and "below export.min_accuracy.cnn" in report["verdict"]
    assert report["onnx_sha256"] == hashlib.sha256(first_bytes).hexdigest()
    assert report["argmax_agreement"] == 1.0

    (tmp_path / "export.json").unlink()
    strict = export(strict=True)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "the gates refused the model" in strict.stderr
    assert onnx_path.read_bytes() == first_bytes
    assert not (tmp_path / "export.json").exists()
