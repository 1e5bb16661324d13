"""Writes that must survive a power loss: atomic, then flushed to the disk, file and folder.

A rename is atomic but not durable: after a crash the folder may still name the old file, or
the new name may point at blocks never written. Outputs whose loss costs work that cannot be
redone (the inbox's manifest and partitions: files that have left the inbox cannot be
predicted again) are fsynced before the rename and their folder after it. This wraps
mnistflow.core.atomic rather than changing it: every pipeline stage depends on atomic.py, and
stage outputs are recomputable, so they keep the cheaper write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mnistflow.core.atomic import atomic_file


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's content and metadata to the disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def durable_file(target: Path) -> Iterator[Path]:
    """Like atomic_file, and the new content and its name are on the disk when this returns."""
    target = Path(target)
    with atomic_file(target) as temporary:
        yield temporary
        fsync_path(temporary)
    fsync_path(target.parent)
