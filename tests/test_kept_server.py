"""A Prefect server kept for the project between runs: started once, used by later commands,
gone by itself once idle, stopped on request, and never a planted record's victim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mnistflow.orchestration.kept_server import (
    KEEP_VARIABLE,
    ensure_kept_server,
    kept_server_pid,
    stop_kept_server,
)
from mnistflow.orchestration.prefect_home import (
    SERVER_RECORD,
    prefect_home,
    running_project_server,
    server_is_healthy,
)

WAIT_SECONDS = 90
FLOW = """
from prefect import flow

@flow
def hello() -> int:
    return 42

assert hello() == 42
"""


def keepers(root: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "mnistflow.orchestration.kept_server" in command and str(root) in command:
            found.append(process)
    return found


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {WAIT_SECONDS} s"
        time.sleep(0.5)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    yield root
    stop_kept_server(root)
    for process in keepers(root):
        process.kill()
        process.wait(10)


def test_one_server_serves_later_runs_and_stops_once_idle(project, monkeypatch, tmp_path):
    monkeypatch.setenv(KEEP_VARIABLE, "5")
    url, started = ensure_kept_server(project)
    assert started and server_is_healthy(url) and running_project_server(project) == url
    server_pid, _ = kept_server_pid(project)
    [keeper] = keepers(project)
    # A session of its own: a Ctrl-C in the starting command's terminal does not reach it.
    assert os.getsid(keeper.pid) == keeper.pid != os.getsid(0)
    # A later command finds it instead of starting another.
    assert ensure_kept_server(project) == (url, False)
    assert len(keepers(project)) == 1
    # A flow in another process runs against it.
    ran = subprocess.run(
        [sys.executable, "-c", FLOW],
        env={**_environment(), "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "client")},
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert ran.returncode == 0, ran.stderr
    # Unused for its keep time and with no flow run active, it goes away with its keeper.
    wait_for(lambda: not psutil.pid_exists(server_pid) and not keepers(project), "idle stop")
    assert not (prefect_home(project) / SERVER_RECORD).exists()
    assert running_project_server(project) is None


def test_stop_ends_it_at_once_and_a_planted_record_aims_at_nothing(project, monkeypatch):
    monkeypatch.setenv(KEEP_VARIABLE, "600")
    url, _ = ensure_kept_server(project)
    server_pid, _ = kept_server_pid(project)
    assert stop_kept_server(project) == url
    wait_for(lambda: not psutil.pid_exists(server_pid) and not keepers(project), "stop")
    assert stop_kept_server(project) is None
    # A record naming another process (here a sleep) is not obeyed.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (prefect_home(project) / SERVER_RECORD).write_text(
            json.dumps(
                {"api_url": "http://127.0.0.1:1/api", "pid": bystander.pid,
                 "project": str(project.resolve())}
            )
        )  # fmt: skip
        assert kept_server_pid(project) is None and stop_kept_server(project) is None
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)


def test_keeping_none_is_a_setting(project, monkeypatch):
    monkeypatch.setenv(KEEP_VARIABLE, "0")
    assert ensure_kept_server(project) is None and keepers(project) == []
    from mnistflow.errors import PipelineInputError

    monkeypatch.setenv(KEEP_VARIABLE, "soon")
    with pytest.raises(PipelineInputError, match="MNISTFLOW_KEEP_SERVER_SECONDS='soon'"):
        ensure_kept_server(project)


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


def test_only_this_projects_server_is_stopped_and_a_fifo_record_blocks_nothing(project, tmp_path):
    """A stand-in named `prefect server start … --port P` but keeping its state elsewhere
    (another project's server) is not stopped through a planted record; a FIFO in the
    record's place is no record, read without waiting."""
    fake = tmp_path / "other" / "bin" / "prefect"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    other_home = tmp_path / "other" / ".prefect"
    stand_in = subprocess.Popen(
        [str(fake), "server", "start", "--host", "127.0.0.1", "--port", "4999"],
        env={**_environment(), "PREFECT_HOME": str(other_home)},
        start_new_session=True,  # its shell and the sleep under it are stopped as one group
    )
    try:
        prefect_home(project).mkdir(parents=True, exist_ok=True)
        record = prefect_home(project) / SERVER_RECORD
        record.write_text(json.dumps({"api_url": "http://127.0.0.1:4999/api",
                                      "pid": stand_in.pid, "project": str(project)}))  # fmt: skip
        assert kept_server_pid(project) is None and stop_kept_server(project) is None
        assert stand_in.poll() is None
    finally:
        os.killpg(stand_in.pid, signal.SIGKILL)
        stand_in.wait(10)
    record.unlink()
    os.mkfifo(record)
    started = time.monotonic()
    assert running_project_server(project) is None and kept_server_pid(project) is None
    assert time.monotonic() - started < 5
