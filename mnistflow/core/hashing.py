"""Content hashes: of files, read in blocks (MNIST sources, export lineage, DVC's md5), and of
images, one digest per image (exact duplicates, the label model's index of its own data)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _file_digest(path: Path, digest) -> str:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    return _file_digest(path, hashlib.sha256())


def md5_of_file(path: Path) -> str:
    """The md5 DVC records for a file in dvc.lock: what binds a report to the data it read."""
    return _file_digest(path, hashlib.md5())


def image_digests(images, digest_size: int) -> list[bytes]:
    """A BLAKE2b digest of `digest_size` bytes per image (its pixels' bytes, C order)."""
    import numpy as np

    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=digest_size).digest() for row in rows]
