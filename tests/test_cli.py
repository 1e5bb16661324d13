from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from mnistflow.cli import app
from tests.project_root import PROJECT_ROOT

PARAMS = str(PROJECT_ROOT / "params.yaml")


def test_validate_passes_real_test_images(tmp_path, mnist):
    path = tmp_path / "batch.npy"
    np.save(path, mnist.x_test[:500])
    result = CliRunner().invoke(app, ["validate", str(path), "--params", PARAMS])
    assert result.exit_code == 0, result.output
    # 6 per-image checks, then 5 drift measures of the batch against the project's reference.
    assert "all 11 checks passed on 500 images" in result.output
    assert "ok   drift_aspect_js        batch" in result.output


def test_validate_reports_a_drifting_batch(tmp_path, mnist):
    path = tmp_path / "faded.npy"
    np.save(path, (mnist.x_test[:1000] * 0.7).astype(np.uint8))
    result = CliRunner().invoke(app, ["validate", str(path), "--params", PARAMS])
    assert result.exit_code == 1
    assert "FAIL drift_intensity_js     batch" in result.output
    assert "1 check(s) failed (drift_intensity_js)" in result.output


def test_validate_reports_skew_with_counts(tmp_path, mnist):
    images = mnist.x_test[:100].copy()
    images[:25] = 255 - images[:25]
    images[25:30] = 0
    path = tmp_path / "batch.npz"
    np.savez(path, x=images)
    result = CliRunner().invoke(app, ["validate", str(path), "--params", PARAMS])
    assert result.exit_code == 1
    assert "FAIL mean_intensity              30 of 100 images fail" in result.output
    assert "FAIL max_pixel                    5 of 100 images" in result.output


def test_validate_wrong_shape_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((3, 27, 27), dtype=np.uint8))
    result = CliRunner().invoke(app, ["validate", str(path), "--params", PARAMS])
    assert result.exit_code == 2  # nothing left to check
    assert f"unreadable: {path}" in result.output and "(3, 27, 27)" in result.output
    assert "no images found" in result.output


def test_predict_and_validate_work_outside_any_project(
    tmp_path, monkeypatch, mnist, small_onnx_model
):
    """From a folder with no dvc.yaml above it, no --params: MNIST's default bounds apply."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.delenv("MNISTFLOW_ROOT", raising=False)
    np.save(outside / "batch.npy", mnist.x_test[:50])
    result = CliRunner().invoke(app, ["validate", "batch.npy"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["predict", "batch.npy", "--model", str(small_onnx_model), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "50 images" in result.output and (outside / "predictions.csv").is_file()


def test_run_outside_a_project_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNISTFLOW_ROOT", raising=False)
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "not inside an mnistflow project (no dvc.yaml here or above)" in result.output


def test_predict_flags_with_the_bounds_the_model_carries(
    tmp_path, monkeypatch, mnist, small_trained_cnn
):
    """Outside any project, no --params: the input checks embedded at export apply."""
    from mnistflow.data.normalization import fit_normalization
    from mnistflow.params import Params, ValidateParams
    from mnistflow.release.export import convert, model_metadata

    strict = Params(validate=ValidateParams(min_max_pixel=250))
    metadata = model_metadata(strict, fit_normalization("scale", None), {})
    model = tmp_path / "strict.onnx"
    model.write_bytes(
        convert(
            small_trained_cnn, fit_normalization("scale", None), 17, metadata
        ).SerializeToString()
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.delenv("MNISTFLOW_ROOT", raising=False)
    faint = (mnist.x_test[:20].astype(np.float64) * 0.8).astype(np.uint8)  # brightest ~204
    np.save(outside / "faint.npy", faint)
    options = ["--no-progress", "-o", "out.csv"]
    result = CliRunner().invoke(app, ["predict", "faint.npy", "--model", str(model), *options])
    assert result.exit_code == 0, result.output
    flags = (outside / "out.csv").read_text().splitlines()[1:]
    assert len(flags) == 20 and all("max_pixel" in line for line in flags)
    # MNIST's built-in bound (128) would have let every one of them through.
    from mnistflow.validation.bounds import BUILT_IN

    assert BUILT_IN["min_max_pixel"] < 200
