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
    recorded_baseline,
)
from mnistflow.release.outcomes import Outcomes, outcomes_of
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


def test_the_gates_decide_release_with_their_reasons(trained, mnist_slice):
    model, images = trained
    labels = mnist_slice.y_test[:500]
    params = ExportParams(min_accuracy=MinAccuracyParams(cnn=0.5), max_accuracy_drop=0.002)
    baseline = AccuracyBaseline(model_name="cnn", accuracy=0.99)
    gated = gated_export(model, SCALE, images, labels, 0.95, baseline, params, "cnn", METADATA)
    # Refused, yet converted and measured like a released model: the run is recorded whole.
    assert not gated.verdict.released and gated.onnx_bytes
    assert gated.parity.argmax_agreement == 1.0
    # The baseline recorded its accuracy only: the comparison says it is unpaired, and why.
    compared = gated.quality.record["baseline"]
    assert compared["test"] == "fisher_exact_unpaired"
    assert compared["unpaired_because"] == "the baseline recorded no per-image outcomes"
    assert "baseline 0.9900" in gated.verdict.describe()
    assert gated.verdict.as_json()["released"] is False
    floor = gated_export(model, SCALE, images, labels, 0.9, None, ExportParams(), "cnn", METADATA)
    assert "below export.min_accuracy.cnn 0.9900" in floor.verdict.describe()
    assert floor.quality.record["baseline"] is None
    # The deliberate override releases, and says so.
    allowed = ExportParams(allow_regression=True)
    regression = gated_export(
        model, SCALE, images, labels, 0.95, baseline, allowed, "cnn", METADATA
    ).verdict
    assert regression.released and "released despite" in regression.describe()
    # Parity refusals hold whatever allow_regression says.
    assert not decide([], ["argmaxes differ"], allowed).released


def _perturbed(model, scale: float, seed: int):
    """A copy of `model` whose weights carry seeded noise of `scale` times each one's spread."""
    import keras

    copy = keras.models.clone_model(model)
    generator = np.random.default_rng(seed)
    copy.set_weights(
        [w + generator.normal(0, scale * (w.std() or 1), w.shape) for w in model.get_weights()]
    )
    return copy


def test_the_paired_gate_on_real_models(trained, mnist_slice):
    """Three real models on the same 1,000 test images: a candidate that differs from the
    baseline on a handful of them is released with its discordant counts and p-value, one
    clearly worse is refused with the same figures. The margin is 0: only the test decides."""
    baseline_model, _ = trained
    images, labels = mnist_slice.x_test, mnist_slice.y_test
    params = ExportParams(min_accuracy=MinAccuracyParams(cnn=0.0), max_accuracy_drop=0.0)
    first = gated_export(baseline_model, SCALE, images, labels, 0.9, None, params, "cnn", METADATA)
    recorded = json.dumps(first.outcomes.as_json())
    baseline = recorded_baseline('{"accuracy": 0.9}', "model:\n  name: cnn\n", recorded, "v1")
    assert baseline.paired and len(baseline.misclassified) == len(first.outcomes.misclassified)

    def judged(model):
        gated = gated_export(model, SCALE, images, labels, 0.9, baseline, params, "cnn", METADATA)
        # The discordant counts, recounted here from onnxruntime's own predictions.
        predicted = (
            onnxruntime.InferenceSession(gated.onnx_bytes)
            .run(None, {INPUT_NAME: images})[0]
            .argmax(axis=1)
        )
        wrong = set(np.flatnonzero(predicted != labels).tolist())
        wrong_before = set(baseline.misclassified)
        compared = gated.quality.record["baseline"]
        assert compared["test"] == "mcnemar_exact"
        assert compared["baseline_only_correct"] == len(wrong - wrong_before)
        assert compared["candidate_only_correct"] == len(wrong_before - wrong)
        low, high = compared["difference_interval"]
        assert low <= compared["difference"] <= high
        return gated, compared

    close, close_figures = judged(_perturbed(baseline_model, 0.02, seed=1))
    discordant = close_figures["baseline_only_correct"] + close_figures["candidate_only_correct"]
    assert 1 <= discordant <= 30
    assert close.verdict.released and close_figures["p_value_worse"] >= params.significance
    worse, worse_figures = judged(_perturbed(baseline_model, 0.6, seed=2))
    assert worse_figures["difference"] < -0.05 and worse_figures["p_value_worse"] < 1e-6
    assert not worse.verdict.released
    reason = worse.verdict.describe()
    assert f"{worse_figures['baseline_only_correct']} test images only the baseline" in reason
    assert "McNemar's exact p=" in reason and "< export.significance 0.05" in reason
    # Intervals for the accuracy itself, as the report shows it.
    record = worse.quality.record
    assert record["accuracy_low"] < record["accuracy"] < record["accuracy_high"]


def _outcomes(wrong: list[int], images: int = 10_000) -> Outcomes:
    probabilities = np.zeros((images, 10), np.float32)
    labels = np.zeros(images, np.int64)
    probabilities[:, 0] = 1.0
    probabilities[wrong, 0], probabilities[wrong, 1] = 0.0, 1.0
    return outcomes_of(probabilities, np.zeros((images, 28, 28), np.uint8), labels)


def test_a_baseline_of_another_family_is_not_compared():
    baseline = AccuracyBaseline(model_name="cnn", accuracy=0.993)
    mlp = _outcomes(list(range(220)))
    # An MLP experiment is not a regression of the released CNN ...
    assert quality_gate(0.978, mlp, baseline, ExportParams(), "mlp").reasons == ()
    # ... but it still has its own floor.
    refusals = quality_gate(0.95, mlp, baseline, ExportParams(), "mlp").reasons
    assert refusals == ("test accuracy 0.9500 is below export.min_accuracy.mlp 0.9700",)


def test_a_drop_beyond_the_margin_refuses_only_when_it_is_not_noise():
    before = _outcomes(list(range(400)))
    baseline = AccuracyBaseline(
        "cnn", before.accuracy, "v1", before.test_set_sha256, 10_000, tuple(range(400))
    )
    params = ExportParams()
    # 30 images lost and 5 gained: 0.0025 below, beyond the 0.002 margin, and not by chance.
    lost = _outcomes(list(range(5, 400)) + list(range(1000, 1030)))
    judgement = quality_gate(0.99, lost, baseline, params, "cnn")
    figures = judgement.record["baseline"]
    assert (figures["baseline_only_correct"], figures["candidate_only_correct"]) == (30, 5)
    # McNemar's exact one-sided p: P(X >= 30 | X ~ Binomial(35, 1/2)).
    from scipy.stats import binom

    assert figures["p_value_worse"] == pytest.approx(binom.sf(29, 35, 0.5), rel=1e-3)
    assert len(judgement.reasons) == 1 and "0.0025 below the baseline" in judgement.reasons[0]
    # The same 0.0025 drop out of heavy churn (200 lost, 175 gained) is noise: released.
    churn = _outcomes(list(range(175, 400)) + list(range(1000, 1200)))
    churned = quality_gate(0.99, churn, baseline, params, "cnn")
    assert churned.record["baseline"]["difference"] == pytest.approx(-0.0025)
    assert churned.record["baseline"]["p_value_worse"] > 0.05 and churned.reasons == ()
    # A baseline of another test set is compared unpaired, and the record says so.
    elsewhere = AccuracyBaseline("cnn", before.accuracy, "v0", "0" * 64, 10_000, (1, 2))
    unpaired = quality_gate(0.99, lost, elsewhere, params, "cnn").record["baseline"]
    assert unpaired["unpaired_because"] == "the baseline was measured on another test set"
    # A baseline that names this test set with another image count is refused, not compared.
    miscounted = AccuracyBaseline("cnn", 0.5, "v2", before.test_set_sha256, 20_000, (1, 2))
    with pytest.raises(PipelineInputError, match="v2: names this test set but counts 20000"):
        quality_gate(0.99, lost, miscounted, params, "cnn")


def test_the_decision_uses_the_exact_p_value_and_image_counts():
    """742 images lost, 679 gained: p = 0.049996, which rounds to 0.05 in the record but is
    below the significance; a drop of exactly the margin (20 of 10,000) is not beyond it."""
    baseline_wrong = list(range(0, 1000))
    before = _outcomes(baseline_wrong)
    baseline = AccuracyBaseline(
        "cnn", before.accuracy, "v1", before.test_set_sha256, 10_000, tuple(baseline_wrong)
    )
    params = ExportParams()
    lost = _outcomes(list(range(679, 1000)) + list(range(2000, 2742)))
    judgement = quality_gate(0.99, lost, baseline, params, "cnn")
    assert judgement.record["baseline"]["p_value_worse"] == 0.05
    assert len(judgement.reasons) == 1
    exactly_the_margin = _outcomes(baseline_wrong + list(range(2000, 2020)))
    # 20 lost and none gained is significant, but 0.002 is not beyond export.max_accuracy_drop.
    assert quality_gate(0.99, exactly_the_margin, baseline, params, "cnn").reasons == ()


def test_newcombe_interval_agrees_with_a_paired_bootstrap():
    from mnistflow.release.paired import compare

    candidate_wrong = np.arange(40, 120)  # 80 wrong: 40 only the candidate
    baseline_wrong = np.arange(0, 100)  # 100 wrong: 20 only the baseline... and 40 shared
    figures = compare(candidate_wrong, baseline_wrong, 10_000, 0.95).as_json()
    assert (figures["baseline_only_correct"], figures["candidate_only_correct"]) == (20, 40)
    outcome = np.zeros(10_000)  # per image: candidate right minus baseline right
    outcome[100:120] = -1
    outcome[0:40] = 1
    generator = np.random.default_rng(0)
    means = np.array([outcome[generator.integers(0, 10_000, 10_000)].mean() for _ in range(4000)])
    low, high = np.percentile(means, [2.5, 97.5])
    assert figures["difference_interval"][0] == pytest.approx(low, abs=4e-4)
    assert figures["difference_interval"][1] == pytest.approx(high, abs=4e-4)


def test_baseline_file(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text("{}")
    assert load_baseline(path) is None
    path.write_text(json.dumps({"model_name": "cnn", "accuracy": 0.99}))
    assert load_baseline(path) == AccuracyBaseline("cnn", 0.99)
    paired = AccuracyBaseline("cnn", 0.9998, "v1", "a" * 64, 10_000, (3, 7))
    paired.save(path)
    assert load_baseline(path) == paired
    digest = {"model_name": "cnn", "accuracy": 0.8, "test_set_sha256": "a" * 64}
    for content, message in [
        (
            {**digest, "test_images": 10, "misclassified": [3, 3]},
            "misclassified: expected distinct",
        ),
        (
            {**digest, "test_images": 10, "misclassified": [10]},
            r"misclassified: expected distinct test indices in 0\.\.9",
        ),
        (  # numpy would overflow on it: refused as the number it is
            {**digest, "test_images": 10, "misclassified": [10**30]},
            r"misclassified: expected distinct test indices in 0\.\.9",
        ),
        (
            {**digest, "test_images": 10, "misclassified": "3"},
            "misclassified: expected a list of at most 10 test indices",
        ),
        ({**digest, "misclassified": [1]}, "test_images None; expected a count from 1 to"),
        ({**digest, "test_images": 10**30, "misclassified": [1]}, "test_images 1000000000000"),
        (
            {**digest, "test_images": 10, "misclassified": [1]},
            "accuracy 0.8 disagrees with its 1 misclassified of 10 test images; expected 0.9",
        ),
        (
            {**digest, "test_set_sha256": "A" * 64, "test_images": 10, "misclassified": [1, 2]},
            "test_set_sha256: expected a sha256 in lowercase hex",
        ),
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
             str(tmp_path / "model.int8.onnx"), "--outcomes", str(tmp_path / "test_outcomes.json"),
             "--report", str(tmp_path / "export.json")],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip

    # No model in the workspace yet: the refused candidate is written (DVC needs the output,
    # the run is recorded), marked as refused, and serving refuses it.
    first = export(strict=False)
    assert first.returncode == 0, first.stderr
    assert "marked as refused" in first.stderr
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["released"] is False
    # Every test image's outcome is recorded beside the report, for a later paired gate.
    outcomes = json.loads((tmp_path / "test_outcomes.json").read_text())
    assert outcomes["images"] == report["quality"]["test_images"] == report["images"]
    assert (
        round(1 - len(outcomes["misclassified"]) / outcomes["images"], 6)
        == (report["quality"]["accuracy"])
    )
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
