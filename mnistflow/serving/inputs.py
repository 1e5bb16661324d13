"""Read prediction inputs — .npz/.npy arrays, IDX files, image files or folders — as images.

Arrays keep their dtype (uint8 0..255 or float 0..1) and become N×28×28; image files are
converted the MNIST way (`mnistflow.serving.images`).

No input can sink a batch: a file that cannot be read or trusted (truncated, corrupt, a header
that promises more than the file holds, a wrong shape or dtype) is quarantined whole, an image
with non-finite or out-of-range pixels is quarantined alone, each with its reason, and the
rest of the batch is delivered. Headers are checked before data is read, so a file cannot make
a reader allocate what its header claims.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import IMAGE_SHAPE, IMAGE_SIZE, PIXELS_PER_IMAGE
from mnistflow.data.idx import IDX_IMAGES_MAGIC, parse_idx, read_idx_header
from mnistflow.data.pixels import unit_floats
from mnistflow.errors import PipelineInputError
from mnistflow.serving.images import read_image_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
ARRAY_SHAPES_ACCEPTED = (
    f"(N, {IMAGE_SIZE}, {IMAGE_SIZE}), (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1) "
    f"or (N, {PIXELS_PER_IMAGE})"
)


@dataclass(frozen=True)
class InputBatch:
    images: np.ndarray  # (N, 28, 28), uint8 0..255 or float 0..1
    sources: list[str]  # one per image: "file" or "file[index]"
    errors: list[tuple[str, str]]  # (file, reason) for inputs that could not be read


def _check_layout(shape: tuple[int, ...], dtype: np.dtype, origin: str) -> None:
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise PipelineInputError(
            f"{origin}: dtype {dtype}; expected uint8 pixels 0..255 or float pixels 0..1"
        )
    if tuple(shape[1:]) not in ((PIXELS_PER_IMAGE,), (*IMAGE_SHAPE, 1), IMAGE_SHAPE):
        raise PipelineInputError(
            f"{origin}: array of shape {tuple(shape)}; expected {ARRAY_SHAPES_ACCEPTED}"
        )


def display_name(path: Path | str) -> str:
    """A path as text that any output can hold: bytes of a name that is not valid UTF-8 are
    shown as \\x escapes instead of breaking the writer."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _as_images(array: np.ndarray, origin: str) -> np.ndarray:
    _check_layout(array.shape, array.dtype, origin)
    return array.reshape(-1, *IMAGE_SHAPE)


def read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, header size) of the .npy stream at `handle`, data unread."""
    version = np.lib.format.read_magic(handle)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran_order, dtype = read_header(handle)
    return shape, fortran_order, dtype, handle.tell()


class NpyImages:
    """Images in an .npy file, read slice by slice from disk.

    Not a memory map: pages of a mapped file stay resident once touched, so RSS would grow
    with the file; reading each chunk into fresh memory keeps it flat.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                shape, fortran_order, dtype, self.offset = read_npy_header(handle)
        except (OSError, ValueError, EOFError) as error:
            raise PipelineInputError(
                f"{display_name(path)}: not a readable .npy file ({error})"
            ) from None
        name = display_name(path)
        if fortran_order or dtype.hasobject:
            raise PipelineInputError(f"{name}: Fortran-ordered or object array; expected C order")
        _check_layout(shape, dtype, name)
        self.shape, self.dtype = shape, dtype
        self.row_size = int(np.prod(shape[1:]))
        promised = self.offset + self.shape[0] * self.row_size * dtype.itemsize
        found = Path(path).stat().st_size
        if found < promised:
            raise PipelineInputError(
                f"{name}: header promises {self.shape[0]} images ({promised:,} bytes) but the "
                f"file holds {found:,} bytes; it is truncated"
            )

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        count = max(stop - start, 0) * self.row_size
        data = np.fromfile(
            self.path,
            dtype=self.dtype,
            count=count,
            offset=self.offset + start * self.row_size * self.dtype.itemsize,
        )
        return data.reshape(-1, *IMAGE_SHAPE)


# An IDX file's header may announce any dimensions (uint32 each): refuse before reading data.
MAX_IDX_IMAGES = 10_000_000


def _read_idx_images(path: Path, name: str) -> np.ndarray:
    """IDX images, their (N, 28, 28) dimensions and a sane N checked from the header first."""
    dims = read_idx_header(path, IDX_IMAGES_MAGIC)
    if dims[1:] != IMAGE_SHAPE:
        raise PipelineInputError(
            f"{name}: IDX images of {dims[1]}×{dims[2]}; expected {IMAGE_SIZE}×{IMAGE_SIZE}"
        )
    return parse_idx(path, IDX_IMAGES_MAGIC, max_items=MAX_IDX_IMAGES)


def read_array_file(path: Path) -> np.ndarray | NpyImages:
    """An .npy (read lazily), an .npz (its `x`, `images`, `x_test` or only array) or IDX."""
    name = display_name(path)
    try:
        if path.name.endswith(".npy"):
            return NpyImages(path)
        if path.name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                keys = [key for key in ("x", "images", "x_test") if key in archive.files]
                if not keys and len(archive.files) == 1:
                    keys = archive.files
                if not keys:
                    raise PipelineInputError(
                        f"{name}: arrays {archive.files}; expected one named x, images or "
                        "x_test, or a single array"
                    )
                _check_npz_member(path, keys[0], f"{name}[{keys[0]}]")
                return _as_images(archive[keys[0]], f"{name}[{keys[0]}]")
        return _as_images(_read_idx_images(path, name), name)
    except PipelineInputError as error:
        # The IDX reader names the path as it is; an undecodable name must not break the
        # writer of the error column.
        raise PipelineInputError(
            str(error).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        ) from None
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as error:
        raise PipelineInputError(
            f"{name}: cannot read ({type(error).__name__}: {error}); the file is truncated or "
            "corrupt"
        ) from None


def _check_npz_member(path: Path, key: str, origin: str) -> None:
    """The member's .npy header, read before its data: layout, and a size the member really
    holds (a 1 KB archive must not make numpy allocate what its header claims)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        with archive.open(info) as handle:
            shape, _, dtype, header_size = read_npy_header(handle)
    _check_layout(shape, dtype, origin)
    promised = header_size + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if info.file_size < promised:
        raise PipelineInputError(
            f"{origin}: header promises {shape[0]} images ({promised:,.0f} bytes) but the "
            f"archive member holds {info.file_size:,} bytes; it is truncated or forged"
        )


def unusable_rows(images: np.ndarray) -> list[tuple[int, str]]:
    """(row, reason) for images a model cannot be trusted on: non-finite pixels, or float
    pixels outside 0..1 (floats are read as 0..1; 0..255 floats would all saturate)."""
    if images.dtype == np.uint8 or len(images) == 0:
        return []
    flat = images.reshape(len(images), -1)
    finite = np.isfinite(flat).all(axis=1)
    in_range = np.ones(len(images), dtype=bool)
    in_range[finite] = (flat[finite].min(axis=1) >= 0.0) & (flat[finite].max(axis=1) <= 1.0)
    reasons = []
    for row in np.flatnonzero(~finite | ~in_range):
        if not finite[row]:
            reasons.append((int(row), "non-finite pixel values (NaN or infinity)"))
        else:
            low, high = float(flat[row].min()), float(flat[row].max())
            reasons.append(
                (int(row), f"float pixels span {low:g}..{high:g}; expected floats in 0..1")
            )
    return reasons


def _is_input(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        or name.endswith((".npy", ".npz"))
        or "idx3-ubyte" in name
    )


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders become their image, array and IDX files, sorted by path."""
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            expanded.extend(sorted(p for p in path.rglob("*") if p.is_file() and _is_input(p)))
        elif path.exists():
            expanded.append(path)
        else:
            raise PipelineInputError(f"{path}: no such file or folder")
    return expanded


@dataclass(frozen=True)
class Chunk:
    images: np.ndarray  # (n, 28, 28), uint8 or float 0..1
    sources: list[str]


def quarantine_reason(name: str, error: BaseException) -> str:
    """Why a file was skipped: our own message for a known problem, else what failed. A file
    never stops the batch, whatever its bytes make a reader raise."""
    if isinstance(error, PipelineInputError):
        return str(error)
    return f"{name}: cannot be read ({type(error).__name__}: {error})"


def iter_chunks(
    paths: list[Path], chunk_size: int, errors: list[tuple[str, str]]
) -> Iterator[Chunk]:
    """Yield the inputs in chunks of at most `chunk_size` images, in input order.

    Whatever cannot be read or trusted is appended to `errors` as (source, reason) and
    skipped: a whole file, or single images of an array with bad pixel values.
    """
    if chunk_size < 1:
        raise PipelineInputError(f"chunk size {chunk_size}; expected a positive number of images")
    pending_images: list[np.ndarray] = []
    pending_sources: list[str] = []

    def flush() -> Chunk:
        chunk = Chunk(np.stack(pending_images), list(pending_sources))
        pending_images.clear()
        pending_sources.clear()
        return chunk

    for path in expand_inputs(paths):
        name = display_name(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                pending_images.append(read_image_file(path, name))
                pending_sources.append(name)
            except Exception as error:  # noqa: BLE001 - any per-file failure is a quarantine
                errors.append((name, quarantine_reason(name, error)))
            if len(pending_images) == chunk_size:
                yield flush()
            continue
        if pending_images:
            yield flush()
        try:
            array = read_array_file(path)
        except Exception as error:  # noqa: BLE001 - any per-file failure is a quarantine
            errors.append((name, quarantine_reason(name, error)))
            continue
        yield from _array_chunks(array, name, chunk_size, errors)
    if pending_images:
        yield flush()


def _array_chunks(
    array: np.ndarray | NpyImages, name: str, chunk_size: int, errors: list[tuple[str, str]]
) -> Iterator[Chunk]:
    for start in range(0, len(array), chunk_size):
        stop = min(start + chunk_size, len(array))
        try:
            images = np.asarray(array[start:stop])
            rejected = unusable_rows(images)
        except Exception as error:  # noqa: BLE001 - the rest of the batch is delivered
            errors.append((name, f"{name}: cannot read images {start}..{stop - 1} ({error})"))
            return
        sources = [f"{name}[{index}]" for index in range(start, stop)]
        if rejected:
            for row, reason in rejected:
                errors.append((sources[row], f"{sources[row]}: {reason}"))
            keep = np.ones(len(images), dtype=bool)
            keep[[row for row, _ in rejected]] = False
            images, sources = images[keep], [s for s, k in zip(sources, keep, strict=True) if k]
        if len(images):
            yield Chunk(images, sources)


def read_inputs(paths: list[Path]) -> InputBatch:
    """All inputs at once (for reports over the whole batch); see `iter_chunks`."""
    errors: list[tuple[str, str]] = []
    chunks = list(iter_chunks(paths, chunk_size=65536, errors=errors))
    if len({chunk.images.dtype for chunk in chunks}) > 1:
        chunks = [Chunk(unit_floats(chunk.images), chunk.sources) for chunk in chunks]
    images = (
        np.concatenate([chunk.images for chunk in chunks])
        if chunks
        else np.zeros((0, *IMAGE_SHAPE), dtype=np.uint8)
    )
    return InputBatch(images, [source for chunk in chunks for source in chunk.sources], errors)
