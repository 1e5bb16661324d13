"""One pipeline writer per workspace, released by the kernel when its holder dies.

DVC refuses a second concurrent `repro` in a workspace, but only per command: two pipeline
runs would interleave their stages. So a run holds an exclusive `flock` on a file in the
repository (.dvc/tmp/, git-ignored by DVC) for its whole length. The kernel drops the lock
the moment the holder's process ends, however it ends: a `kill -9`, an OOM kill or a reboot
never leaves a stale lock behind, unlike a lease on a server (Prefect's global concurrency
slots are never expired on its temporary server, which is what this replaced).

The lock file names its holder (pid, host, command, start time), so a run that has to wait
says for whom, and waits a bounded time. A holder killed before its guardian could stop its
children leaves them marked (mnistflow.orchestration.process_guard); the next holder stops
them before it writes anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.process_guard import (
    guard_children,
    is_dead_owner,
    stop_marked_processes,
)
from mnistflow.paths import WRITER_LOCK

logger = logging.getLogger(__name__)

# A nightly run that finds another one still going waits this long by default, then fails
# with the holder named: long enough for a full training run here, short of the next night.
DEFAULT_WAIT_SECONDS = 3600.0
POLL_SECONDS = 0.5
REPORT_EVERY_SECONDS = 60.0


class WriterLockTimeout(PipelineInputError):
    """Another run held the workspace for longer than this run would wait."""


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it recorded no details)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
        f"({holder.get('command')})"
    )


# What a holder record may hold. The file is state anyone with write access to the folder could
# have planted, so its content is validated, never believed: other keys and types are dropped.
HOLDER_FIELDS = {"pid": int, "owner": str, "host": str, "command": str, "started": str}


def _read_holder(descriptor: int) -> dict:
    try:
        content = os.pread(descriptor, 1 << 16, 0)
        holder = json.loads(content.decode("utf-8")) if content.strip() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(holder, dict):
        return {}
    return {
        key: value
        for key, value in holder.items()
        if key in HOLDER_FIELDS
        and isinstance(value, HOLDER_FIELDS[key])
        and not isinstance(value, bool)
    }


def _open_lock_file(path: Path) -> int:
    """The lock file, opened without following a symlink and only if it is a regular file
    this user owns: a planted link or file must not make a run truncate or lock something
    else."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise PipelineInputError(
            f"{path}: cannot open the lock file ({error.strerror}); a symbolic link or another "
            "kind of file stands where it belongs: remove it"
        ) from None
    status = os.fstat(descriptor)
    # One link only: a hard link planted at the lock path would make a run truncate its target.
    if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid() or status.st_nlink != 1:
        os.close(descriptor)
        raise PipelineInputError(
            f"{path}: not a regular, singly linked file owned by this user; refusing to use it "
            "as a lock file"
        )
    return descriptor


def _write_holder(descriptor: int, owner: str) -> None:
    holder = {
        "pid": os.getpid(),
        "owner": owner,
        "host": socket.gethostname(),
        "command": " ".join(
            os.path.basename(part) if index == 0 else part for index, part in enumerate(sys.argv)
        )[:300],
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode("utf-8"), 0)
    os.fsync(descriptor)


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def exclusive_writer(
    root: Path,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    report: Callable[[str], None] = logger.warning,
):
    """Hold the workspace's writer lock for the block (see exclusive_lock)."""
    return exclusive_lock(Path(root) / WRITER_LOCK, wait_seconds, report)


@contextlib.contextmanager
def exclusive_lock(
    path: Path,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    report: Callable[[str], None] = logger.warning,
) -> Iterator[dict]:
    """Hold the lock file `path` for the block; yields the previous holder's record ({} when
    the previous holder finished cleanly).

    Waits up to `wait_seconds` for a live holder (reporting whom it waits for), then raises
    WriterLockTimeout naming it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = guard_children()
    descriptor = _open_lock_file(path)
    try:
        started = time.monotonic()
        reported_at: float | None = None
        while not _try_lock(descriptor):
            waited = time.monotonic() - started
            holder = _read_holder(descriptor)
            if waited >= wait_seconds:
                raise WriterLockTimeout(
                    f"{path}: held by {describe_holder(holder)}; gave up after "
                    f"{waited:.0f} s. Wait for it to finish or stop it; a dead holder releases "
                    "the lock by itself."
                )
            if reported_at is None or time.monotonic() - reported_at >= REPORT_EVERY_SECONDS:
                report(
                    f"waiting for {path.name}, held by {describe_holder(holder)} "
                    f"({waited:.0f} of at most {wait_seconds:.0f} s)"
                )
                reported_at = time.monotonic()
            time.sleep(POLL_SECONDS)
        previous = _read_holder(descriptor)
        # Its guardian normally stopped them already; this covers a guardian killed too. Only
        # a well-formed owner that is provably gone (process_guard.is_dead_owner) gets its
        # processes stopped: a planted record cannot aim signals at a live process.
        if (
            previous.get("owner")
            and previous["owner"] != owner
            and is_dead_owner(previous["owner"])
        ):
            leftovers = stop_marked_processes(previous["owner"])
            if leftovers:
                report(
                    f"stopped processes {leftovers} left by the dead run of pid "
                    f"{previous.get('pid')}"
                )
        _write_holder(descriptor, owner)
        try:
            yield previous
        finally:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
