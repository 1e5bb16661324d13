"""A Prefect server kept for the project between commands, stopping itself once idle.

Why: a flow needs Prefect's API. Without PREFECT_API_URL, Prefect 3 starts a temporary server
in every process and stops it at exit (uvicorn and the database's migration check: most of a
no-op `mnistflow run`, benchmarks/results/flow_overhead.md); 3.x offers no in-process API (its
ephemeral mode is that subprocess). So the first `mnistflow run` starts `prefect server start`
on the project's Prefect home under a keeper process in a session of its own (outside the
run's process guard), recorded in .prefect/server.json as a `mnistflow serve` server is, and
later commands use it. Like a build tool's daemon (Gradle's, Bazel's server) it goes away by
itself: the keeper stops the server once no command has used it for the keep time
(MNISTFLOW_KEEP_SERVER_SECONDS, default 900) and no flow run is pending or running.
`mnistflow server stop` stops it at once. MNISTFLOW_KEEP_SERVER_SECONDS=0 keeps none: each
run starts its temporary server, as before (the tests' default: they stop what they start).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.local_server import SERVER_LOG, free_port, local_prefect_server
from mnistflow.orchestration.prefect_home import (
    prefect_home,
    read_server_record,
    running_project_server,
    server_is_healthy,
)
from mnistflow.orchestration.process_guard import OWNER_VARIABLE
from mnistflow.orchestration.writer_lock import exclusive_lock

KEEP_VARIABLE = "MNISTFLOW_KEEP_SERVER_SECONDS"
DEFAULT_KEEP_SECONDS = 900.0
# Touched by every command that uses the kept server: the keeper's measure of idleness.
LAST_USED = "server-last-used"
START_LOCK = "server-start.lock"
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
# Flow runs in these states keep the server, however long since a command touched it.
ACTIVE_STATES = ["PENDING", "RUNNING", "CANCELLING"]
# A server that fails this many health checks in a row is gone: the keeper ends too.
MISSED_HEALTH_CHECKS = 3


def keep_seconds() -> float:
    """How long an idle kept server lives (MNISTFLOW_KEEP_SERVER_SECONDS); 0: keep none."""
    text = os.environ.get(KEEP_VARIABLE, "").strip()
    if not text:
        return DEFAULT_KEEP_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 7 * 24 * 3600:
        raise PipelineInputError(
            f"{KEEP_VARIABLE}={text!r}: expected seconds from 0 (keep no server) to 604800"
        )
    return seconds


def mark_used(root: Path) -> None:
    """Touch the last-used file, never through a link planted in its place."""
    path = prefect_home(root) / LAST_USED
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        os.close(os.open(path, flags, 0o644))
        os.utime(path, follow_symlinks=False)
    except OSError as error:
        raise PipelineInputError(f"{path}: cannot mark the kept server used ({error})") from None


def ensure_kept_server(root: Path) -> tuple[str, bool] | None:
    """(the URL of the project's server, whether it was started now): the one up (kept or
    `mnistflow serve`'s), else a kept one started now; None where keeping is off
    (MNISTFLOW_KEEP_SERVER_SECONDS=0)."""
    seconds = keep_seconds()
    if seconds <= 0:
        return None
    home = prefect_home(root)
    home.mkdir(parents=True, exist_ok=True)
    # Two commands starting at once start one server.
    with exclusive_lock(home / START_LOCK, START_TIMEOUT_SECONDS):
        url, started = running_project_server(root), False
        if url is None:
            url, started = start_keeper(root, seconds), True
        mark_used(root)
    return url, started


def start_keeper(root: Path, seconds: float) -> str:
    """Start the keeper, detached, and wait (bounded) until its server answers."""
    home = prefect_home(root)
    environment = {
        key: value
        for key, value in os.environ.items()
        # Not the run's guard mark (its guardian would stop the server when the run ends),
        # nor a server URL of the caller's.
        if key not in (OWNER_VARIABLE, "PREFECT_API_URL")
    }
    with open(home / SERVER_LOG, "ab") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "mnistflow.orchestration.kept_server", str(root), str(seconds)],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while (url := running_project_server(root)) is None:
        if keeper.poll() is not None or time.monotonic() > deadline:
            if keeper.poll() is None:
                keeper.terminate()
            raise PipelineInputError(
                f"the project's Prefect server did not start within {START_TIMEOUT_SECONDS:.0f} "
                f"s; see {home / SERVER_LOG} (or set {KEEP_VARIABLE}=0 for a temporary one)"
            )
        time.sleep(0.2)
    return url


def active_flow_runs(api_url: str) -> int:
    """Flow runs pending or running on the server; a server that cannot say counts as busy."""
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ACTIVE_STATES}}}}).encode()
    request = urllib.request.Request(
        f"{api_url}/flow_runs/count",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(json.loads(response.read()))
    except (OSError, ValueError):
        return 1


def idle_seconds(root: Path, since: float) -> float:
    """Seconds since a command last used the server (since the keeper started, at most)."""
    try:
        last_used = max(since, (prefect_home(root) / LAST_USED).stat().st_mtime)
    except OSError:
        last_used = since
    return time.time() - last_used


def ended_within(process: subprocess.Popen, seconds: float) -> bool:
    """Whether `process` ends within `seconds`, looking once a second: a keeper whose server
    ended (`mnistflow server stop`, a crash) ends within a second rather than at its next
    health check, without waking 20 times a second as Popen.wait(timeout) does."""
    deadline = time.monotonic() + seconds
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return True


def keep(root: Path, seconds: float) -> None:
    """The keeper: run the server until it has been idle `seconds`, or it stops, or SIGTERM."""
    started = time.time()
    poll = min(15.0, max(0.5, seconds / 4))

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with local_prefect_server(root, free_port()) as server:
        stops = f"stops after {seconds:.0f} s idle"
        print(f"kept Prefect server {server.api_url} ({stops})", flush=True)
        missed = 0
        while missed < MISSED_HEALTH_CHECKS:
            if ended_within(server.process, poll):
                return
            missed = 0 if server_is_healthy(server.api_url) else missed + 1
            if idle_seconds(root, started) > seconds and not active_flow_runs(server.api_url):
                print(f"idle for {seconds:.0f} s: stopping {server.api_url}", flush=True)
                return


def kept_server_pid(root: Path) -> tuple[int, str] | None:
    """(pid, API URL) of the project's recorded server, only where that pid really is a
    `prefect server start` on the recorded loopback port keeping its state in this project's
    Prefect home (the record is a workspace file: a planted one must not aim a signal at
    another process, another project's server included)."""
    try:
        record = read_server_record(root)
        pid, api_url = int(record["pid"]), str(record["api_url"])
        process = psutil.Process(pid)
        command, home = process.cmdline(), process.environ().get("PREFECT_HOME")
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    port = api_url.removeprefix("http://127.0.0.1:").removesuffix("/api")
    expected = ["server", "start", "--host", "127.0.0.1", "--port", port]
    if (
        api_url != f"http://127.0.0.1:{port}/api"
        or not port.isdigit()
        or len(command) < 8
        or Path(command[1]).name != "prefect"
        or command[2:8] != expected
        or home is None
        or Path(home).resolve() != prefect_home(root).resolve()
    ):
        return None
    return pid, api_url


def stop_kept_server(root: Path) -> str | None:
    """Stop the project's server (its keeper ends with it); its URL, None when none ran."""
    found = kept_server_pid(root)
    if found is None:
        return None
    pid, api_url = found
    try:
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_SECONDS)
    except psutil.NoSuchProcess:
        pass  # it ended on its own meanwhile
    except psutil.Error as error:
        raise PipelineInputError(f"cannot stop the project's server (pid {pid}): {error}") from None
    return api_url


def main() -> None:
    root, seconds = Path(sys.argv[1]), float(sys.argv[2])
    keep(root, seconds)


if __name__ == "__main__":
    main()
