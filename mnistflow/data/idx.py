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


def _read_maybe_gzipped(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise PipelineInputError(
            f"{path}: gzip stream is truncated or corrupt ({type(error).__name__}: {error})"
        ) from None


def parse_idx(path: Path, expected_magic: int) -> np.ndarray:
    """One LeCun IDX file (gzipped or not): big-endian magic, uint32 dims, then uint8 data."""
    path = Path(path)
    require_file(path)
    content = _read_maybe_gzipped(path)
    if len(content) < 4:
        raise PipelineInputError(f"{path}: {len(content)} bytes; too short for an IDX header")
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise PipelineInputError(
            f"{path}: IDX magic number 0x{magic:08x}; expected 0x{expected_magic:08x} "
            f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'}, uint8)"
        )
    ndim = expected_magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise PipelineInputError(f"{path}: truncated IDX header ({len(content)} bytes)")
    dims = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = int(np.prod(dims))
    found_size = len(content) - header_size
    if found_size != expected_size:
        raise PipelineInputError(
            f"{path}: IDX header announces shape {dims} ({expected_size} bytes of data) but the "
            f"file holds {found_size}; it is truncated or corrupt"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(dims)
