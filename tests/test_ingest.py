"""Ingest: the right output from each source, and bad input refused cleanly."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistflow.data.ingest import ingest
from mnistflow.errors import PipelineInputError
from mnistflow.params import DataParams
from tests.project_root import PROJECT_ROOT
from tests.test_mnist_sources import write_idx_folder

PREVIOUS_OUTPUT = b"previous good output"


@pytest.fixture
def output(tmp_path) -> Path:
    """An output path that already holds a previous run's file, which must survive failures."""
    path = tmp_path / "raw" / "mnist.npz"
    path.parent.mkdir()
    path.write_bytes(PREVIOUS_OUTPUT)
    return path


def assert_refused(params: DataParams, output: Path, *fragments: str) -> str:
    with pytest.raises(PipelineInputError) as caught:
        ingest(params, output)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert output.read_bytes() == PREVIOUS_OUTPUT
    assert [p.name for p in output.parent.iterdir()] == ["mnist.npz"], "temporary file left"
    return message


def test_ingest_writes_keras_layout(slice_npz, mnist_slice, output):
    ingest(DataParams(source=str(slice_npz)), output)
    with np.load(output) as written:
        assert sorted(written.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert written["x_train"].dtype == np.uint8 and written["y_train"].dtype == np.uint8
        np.testing.assert_array_equal(written["x_test"], mnist_slice.x_test)


def test_ingest_output_is_byte_reproducible(slice_npz, tmp_path):
    first, second = tmp_path / "a" / "mnist.npz", tmp_path / "b" / "mnist.npz"
    ingest(DataParams(source=str(slice_npz)), first)
    ingest(DataParams(source=str(slice_npz)), second)
    assert first.read_bytes() == second.read_bytes()


def test_missing_path(tmp_path, output):
    missing = tmp_path / "nowhere" / "mnist.npz"
    assert_refused(DataParams(source=str(missing)), output, str(missing), "no such file")


def test_truncated_npz(slice_npz, output):
    content = slice_npz.read_bytes()
    slice_npz.write_bytes(content[: len(content) // 2])
    assert_refused(DataParams(source=str(slice_npz)), output, str(slice_npz), "truncated")


def test_corrupt_gzipped_idx(tmp_path, mnist_slice, output):
    folder = write_idx_folder(tmp_path / "idx", mnist_slice, compress=True)
    images = folder / "train-images-idx3-ubyte.gz"
    content = bytearray(images.read_bytes())
    content[len(content) // 2 : len(content) // 2 + 64] = b"\x00" * 64
    images.write_bytes(bytes(content))
    assert_refused(DataParams(source=str(folder)), output, str(images), "corrupt")


def test_truncated_idx(tmp_path, mnist_slice, output):
    folder = write_idx_folder(tmp_path / "idx", mnist_slice, compress=False)
    labels = folder / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-10])
    assert_refused(DataParams(source=str(folder)), output, str(labels), "truncated")


def test_checksum_mismatch(slice_npz, output):
    assert_refused(
        DataParams(source=str(slice_npz), sha256="0" * 64), output, str(slice_npz), "sha256"
    )


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"x_train": lambda x: x[:, :27, :27]}, ["x_train", "(3000, 27, 27)", "(N, 28, 28)"]),
        ({"x_test": lambda x: x.astype(np.float32) / 255}, ["x_test", "float32", "uint8"]),
        ({"y_train": lambda y: np.where(np.arange(len(y)) == 5, 10, y)}, ["y_train", "0..9"]),
        ({"y_test": lambda y: y.astype(np.int16) - 1}, ["y_test", "outside 0..9", "-1"]),
        ({"y_train": lambda y: y[:-1]}, ["y_train", "one label per image"]),
    ],
    ids=["shape-27x27", "float-images", "label-10", "label-minus-1", "label-count"],
)
def test_bad_arrays(tmp_path, mnist_slice, output, change, fragments):
    arrays = mnist_slice.as_npz_dict()
    for key, transform in change.items():
        arrays[key] = transform(arrays[key])
    source = _save(tmp_path / "bad.npz", **arrays)
    assert_refused(DataParams(source=str(source)), output, str(source), *fragments)


def test_missing_key(tmp_path, mnist_slice, output):
    arrays = mnist_slice.as_npz_dict()
    del arrays["y_test"]
    source = _save(tmp_path / "bad.npz", **arrays)
    assert_refused(DataParams(source=str(source)), output, "y_test", "missing")


def test_command_line_reports_one_paragraph_and_exit_code(tmp_path):
    corrupt = tmp_path / "mnist.npz"
    corrupt.write_bytes(gzip.compress(b"not an npz"))
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {corrupt}\n")
    output = tmp_path / "out" / "mnist.npz"
    result = subprocess.run(
        [sys.executable, "-m", "stages.ingest", "--params", str(params), "--output", str(output)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {corrupt}" in result.stderr
    assert not output.exists()


def test_params_typo_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  sorce: auto\n")
    from mnistflow.params import load_params

    with pytest.raises(PipelineInputError, match=r"data\.sorce: unknown key"):
        load_params(params)
