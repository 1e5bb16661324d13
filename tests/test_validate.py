"""Great Expectations guards: real MNIST passes; each kind of corruption fails by name."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mnistflow.params import ValidateParams
from mnistflow.validation.checks import validate_images
from mnistflow.validation.suite import validate_dataset
from tests.project_root import PROJECT_ROOT

SLICE_PARAMS = ValidateParams(train_size=3000, test_size=1000)


@pytest.fixture
def arrays(mnist_slice) -> dict[str, np.ndarray]:
    return {key: value.copy() for key, value in mnist_slice.as_npz_dict().items()}


def failed(report) -> set[str]:
    return {f"{result.table}.{result.name}" for result in report.failures}


def test_full_mnist_passes_with_observed_values_and_bounds(mnist):
    report = validate_dataset(mnist.as_npz_dict(), ValidateParams())
    assert report.success, [failure.line() for failure in report.failures]
    assert len(report.results) >= 20
    summary = report.as_json()
    assert summary["success"] is True and summary["checks_failed"] == 0
    entries = {(entry["table"], entry["name"]): entry for entry in summary["expectations"]}
    assert len(entries) == summary["checks_total"] == len(report.results)
    assert entries[("test_images", "train_test_duplicates")]["observed"] == 0
    # Per-image checks report the range they saw next to the bound they checked it against.
    intensity = entries[("train_images", "mean_intensity")]
    low, high = intensity["observed"]["range"]
    assert 3.0 < low < 10.0 < 90.0 < high < 140.0
    assert intensity["expected"] == "between 3.0 and 140.0"
    shares = entries[("train_classes", "class_share")]["observed"]["range"]
    assert 0.08 < shares[0] < shares[1] < 0.12


def _labels_10_and_minus_1(a):
    a["y_train"] = a["y_train"].astype(np.int16)
    a["y_train"][:3] = 10
    a["y_train"][3:5] = -1


def _missing_class(a):
    keep = a["y_train"] != 3
    a["x_train"], a["y_train"] = a["x_train"][keep], a["y_train"][keep]


def _shape_27(a):
    a["x_train"] = a["x_train"][:, :27, :27]


def _float_images(a):
    a["x_test"] = a["x_test"].astype(np.float32) / 255


def _inverted(a):
    a["x_train"][:50] = 255 - a["x_train"][:50]


def _blank(a):
    a["x_test"][:20] = 0


def _unit_scaled_uint8(a):
    a["x_train"] = (a["x_train"] > 127).astype(np.uint8)  # 0..1 values stored as uint8


def _test_copied_into_train(a):
    a["x_train"][:5] = a["x_test"][:5]
    a["y_train"][:5] = a["y_test"][:5]


def _one_image_two_labels(a):
    a["x_train"][1] = a["x_train"][0]
    a["y_train"][1] = (a["y_train"][0] + 1) % 10


@pytest.mark.parametrize(
    ("corrupt", "expected_failures"),
    [
        (_labels_10_and_minus_1, {"train_images.labels_in_class_set"}),
        (_missing_class, {"train_images.every_class_present", "train_classes.class_share"}),
        (_shape_27, {"train_images.image_height", "train_images.image_width"}),
        (_float_images, {"test_images.dtype_uint8"}),
        (_inverted, {"train_images.mean_intensity", "train_images.ink_fraction"}),
        (_blank, {"test_images.ink_fraction", "test_images.max_pixel"}),
        (_unit_scaled_uint8, {"train_images.max_pixel"}),
        (_test_copied_into_train, {"test_images.train_test_duplicates"}),
        (_one_image_two_labels, {"train_images.no_image_with_two_labels"}),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] if callable(value) else "",
)
def test_corruption_is_caught_by_name(arrays, corrupt, expected_failures):
    corrupt(arrays)
    params = SLICE_PARAMS
    if corrupt is _missing_class:
        params = ValidateParams(train_size=len(arrays["y_train"]), test_size=1000)
    report = validate_dataset(arrays, params)
    assert not report.success
    assert expected_failures <= failed(report), failed(report)
    for failure in report.failures:
        assert failure.name in failure.line() and failure.bound in failure.line()


def test_untouched_slice_passes(arrays):
    assert validate_dataset(arrays, SLICE_PARAMS).success


def test_stage_exits_with_one_line_per_failure(arrays, tmp_path):
    _inverted(arrays)
    raw = tmp_path / "mnist.npz"
    np.savez(raw, **arrays)
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  train_size: 3000\n  test_size: 1000\n")
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
            "--report",
            str(report),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    failure_lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert any("mean_intensity [train_images.mean_intensity]" in line for line in failure_lines)
    assert any("50 unexpected" in line for line in failure_lines)
    written = json.loads(report.read_text())
    assert written["success"] is False and written["checks_failed"] >= 2
    entries = {(entry["table"], entry["name"]): entry for entry in written["expectations"]}
    assert entries[("train_images", "mean_intensity")]["success"] is False
    assert entries[("train_images", "mean_intensity")]["observed"]["unexpected_count"] == 50


def test_prediction_batch_skew_is_counted(mnist):
    images = mnist.x_test[:200].copy()
    assert validate_images(images, ValidateParams()).success
    # Float 0..1 inputs are a legitimate encoding and pass too.
    assert validate_images(images.astype(np.float32) / 255, ValidateParams()).success
    images[:30] = 255 - images[:30]
    images[30:40] = 0
    report = validate_images(images, ValidateParams())
    counts = {result.name: result.unexpected_count for result in report.failures}
    assert counts["mean_intensity"] == 40  # 30 inverted (too bright) + 10 blank (too dark)
    assert counts["ink_fraction"] == 40
    assert counts["max_pixel"] == 10


def test_a_grown_dataset_passes_and_a_shrunk_one_fails_within_the_allowed_shrink(arrays, mnist):
    # Grown by 300 more real images (shifted copies of its own would be near-duplicates).
    grown = {
        **arrays,
        "x_train": np.concatenate([arrays["x_train"], mnist.x_train[3000:3300]]),
        "y_train": np.concatenate([arrays["y_train"], mnist.y_train[3000:3300]]),
    }
    report = validate_dataset(grown, SLICE_PARAMS)
    assert report.success, [failure.line() for failure in report.failures]
    sizes = {r.table: r for r in report.results if r.name == "split_size"}
    assert sizes["train_images"].observed == 3300

    shrunk = {**arrays, "x_test": arrays["x_test"][:950], "y_test": arrays["y_test"][:950]}
    assert failed(validate_dataset(shrunk, SLICE_PARAMS)) == {"test_images.split_size"}
    tolerant = ValidateParams(train_size=3000, test_size=1000, max_size_shrink=0.05)
    assert tolerant.minimum_size("test") == 950
    assert validate_dataset(shrunk, tolerant).success
    too_small = {**arrays, "x_test": arrays["x_test"][:949], "y_test": arrays["y_test"][:949]}
    assert failed(validate_dataset(too_small, tolerant)) == {"test_images.split_size"}
