"""Small state files read back from folders others may write: never through a link, never
blocking on a FIFO, never more than a bound (a link to /dev/zero would otherwise fill memory)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_small_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`; OSError where it cannot be opened (a link included), ValueError
    where it is not a regular file or holds more than `max_bytes`."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptor = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"{path}: not a regular file")
        content = os.read(descriptor, max_bytes + 1)
    finally:
        os.close(descriptor)
    if len(content) > max_bytes:
        raise ValueError(f"{path}: more than {max_bytes} bytes")
    return content
