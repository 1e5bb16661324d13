"""LeCun's IDX format (the original MNIST distribution, also Fashion-MNIST's), gzipped or not.

A big-endian header — magic 0x00000803 for uint8 images, 0x00000801 for uint8 labels —, the
dimensions as uint32, then the raw bytes.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mnistflow.errors import PipelineInputError, require_file

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def _is_gzipped(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _describe(magic: int) -> str:
    return "images" if magic == IDX_IMAGES_MAGIC else "labels"


def read_idx_header(path: Path, expected_magic: int) -> tuple[int, ...]:
    """The dimensions an IDX file's header announces, read without reading (or inflating)
    the data, so a forged header is refused before anything is allocated for it."""
    path = Path(path)
    require_file(path)
    ndim = expected_magic & 0xFF
    header_size = 4 + 4 * ndim
    opener = gzip.open if _is_gzipped(path) else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(header_size)
    except (OSError, EOFError, zlib.error) as error:
        raise PipelineInputError(
            f"{path}: gzip stream is truncated or corrupt ({type(error).__name__}: {error})"
        ) from None
    if len(header) < 4:
        raise PipelineInputError(f"{path}: {len(header)} bytes; too short for an IDX header")
    magic = int.from_bytes(header[:4], "big")
    if magic != expected_magic:
        raise PipelineInputError(
            f"{path}: IDX magic number 0x{magic:08x}; expected 0x{expected_magic:08x} "
            f"({_describe(expected_magic)}, uint8)"
        )
    if len(header) < header_size:
        raise PipelineInputError(f"{path}: truncated IDX header ({len(header)} bytes)")
    return tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def parse_idx(path: Path, expected_magic: int, max_items: int | None = None) -> np.ndarray:
    """One LeCun IDX file (gzipped or not): big-endian magic, uint32 dims, then uint8 data.
    `max_items` refuses a header announcing more items before the data is read."""
    path = Path(path)
    dims = read_idx_header(path, expected_magic)
    if max_items is not None and dims[0] > max_items:
        raise PipelineInputError(
            f"{path}: IDX header announces {dims[0]:,} {_describe(expected_magic)}; more than "
            f"{max_items:,} are refused (split the file)"
        )
    content = path.read_bytes()
    if content[:2] == b"\x1f\x8b":
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as error:
            raise PipelineInputError(
                f"{path}: gzip stream is truncated or corrupt ({type(error).__name__}: {error})"
            ) from None
    header_size = 4 + 4 * len(dims)
    expected_size = int(np.prod(dims))
    found_size = len(content) - header_size
    if found_size != expected_size:
        raise PipelineInputError(
            f"{path}: IDX header announces shape {dims} ({expected_size} bytes of data) but the "
            f"file holds {found_size}; it is truncated or corrupt"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(dims)
