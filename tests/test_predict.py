"""Batch prediction: every input kind, chunking, output formats, bad inputs, flags."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistflow.cli import app
from mnistflow.serving.predict import Predictor, SessionOptions, predict_files
from tests.project_root import PROJECT_ROOT
from tests.test_mnist_sources import write_idx

PARAMS = str(PROJECT_ROOT / "params.yaml")


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predictions_match_keras(small_onnx_model, small_trained_cnn, mnist, tmp_path):
    images = mnist.x_test[:300]
    np.save(tmp_path / "batch.npy", images)
    summary = predict_files(
        [tmp_path / "batch.npy"], small_onnx_model, tmp_path / "out.csv", progress=False
    )
    rows = read_csv(tmp_path / "out.csv")
    expected = small_trained_cnn.predict(images[..., None] / np.float32(255), verbose=0)
    assert [int(row["predicted"]) for row in rows] == expected.argmax(axis=1).tolist()
    assert rows[0]["source"] == f"{tmp_path / 'batch.npy'}[0]"
    assert set(rows[0]) >= {"top3_class", "top3_prob", "probability", "flagged"}
    assert summary.images == 300 and sum(summary.class_counts) == 300
    assert summary.provider == "CPUExecutionProvider"
    assert all(row["error"] == "" for row in rows)


def test_every_input_kind_gives_the_same_answer(small_onnx_model, mnist, tmp_path):
    images = mnist.x_test[:20]
    np.save(tmp_path / "a.npy", images.reshape(20, 784))
    np.savez(tmp_path / "b.npz", x=images[..., None])
    np.save(tmp_path / "c.npy", images.astype(np.float32) / 255)
    write_idx(tmp_path / "d-idx3-ubyte", images, compress=False)
    outputs = []
    for name in ("a.npy", "b.npz", "c.npy", "d-idx3-ubyte"):
        predict_files([tmp_path / name], small_onnx_model, tmp_path / f"{name}.csv", progress=False)
        outputs.append(
            [(row["predicted"], row["top1_prob"]) for row in read_csv(tmp_path / f"{name}.csv")]
        )
    assert all(output == outputs[0] for output in outputs[1:])


def test_chunked_equals_whole_batch_and_parquet_equals_csv(small_onnx_model, mnist, tmp_path):
    np.save(tmp_path / "batch.npy", mnist.x_test[:257])
    predict_files(
        [tmp_path / "batch.npy"],
        small_onnx_model,
        tmp_path / "small.csv",
        chunk_size=7,
        progress=False,
    )
    predict_files(
        [tmp_path / "batch.npy"],
        small_onnx_model,
        tmp_path / "whole.csv",
        chunk_size=100_000,
        progress=False,
    )
    assert (tmp_path / "small.csv").read_text() == (tmp_path / "whole.csv").read_text()
    predict_files(
        [tmp_path / "batch.npy"],
        small_onnx_model,
        tmp_path / "out.parquet",
        top_k=2,
        chunk_size=50,
        progress=False,
    )
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert list(table) == [
        "source",
        "predicted",
        "probability",
        "top1_class",
        "top1_prob",
        "top2_class",
        "top2_prob",
        "flagged",
        "error",
        "model_version",
        "model_sha256",
    ]
    assert [str(value) for value in table["predicted"]] == [
        row["predicted"] for row in read_csv(tmp_path / "whole.csv")
    ]


def test_image_folder_with_corrupt_files(small_onnx_model, mnist, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    Image.fromarray(mnist.x_test[0]).resize((45, 61)).convert("RGB").save(folder / "seven.png")
    Image.fromarray(255 - mnist.x_test[1]).save(folder / "two_on_white.bmp")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "empty.jpg").write_bytes(b"")
    output = tmp_path / "predictions.csv"
    options = ["--model", str(small_onnx_model), "--params", PARAMS, "--no-progress"]
    result = CliRunner().invoke(app, ["predict", str(folder), "-o", str(output), *options])
    assert result.exit_code == 1, result.output
    rows = read_csv(output)
    predicted = [row for row in rows if not row["error"]]
    assert [row["source"].rsplit("/", 1)[-1] for row in predicted] == [
        "seven.png",
        "two_on_white.bmp",
    ]
    errors = [row for row in rows if row["error"]]
    assert sorted(row["source"].rsplit("/", 1)[-1] for row in errors) == [
        "corrupt.png",
        "empty.jpg",
    ]
    assert all("not a readable" in row["error"] and row["predicted"] == "" for row in errors)
    assert "2 images in" in result.output and "2 input(s) skipped" in result.output


def test_wrong_shape_is_skipped_with_its_reason(small_onnx_model, tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((4, 32, 32), dtype=np.uint8))
    output = tmp_path / "out.csv"
    options = ["--model", str(small_onnx_model), "--params", PARAMS]
    result = CliRunner().invoke(app, ["predict", str(path), "-o", str(output), *options])
    assert result.exit_code == 1
    assert f"skipped: {path}" in result.output and "(4, 32, 32)" in result.output
    [row] = read_csv(output)
    assert row["source"] == str(path) and "(4, 32, 32)" in row["error"]


def test_skewed_inputs_are_flagged_not_silently_predicted(small_onnx_model, mnist, tmp_path):
    images = mnist.x_test[:10].copy()
    images[:3] = 255 - images[:3]
    images[3] = 0
    np.save(tmp_path / "batch.npy", images)
    summary = predict_files(
        [tmp_path / "batch.npy"], small_onnx_model, tmp_path / "out.csv", progress=False
    )
    flags = [row["flagged"] for row in read_csv(tmp_path / "out.csv")]
    assert all("mean_intensity" in flag and "ink_fraction" in flag for flag in flags[:3])
    assert "max_pixel" in flags[3]
    assert flags[4:] == [""] * 6
    assert summary.flagged == 4


def test_session_reports_its_real_provider(small_onnx_model):
    assert (
        Predictor(small_onnx_model, SessionOptions(device="cpu")).provider == "CPUExecutionProvider"
    )
    # No CUDA provider here: asking for it falls back to the CPU and says so.
    assert (
        Predictor(small_onnx_model, SessionOptions(device="cuda")).provider
        == "CPUExecutionProvider"
    )
    with pytest.raises(ValueError, match="optimization"):
        Predictor(small_onnx_model, SessionOptions(optimization="fastest"))
