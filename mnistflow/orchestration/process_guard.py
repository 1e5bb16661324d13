"""No orphans: every process a pipeline run starts dies with it, even after a `kill -9`.

A run's children are not only its own: Prefect starts a temporary API server, DVC starts a
shell per stage, the shell starts the stage's Python. Once the run is killed they are
re-parented to init and keep going: a server holding a port, a training process writing
checkpoints beside the next run's. The kernel offers no "kill my whole tree when I die"
(PR_SET_PDEATHSIG must be set by each child, and Prefect's and DVC's children are not ours),
so a run marks its environment with an owner mark that every descendant inherits, and a small
guardian process, started beside it, waits for the run to end and then stops every process
that still carries the mark.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterable

import psutil

# The environment variable every descendant of a guarded process inherits: "<pid>:<start>",
# where <start> is the kernel's start time in clock ticks since boot (/proc/<pid>/stat): unique
# for the life of the machine (a reused pid has another), and unmoved by wall-clock steps.
OWNER_VARIABLE = "MNISTFLOW_OWNER"
# Seconds a marked process gets between SIGTERM and SIGKILL.
TERMINATE_GRACE_SECONDS = 10.0


def process_identity(pid: int | None = None) -> str:
    """The "<pid>:<start ticks>" of a process, the current one by default."""
    pid = pid or os.getpid()
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    # Field 22 of proc_pid_stat(5), starttime; fields[0] here is field 3, after "pid (comm)".
    return f"{pid}:{fields[19]}"


def is_dead_owner(owner: str) -> bool:
    """`owner` is a well-formed "<pid>:<start ticks>" mark of a process that no longer runs."""
    if not re.fullmatch(r"[1-9][0-9]{0,9}:[0-9]{1,20}", owner):
        return False
    pid = int(owner.split(":", 1)[0])
    try:
        return process_identity(pid) != owner
    except psutil.NoSuchProcess:
        return True


def _start_ticks(identity: str) -> int:
    return int(identity.split(":", 1)[1])


def marked_processes(owner: str, exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """The live processes of this user whose environment carries `owner` as their owner mark
    and that started after the owner did (a child cannot be older than its parent)."""
    skipped = {os.getpid(), *exclude}
    found = []
    owner_started = _start_ticks(owner) if re.fullmatch(r"[0-9]+:[0-9]+", owner) else None
    for process in psutil.process_iter():
        if process.pid in skipped:
            continue
        try:
            if process.environ().get(OWNER_VARIABLE) != owner:
                continue
            if process.uids().real != os.getuid():
                continue
            if owner_started is not None and (
                _start_ticks(process_identity(process.pid)) < owner_started
            ):
                continue
            found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_marked_processes(owner: str, grace_seconds: float = TERMINATE_GRACE_SECONDS) -> list[int]:
    """SIGTERM every process marked with `owner`, SIGKILL those alive after the grace period;
    repeated until none is left (a dying shell may have started one more). Returns their pids."""
    stopped: list[int] = []
    for _ in range(5):
        processes = marked_processes(owner)
        if not processes:
            break
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=grace_seconds)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=grace_seconds)
        stopped.extend(process.pid for process in processes)
    return stopped


def guard_children() -> str:
    """Mark this process's future children and start its guardian; idempotent per process.

    Returns the owner mark. Call it before anything starts a child (Prefect's temporary
    server starts with the first flow call).
    """
    identity = process_identity()
    if os.environ.get(OWNER_VARIABLE) == identity:
        return identity
    os.environ[OWNER_VARIABLE] = identity
    environment = {key: value for key, value in os.environ.items() if key != OWNER_VARIABLE}
    # Its own session: a Ctrl-C or a kill of the run's process group must not take the guardian
    # down before it has done its work.
    subprocess.Popen(
        [sys.executable, "-m", "mnistflow.orchestration.process_guard", str(os.getpid()), identity],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    return identity


def wait_for_exit(pid: int, identity: str) -> None:
    """Block until the process `pid` with this identity has ended."""
    try:
        if process_identity(pid) != identity:
            return  # already gone, its pid reused
        descriptor = os.pidfd_open(pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    except (AttributeError, OSError):
        # No pidfd (kernel < 5.3): poll.
        try:
            while process_identity(pid) == identity:
                time.sleep(0.5)
        except psutil.NoSuchProcess:
            pass
        return
    with os.fdopen(descriptor) as handle:
        select.select([handle], [], [])


def main() -> None:
    parser = argparse.ArgumentParser(description="Stop a run's marked processes once it ends.")
    parser.add_argument("pid", type=int)
    parser.add_argument("identity")
    arguments = parser.parse_args()
    wait_for_exit(arguments.pid, arguments.identity)
    stopped = stop_marked_processes(arguments.identity)
    if stopped:
        print(
            f"mnistflow: process {arguments.pid} ended; stopped its leftover processes {stopped}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
