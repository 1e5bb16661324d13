"""The one-writer lock: a live holder is named and waited for a bounded time; a dead one
releases at once, and its leftover processes are stopped even when its guardian died too."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from mnistflow.orchestration.writer_lock import WriterLockTimeout, exclusive_writer
from tests.project_root import PROJECT_ROOT

HOLD = """
import subprocess, sys, time
from pathlib import Path
from mnistflow.orchestration.writer_lock import exclusive_writer
with exclusive_writer(Path(sys.argv[1])):
    subprocess.Popen(["sleep", "600"])
    print("held", flush=True)
    time.sleep(600)
"""


def start_holder(root):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE
    )
    assert holder.stdout.readline().strip() == b"held"
    return holder


def test_a_live_holder_is_named_and_waited_for_a_bounded_time(tmp_path):
    holder = start_holder(tmp_path)
    try:
        reports = []
        with (
            pytest.raises(WriterLockTimeout, match=f"held by pid {holder.pid} on"),
            exclusive_writer(tmp_path, wait_seconds=1.0, report=reports.append),
        ):
            pass
        assert reports and f"held by pid {holder.pid}" in reports[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holder_without_its_guardian_leaves_nothing_running(tmp_path):
    holder = start_holder(tmp_path)
    children = psutil.Process(holder.pid).children()
    guardian = next(
        c for c in children if "mnistflow.orchestration.process_guard" in " ".join(c.cmdline())
    )
    sleeper = next(c for c in children if c.name() == "sleep")
    guardian.kill()  # the worst case: the guardian dies first ...
    deadline = time.monotonic() + 10
    while guardian.is_running() and guardian.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    holder.send_signal(signal.SIGKILL)  # ... then the run
    holder.wait()
    assert sleeper.is_running()
    with exclusive_writer(tmp_path, wait_seconds=5.0) as previous:
        assert previous["pid"] == holder.pid  # the dead run is named
        assert not sleeper.is_running()  # and what it left is stopped before any write
