"""Validation that understands the data: a reference accepted from a real MNIST slice, then
each corruption family, built here from real images, fails by the check that names it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mnistflow.errors import PipelineInputError
from mnistflow.params import ValidateParams
from mnistflow.reference.acceptance import accept_reference
from mnistflow.reference.folder import load_reference
from mnistflow.reference.near_duplicates import close_pairs, perceptual_hashes
from mnistflow.reference.profile import build_profile
from mnistflow.validation.bounds import resolve_bounds
from mnistflow.validation.suite import validate_batch, validate_dataset
from tests.project_root import PROJECT_ROOT

# The slice's label model is 3 MLPs fitted on 2,000 images each (about 92 % accurate): its
# estimate on the slice itself (about 2 %) plus the 2 % allowance is the inferred bound;
# another clean slice reads 2.4 %, 5 % random noise 5.3 %.
SLICE_PARAMS = ValidateParams()


@pytest.fixture(scope="session")
def slice_reference(tmp_path_factory, mnist_slice):
    """A reference accepted from the real 3,000/1,000 slice (cross-validated label model)."""
    root = tmp_path_factory.mktemp("reference-root")
    (root / "data" / "raw").mkdir(parents=True)
    np.savez(root / "data" / "raw" / "mnist.npz", **mnist_slice.as_npz_dict())
    accepted = accept_reference(root)
    assert accepted.label_model == "cross-validated MLPs"
    return load_reference(root / "reference")


@pytest.fixture
def arrays(mnist_slice) -> dict[str, np.ndarray]:
    return {key: value.copy() for key, value in mnist_slice.as_npz_dict().items()}


def failed(report) -> set[str]:
    return {f"{result.table}.{result.name}" for result in report.failures}


def test_the_accepted_slice_passes_with_its_figures(arrays, slice_reference):
    report = validate_dataset(arrays, SLICE_PARAMS, slice_reference)
    assert report.success, [failure.line() for failure in report.failures]
    assert set(report.metrics["drift"]) == {
        "intensity_js",
        "ink_js",
        "aspect_js",
        "mean_image",
        "centre_shift",
    }
    assert max(report.metrics["drift"].values()) < 1e-6  # the same data: no drift at all
    rates = report.metrics["label_error_rate"]
    assert set(rates) == {"train", "test"} and all(0 <= rate < 0.035 for rate in rates.values())
    # The bound the rates were held to: the reference's own estimate plus the allowance.
    own = slice_reference.info["label_error_rate"]
    assert set(own) == {"train", "test"} and own["train"] == rates["train"]
    as_json = report.as_json()
    assert as_json["reference"]["label_model"] == "cross-validated MLPs"
    bounds = {entry["key"]: entry for entry in as_json["bounds"]}
    assert bounds["train_size"] == {"key": "train_size", "value": 3000, "from": "reference"}
    label_bound = bounds["labels.max_error_rate"]
    assert label_bound["from"] == "reference"
    assert label_bound["value"] == pytest.approx(max(own.values()) + 0.02, abs=1e-6)


def test_another_clean_slice_of_mnist_passes(mnist, slice_reference):
    other = {
        "x_train": mnist.x_train[3000:6000],
        "y_train": mnist.y_train[3000:6000],
        "x_test": mnist.x_test[1000:2000],
        "y_test": mnist.y_test[1000:2000],
    }
    report = validate_dataset(other, SLICE_PARAMS, slice_reference)
    assert report.success, [failure.line() for failure in report.failures]
    assert 0 < report.metrics["drift"]["mean_image"] < 0.15


def _misaligned_labels(a):
    a["y_train"] = np.roll(a["y_train"], 1)


def _five_percent_label_noise(a):
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(a["y_train"]), len(a["y_train"]) // 20, replace=False)
    a["y_train"][chosen] = (a["y_train"][chosen] + rng.integers(1, 10, len(chosen))) % 10


def _swapped_classes(a):
    three, five = a["y_train"] == 3, a["y_train"] == 5
    a["y_train"][three], a["y_train"][five] = 5, 3


def _transposed(a):
    a["x_train"] = np.ascontiguousarray(a["x_train"].transpose(0, 2, 1))


def _rotated(a):
    a["x_test"] = np.ascontiguousarray(np.rot90(a["x_test"], 1, axes=(1, 2)))


def _mirrored(a):
    a["x_train"] = np.ascontiguousarray(a["x_train"][:, :, ::-1])


def _faded(a):
    a["x_train"] = (a["x_train"] * 0.7).astype(np.uint8)


def _lower_contrast(a):
    ink = a["x_train"] > 0
    a["x_train"] = np.where(ink, 60 + a["x_train"] * 0.6, 0).astype(np.uint8)


def _brightness_offset(a):
    a["x_test"] = np.clip(a["x_test"].astype(np.int16) + 20, 0, 255).astype(np.uint8)


def _duplicates_in_train(a):
    a["x_train"][1500:1600] = a["x_train"][:100]
    a["y_train"][1500:1600] = a["y_train"][:100]


def _shifted_test_copies_in_train(a):
    a["x_train"][:20] = np.roll(a["x_test"][:20], 1, axis=2)
    a["y_train"][:20] = a["y_test"][:20]


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_misaligned_labels, {"train_labels.label_error_rate"}),
        (_five_percent_label_noise, {"train_labels.label_error_rate"}),
        (_swapped_classes, {"train_labels.label_error_rate"}),
        (_transposed, {"drift.drift_aspect_js", "drift.drift_mean_image"}),
        (_rotated, {"drift.drift_aspect_js", "drift.drift_mean_image"}),
        (_mirrored, {"drift.drift_mean_image", "drift.drift_centre_shift"}),
        (_faded, {"drift.drift_intensity_js"}),
        (_lower_contrast, {"drift.drift_intensity_js"}),
        (_brightness_offset, {"drift.drift_intensity_js"}),
        (_duplicates_in_train, {"train_images.near_duplicates"}),
        (_shifted_test_copies_in_train, {"test_images.near_duplicates_of_train"}),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] if callable(value) else "",
)
def test_each_corruption_fails_by_name(arrays, slice_reference, corrupt, expected):
    corrupt(arrays)
    report = validate_dataset(arrays, SLICE_PARAMS, slice_reference)
    assert expected <= failed(report), failed(report)
    for failure in report.failures:
        assert failure.name in failure.line() and failure.bound in failure.line()


def test_faded_ink_stays_inside_the_old_hand_set_bounds(arrays, slice_reference):
    """What the drift checks add: fading passes every per-image bound, fails on drift only."""
    _faded(arrays)
    assert failed(validate_dataset(arrays, SLICE_PARAMS, slice_reference)) == {
        "drift.drift_intensity_js"
    }
    assert validate_dataset(arrays, ValidateParams(train_size=3000, test_size=1000)).success


def test_label_noise_is_estimated_near_its_true_rate(arrays, slice_reference):
    _five_percent_label_noise(arrays)
    report = validate_dataset(arrays, SLICE_PARAMS, slice_reference)
    train = report.details["label_quality"]["splits"]["train"]
    assert 0.035 < train["estimated_error_rate"] < 0.08
    assert len(train["suspicious"]) == 64 and len(train["per_class"]) == 10
    # The most suspicious examples are mostly the ones the noise hit.
    rng = np.random.default_rng(0)
    hit = set(rng.choice(3000, 150, replace=False).tolist())
    assert sum(index in hit for index in train["suspicious"]) >= 48


def test_bounds_are_inferred_and_params_override(slice_reference):
    resolved, origins = resolve_bounds(
        ValidateParams(min_mean_intensity=5.0), slice_reference.profile
    )
    assert origins["min_mean_intensity"] == "params" and resolved.min_mean_intensity == 5.0
    ranges = slice_reference.profile.splits["train"]["ranges"]["mean_intensity"]
    assert origins["max_mean_intensity"] == "reference"
    test_high = slice_reference.profile.splits["test"]["ranges"]["mean_intensity"][1]
    assert resolved.max_mean_intensity == pytest.approx(max(ranges[1], test_high) * 1.5, abs=1e-5)
    assert resolved.train_size == 3000 and resolved.image_height == 28
    builtin, origins = resolve_bounds(ValidateParams(), None)
    assert builtin.max_mean_intensity == 140.0 and origins["train_size"] == "built-in"


def test_near_duplicate_hash_separates_copies_from_distinct_digits(mnist):
    images = mnist.x_test[:2000]
    shifted = np.roll(images[:200], 1, axis=2)
    hashes = perceptual_hashes(np.concatenate([images, shifted]))
    pairs = close_pairs(hashes, 12)
    found = {(int(i), int(j)) for i, j, _ in pairs}
    assert all((k, 2000 + k) in found for k in range(200))  # every shifted copy
    assert len(found) == 200  # and no pair of distinct test digits
    brute = np.bitwise_count(hashes[:300, None, :] ^ hashes[None, :300, :]).sum(-1)
    assert sorted(zip(*np.nonzero(np.triu(brute <= 12, 1)), strict=True)) == sorted(
        (i, j) for i, j in found if j < 300
    )


def test_profile_is_byte_identical_for_the_same_data(arrays, tmp_path):
    from mnistflow.reference.profile import save_profile

    for name in ("first", "second"):
        save_profile(build_profile(arrays, 12), tmp_path / name)
    for file in ("profile.npz", "profile.json"):
        assert (tmp_path / "first" / file).read_bytes() == (tmp_path / "second" / file).read_bytes()


def test_a_prediction_batch_drifts_against_the_reference(mnist, slice_reference):
    batch = mnist.x_test[2000:3000]
    assert validate_batch(batch, ValidateParams(), slice_reference).success
    transposed = np.ascontiguousarray(batch.transpose(0, 2, 1))
    names = {r.name for r in validate_batch(transposed, ValidateParams(), slice_reference).failures}
    assert "drift_aspect_js" in names
    faded = (batch * 0.7).astype(np.uint8)
    names = {r.name for r in validate_batch(faded, ValidateParams(), slice_reference).failures}
    assert names == {"drift_intensity_js"}
    # Too few images to judge a distribution: the per-image checks only.
    small = validate_batch(faded[:100], ValidateParams(), slice_reference)
    assert small.success and not any(r.table == "batch" for r in small.results)


def test_prepare_refuses_a_report_for_other_data(tmp_path, slice_npz):
    from mnistflow.validation.gate import require_passed_validation

    report = tmp_path / "validation.json"
    report.write_text(json.dumps({"success": True, "data": {"md5": "0" * 32}}))
    with pytest.raises(PipelineInputError, match="the report is for other data"):
        require_passed_validation(report, slice_npz)
    report.write_text(json.dumps({"success": True}))
    with pytest.raises(PipelineInputError, match="no readable validation result"):
        require_passed_validation(report, slice_npz)


def test_validate_stage_names_the_check_and_how_to_accept(arrays, slice_reference, tmp_path):
    _transposed(arrays)
    raw = tmp_path / "mnist.npz"
    np.savez(raw, **arrays)
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  drift:\n    max_aspect_js: 0.6\n")
    report = tmp_path / "validation.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.validate",
            "--params",
            str(params),
            "--raw",
            str(raw),
            "--reference",
            str(slice_reference.folder),
            "--report",
            str(report),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "drift_aspect_js [drift]" in result.stderr
    assert "mnistflow reference accept" in result.stderr
    written = json.loads(report.read_text())
    assert written["success"] is False
    assert written["data"]["md5"] == __import__("hashlib").md5(raw.read_bytes()).hexdigest()
    assert written["drift"]["aspect_js"] > 0.6


def test_accept_refuses_data_that_is_not_a_dataset(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    with pytest.raises(PipelineInputError, match="no ingested data to accept"):
        accept_reference(tmp_path)
    np.savez(tmp_path / "data" / "raw" / "mnist.npz", x_train=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(PipelineInputError, match="mnist.npz"):
        accept_reference(tmp_path)
    assert not (tmp_path / "reference").exists()


def test_predict_flags_chunks_that_drift_from_the_training_data(
    tmp_path, mnist, small_trained_cnn, slice_reference
):
    """The exported model carries the reference's profile; predict judges each chunk."""
    import csv

    from mnistflow.data.normalization import fit_normalization
    from mnistflow.params import Params
    from mnistflow.reference.input_profile import input_profile_metadata
    from mnistflow.release.export import convert, model_metadata
    from mnistflow.serving.predict import predict_files

    params = Params()
    profile = input_profile_metadata(slice_reference.folder, params.checks.drift.model_dump())
    scale = fit_normalization("scale", None)
    metadata = model_metadata(params, scale, {}, input_profile=profile)
    model = tmp_path / "model.onnx"
    model.write_bytes(convert(small_trained_cnn, scale, 17, metadata).SerializeToString())
    clean = mnist.x_test[3000:4000]
    batch = np.concatenate([clean, (clean[:600] * 0.7).astype(np.uint8)])
    np.save(tmp_path / "batch.npy", batch)
    output = tmp_path / "predictions.csv"
    summary = predict_files([tmp_path / "batch.npy"], model, output, chunk_size=500, progress=False)
    # Chunks 1-2 clean, chunk 3 (1000..1499) faded, chunk 4 (100 images) too small to judge.
    assert (summary.judged_chunks, summary.drifting_chunks) == (3, 1)
    assert "1 of 3 chunks drift from the training data" in summary.lines()
    with open(output, newline="") as handle:
        flags = [row["flagged"] for row in csv.DictReader(handle)]
    assert all("drift" not in flag for flag in flags[:1000])
    assert all("drift_intensity_js" in flag for flag in flags[1000:1500])
    assert all("drift" not in flag for flag in flags[1500:])
