"""Read prediction inputs — .npz/.npy arrays, IDX files, image files or folders — as images.

Arrays keep their dtype (uint8 0..255 or float 0..1) and become N×28×28; image files are
converted the MNIST way (`mnistflow.serving.images`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import IMAGE_SHAPE, IMAGE_SIZE, PIXELS_PER_IMAGE
from mnistflow.data.idx import IDX_IMAGES_MAGIC, parse_idx
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


def _as_images(array: np.ndarray, origin: str) -> np.ndarray:
    _check_layout(array.shape, array.dtype, origin)
    return array.reshape(-1, *IMAGE_SHAPE)


class NpyImages:
    """Images in an .npy file, read slice by slice from disk.

    Not a memory map: pages of a mapped file stay resident once touched, so RSS would grow
    with the file; reading each chunk into fresh memory keeps it flat.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(handle)
                self.offset = handle.tell()
        except (OSError, ValueError) as error:
            raise PipelineInputError(f"{path}: not a readable .npy file ({error})") from None
        if fortran_order or dtype.hasobject:
            raise PipelineInputError(f"{path}: Fortran-ordered or object array; expected C order")
        _check_layout(shape, dtype, str(path))
        self.shape, self.dtype = shape, dtype
        self.row_size = int(np.prod(shape[1:]))

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


def read_array_file(path: Path) -> np.ndarray | NpyImages:
    """An .npy (read lazily), an .npz (its `x`, `images`, `x_test` or only array) or IDX."""
    name = path.name
    try:
        if name.endswith(".npy"):
            return NpyImages(path)
        if name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                keys = [key for key in ("x", "images", "x_test") if key in archive.files]
                if not keys and len(archive.files) == 1:
                    keys = archive.files
                if not keys:
                    raise PipelineInputError(
                        f"{path}: arrays {archive.files}; expected one named x, images or "
                        "x_test, or a single array"
                    )
                return _as_images(archive[keys[0]], f"{path}[{keys[0]}]")
    except PipelineInputError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise PipelineInputError(f"{path}: cannot read ({type(error).__name__}: {error})") from None
    return parse_idx(path, IDX_IMAGES_MAGIC)


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


def iter_chunks(
    paths: list[Path], chunk_size: int, errors: list[tuple[str, str]]
) -> Iterator[Chunk]:
    """Yield the inputs in chunks of at most `chunk_size` images, in input order.

    Arrays with a bad shape or dtype raise PipelineInputError (the batch cannot be trusted);
    unreadable image files are appended to `errors` as (file, reason) and skipped.
    """
    pending_images: list[np.ndarray] = []
    pending_sources: list[str] = []

    def flush() -> Chunk:
        chunk = Chunk(np.stack(pending_images), list(pending_sources))
        pending_images.clear()
        pending_sources.clear()
        return chunk

    for path in expand_inputs(paths):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                pending_images.append(read_image_file(path))
                pending_sources.append(str(path))
            except PipelineInputError as error:
                errors.append((str(path), str(error)))
            if len(pending_images) == chunk_size:
                yield flush()
            continue
        if pending_images:
            yield flush()
        array = read_array_file(path)
        for start in range(0, len(array), chunk_size):
            stop = min(start + chunk_size, len(array))
            yield Chunk(
                np.asarray(array[start:stop]), [f"{path}[{index}]" for index in range(start, stop)]
            )
    if pending_images:
        yield flush()


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
