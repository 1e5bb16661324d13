"""Read prediction inputs — .npz/.npy arrays, IDX files, image files or folders — as images.

Arrays keep their dtype (uint8 0..255 or float 0..1) and become N×28×28; image files are
converted the MNIST way (`mnistflow.serving.images`).

No input can sink a batch: a file that cannot be read or trusted (truncated, corrupt, a header
that promises more than the file holds, a wrong shape or dtype) is quarantined whole, an image
with non-finite or out-of-range pixels is quarantined alone, each with its reason, and the
rest of the batch is delivered. Arrays are streamed and verified by `mnistflow.serving.arrays`
(headers before data, compressed streams inflated a block at a time); images are decoded only
in the format their suffix names, with their cost capped before decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import IMAGE_SHAPE
from mnistflow.data.pixels import unit_floats
from mnistflow.errors import PipelineInputError
from mnistflow.serving.arrays import StreamedImages, array_images, display_name
from mnistflow.serving.images import IMAGE_SUFFIXES, read_image_file

# Rows of one file quarantined one by one (bad pixel values); past this, one row counts the
# rest, so a crafted array cannot make the error list grow with its size.
MAX_ROW_ERRORS_PER_FILE = 1000


@dataclass(frozen=True)
class InputBatch:
    images: np.ndarray  # (N, 28, 28), uint8 0..255 or float 0..1
    sources: list[str]  # one per image: "file" or "file[index]"
    errors: list[tuple[str, str]]  # (file, reason) for inputs that could not be read


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
    """Why a file was skipped: our own message for a known problem, else the kind of failure
    (a reader's own message may quote the file's bytes). A file never stops the batch, whatever
    its bytes make a reader raise."""
    if isinstance(error, PipelineInputError):
        return str(error)
    return f"{name}: cannot be read ({type(error).__name__})"


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
            array = array_images(path)
        except Exception as error:  # noqa: BLE001 - any per-file failure is a quarantine
            errors.append((name, quarantine_reason(name, error)))
            continue
        yield from _array_chunks(array, name, chunk_size, errors)
    if pending_images:
        yield flush()


def _array_chunks(
    array: StreamedImages, name: str, chunk_size: int, errors: list[tuple[str, str]]
) -> Iterator[Chunk]:
    """The usable images of one array file in chunks; its unusable rows quarantined one by
    one (up to MAX_ROW_ERRORS_PER_FILE, then counted), a read failure ends the file."""
    start, rows_quarantined = 0, 0
    blocks = array.blocks(chunk_size)
    while start < len(array):
        try:
            images = next(blocks)
            rejected = unusable_rows(images)
        except Exception as error:  # noqa: BLE001 - the rest of the batch is delivered
            errors.append((name, f"{name}: cannot read images from {start} on ({error})"))
            break
        stop = start + len(images)
        sources = [f"{name}[{index}]" for index in range(start, stop)]
        if rejected:
            for row, reason in rejected:
                if rows_quarantined < MAX_ROW_ERRORS_PER_FILE:
                    errors.append((sources[row], f"{sources[row]}: {reason}"))
                rows_quarantined += 1
            keep = np.ones(len(images), dtype=bool)
            keep[[row for row, _ in rejected]] = False
            images, sources = images[keep], [s for s, k in zip(sources, keep, strict=True) if k]
        if len(images):
            yield Chunk(images, sources)
        start = stop
    blocks.close()
    if rows_quarantined > MAX_ROW_ERRORS_PER_FILE:
        unlisted = rows_quarantined - MAX_ROW_ERRORS_PER_FILE
        errors.append(
            (
                name,
                f"{name}: {unlisted:,} more images with unusable pixel values (the first "
                f"{MAX_ROW_ERRORS_PER_FILE:,} are listed one by one)",
            )
        )


# `read_inputs` holds a whole batch in memory (a report over the batch needs all of it).
MAX_BATCH_IMAGES = 1_000_000


def read_inputs(paths: list[Path], max_images: int = MAX_BATCH_IMAGES) -> InputBatch:
    """All inputs at once (for reports over the whole batch), at most `max_images` of them;
    see `iter_chunks`."""
    errors: list[tuple[str, str]] = []
    chunks, held = [], 0
    for chunk in iter_chunks(paths, chunk_size=65536, errors=errors):
        held += len(chunk.images)
        if held > max_images:
            raise PipelineInputError(
                f"the inputs hold more than {max_images:,} images; a batch report holds them "
                "all in memory, so check a sample or split the batch"
            )
        chunks.append(chunk)
    if len({chunk.images.dtype for chunk in chunks}) > 1:
        chunks = [Chunk(unit_floats(chunk.images), chunk.sources) for chunk in chunks]
    images = (
        np.concatenate([chunk.images for chunk in chunks])
        if chunks
        else np.zeros((0, *IMAGE_SHAPE), dtype=np.uint8)
    )
    return InputBatch(images, [source for chunk in chunks for source in chunk.sources], errors)
