"""The stack's server processes: started detached with their own log, known by pid and start
time, stopped by their own ids with bounded waits.

A service outlives the `up` command that started it, so it gets its own session (a Ctrl-C in
that terminal must not reach it) and its output goes to a log file. `down` finds it again by
pid and kernel start time (mnistflow.orchestration.process_guard.process_identity), so a pid
reused by another process since is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field

from mnistflow.orchestration.process_guard import OWNER_VARIABLE, process_identity
from mnistflow.stack.errors import StackError

POLL_SECONDS = 0.1
# Set in each service's environment to its log's path: `down` signals only a process that
# carries it (a state file edited to name another pid, start time and all, names no process
# with this mark).
SERVICE_MARK = "MNISTFLOW_STACK_SERVICE"
# Seconds a process that ignored its stop signal and got SIGKILL has to be gone.
KILL_WAIT_SECONDS = 10.0
LOG_TAIL_LINES = 15


class ServiceProcess(BaseModel):
    """One running server process of the stack, as the state file records it."""

    # Strict, like the state file it is read back from (mnistflow/stack/state.py).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    pid: int = Field(gt=1)
    identity: str
    log: str
    # The signal the server shuts down cleanly on, and how long that may take before SIGKILL
    # (bounded: the file is read back from a folder others may write).
    stop_signal: Literal["SIGTERM", "SIGINT"] = "SIGTERM"
    grace_seconds: float = Field(15.0, ge=0, le=120)


def interpreter_tool(name: str, package: str) -> Path:
    """A command installed beside this interpreter (the venv's), never another on PATH."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise StackError(
            f"`{name}` not found beside {sys.executable}; expected it from the PyPI package "
            f"{package}: pip install -e '.[team]'"
        )
    return path


def detached_environment(**settings: str) -> dict[str, str]:
    """This environment for a service, plus `settings`. Without the owner mark of a guarded
    mnistflow run: the stack outlives whoever started it, and that run's guardian would stop
    every process carrying its mark."""
    environment = {key: value for key, value in os.environ.items() if key != OWNER_VARIABLE}
    return {**environment, **settings}


def start_process(
    name: str,
    command: list[str],
    log: Path,
    environment: dict[str, str],
    cwd: Path,
    user: str | None = None,
    stop_signal: Literal["SIGTERM", "SIGINT"] = "SIGTERM",
    grace_seconds: float = 15.0,
) -> ServiceProcess:
    """Start `command` detached, its output appended to `log`; as `user` when given."""
    log.parent.mkdir(parents=True, exist_ok=True)
    account = {"user": user, "group": user, "extra_groups": []} if user else {}
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**environment, SERVICE_MARK: str(log)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **account,
        )
    return ServiceProcess(
        name=name,
        pid=process.pid,
        identity=process_identity(process.pid),
        log=str(log),
        stop_signal=stop_signal,
        grace_seconds=grace_seconds,
    )


def live_process(service: ServiceProcess) -> psutil.Process | None:
    """The service's process while it runs (not a zombie, its pid not reused), else None."""
    try:
        if process_identity(service.pid) != service.identity:
            return None
        process = psutil.Process(service.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process if process.environ().get(SERVICE_MARK) == service.log else None
    except psutil.Error:
        return None


def log_tail(service: ServiceProcess) -> str:
    try:
        lines = Path(service.log).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, service: ServiceProcess
) -> float:
    """Poll `condition` until true; seconds it took. StackError, with the end of the service's
    log, when the service dies first or `timeout` passes."""
    started = time.monotonic()
    while not condition():
        if live_process(service) is None:
            raise StackError(
                f"{service.name} exited before {what}; the end of {service.log}:\n"
                f"{log_tail(service)}"
            )
        if time.monotonic() - started > timeout:
            raise StackError(
                f"{service.name}: {what} not within {timeout:.0f} s; the end of "
                f"{service.log}:\n{log_tail(service)}"
            )
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def _has_ended(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_ended(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended; those still running after `timeout`.

    Ended includes a zombie: it runs nothing and holds no port, and its reaping is its
    parent's business (psutil.wait_procs waits for the reaping, which an init that reaps
    slowly, as here, delays by seconds)."""
    deadline = time.monotonic() + timeout
    alive = [process for process in processes if not _has_ended(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS / 2)
        alive = [process for process in alive if not _has_ended(process)]
    return alive


def stop_process(service: ServiceProcess) -> str:
    """Stop the service and every process under it: its stop signal, a bounded wait, then
    SIGKILL for what is left. Returns "not running", "stopped" or "killed"; StackError naming
    the pids still there after SIGKILL."""
    root = live_process(service)
    if root is None:
        return "not running"
    family = [root]
    with contextlib.suppress(psutil.NoSuchProcess):
        # Collected first: once the root is gone its children are no longer found under it.
        family.extend(root.children(recursive=True))
        root.send_signal(getattr(signal, service.stop_signal))
    alive = wait_ended(family, service.grace_seconds)
    if not alive:
        return "stopped"
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    alive = wait_ended(alive, KILL_WAIT_SECONDS)
    if alive:
        raise StackError(
            f"{service.name}: pids {[process.pid for process in alive]} still running "
            f"{KILL_WAIT_SECONDS:.0f} s after SIGKILL"
        )
    return "killed"
