"""Machines on the team's stack, as the README's "Running as a team" sets them up: clones of the
stack's bare git remote, each with its own Prefect home, joined to the stack; Prefect workers
started and stopped by their own pids; deployment runs read back from the server's API.

Shared by tests/test_team_end_to_end.py and benchmarks/team_overhead.py. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil

from mnistflow.orchestration.process_guard import OWNER_VARIABLE
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.machine import read_machine_settings

BIN = Path(sys.executable).parent
STACK_COMMAND = [sys.executable, "-m", "mnistflow.stack"]
COMMAND_TIMEOUT = 600
TERMINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
NIGHTLY = "nightly-pipeline/nightly"
INBOX = "inbox-predictions/inbox"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "mnistflow tests",
    "GIT_AUTHOR_EMAIL": "tests@mnistflow.invalid",
    "GIT_COMMITTER_NAME": "mnistflow tests",
    "GIT_COMMITTER_EMAIL": "tests@mnistflow.invalid",
}


def base_environment(scratch: Path) -> dict[str, str]:
    """This environment without any Prefect, AWS or process-guard settings of the caller;
    DVC's and git's user-level files in `scratch`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "AWS_", "MNISTFLOW_")) and key != OWNER_VARIABLE
    }
    env.update(
        GIT_IDENTITY,
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
        DVC_NO_ANALYTICS="1",
        XDG_CONFIG_HOME=str(scratch / "config"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], expect_failure: bool = False) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    output = result.stdout + result.stderr
    if expect_failure:
        assert result.returncode != 0, f"{' '.join(command)} succeeded:\n{output[-3000:]}"
    else:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return output


@dataclass(frozen=True)
class Machine:
    """A clone of the team's repository with its own Prefect home and environment."""

    name: str
    clone: Path
    env: dict[str, str]

    def run(self, *command: str, expect_failure: bool = False) -> str:
        return run(list(command), self.clone, self.env, expect_failure)

    def dvc(self, *arguments: str, expect_failure: bool = False) -> str:
        return self.run(sys.executable, "-m", "dvc", *arguments, expect_failure=expect_failure)

    def git(self, *arguments: str) -> str:
        return self.run("git", *arguments)

    def prefect(self, *arguments: str) -> str:
        return self.run(str(BIN / "prefect"), *arguments)


def join_machine(layout: StackLayout, scratch: Path, name: str, publishes: bool) -> Machine:
    """`git clone` of the stack's remote, `python -m mnistflow.stack join`, and the machine's
    environment: team.env's settings, its own PREFECT_HOME and DVC site cache, MNISTFLOW_ROOT."""
    settings = read_machine_settings(layout.machine_json_file)
    home = scratch / f"{name}-home"
    clone = scratch / name
    env = {
        **base_environment(scratch),
        **settings.environment(),
        "PREFECT_HOME": str(home / ".prefect-mnistflow"),
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "MNISTFLOW_ROOT": str(clone),
        # Workers poll every 2 s rather than 10 s: runs start sooner, nothing else changes.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        # A heartbeat every 30 s (Prefect's minimum; default 180): a run whose process died is
        # marked Crashed by prefect-zombie-automation.json within about 2 minutes.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }
    run(["git", "clone", "--quiet", settings.git_remote, str(clone)], scratch, env)
    join = [*STACK_COMMAND, "join", "--dir", str(layout.root), "--clone", str(clone)]
    run(join + (["--publishes"] if publishes else []), clone, env)
    return Machine(name, clone, env)


@dataclass
class Worker:
    """`prefect worker start` of one machine, on one work queue."""

    process: subprocess.Popen
    log: Path

    def flow_run_processes(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_worker(machine: Machine, queue: str, log: Path) -> Worker:
    command = [str(BIN / "prefect"), "worker", "start", "--pool", "mnistflow",
               "--work-queue", queue, "--limit", "1"]  # fmt: skip
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command, cwd=machine.clone, env=machine.env, stdout=output, stderr=subprocess.STDOUT
        )
    return Worker(process, log)


def stop_worker(worker: Worker, timeout: float = 30) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; its flow-run processes too."""
    if worker.process.poll() is None:
        children = worker.flow_run_processes()
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=timeout)
        for process in alive:
            process.kill()


def schedule_nightly_in(api_url: str, seconds: float) -> datetime:
    """Give `nightly` a daily schedule whose next run is `seconds` from now, in place of its
    02:00 UTC cron, through the API (as the UI's schedule editor does); the server's scheduler
    creates that run. Its start time.

    A schedule change through the API marks the deployment updated, so the scheduler's
    recent-deployments loop (every 5 s) schedules it rather than its main loop (every 60 s).
    `prefect deploy --interval --anchor-date` again would not do: it kept the first anchor."""
    start = (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)
    [deployment] = named_deployments(api_url, NIGHTLY)
    schedule = {"interval": 86400, "anchor_date": start.isoformat(), "timezone": "UTC"}
    api(api_url, f"/deployments/{deployment['id']}",
        {"schedules": [{"schedule": schedule, "active": True}]}, method="PATCH")  # fmt: skip
    return start


def api(url: str, path: str, body: dict | None = None, method: str | None = None) -> object:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method or ("POST" if body is not None else "GET"),
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        content = response.read()
    return json.loads(content) if content else None


def named_deployments(api_url: str, deployment: str) -> list[dict]:
    """The deployment called "flow/deployment", as a list of none or one."""
    flow_name, name = deployment.split("/")
    return list(api(api_url, "/deployments/filter", {
        "flows": {"name": {"any_": [flow_name]}}, "deployments": {"name": {"any_": [name]}},
    }))  # fmt: skip


def deployment_runs(api_url: str, deployment: str) -> list[dict]:
    """Every flow run of `deployment` ("flow/deployment"), oldest expected start first."""
    deployments = named_deployments(api_url, deployment)
    if not deployments:
        return []
    runs = api(api_url, "/flow_runs/filter", {
        "flow_runs": {"deployment_id": {"any_": [deployments[0]["id"]]}},
        "sort": "EXPECTED_START_TIME_ASC",
    })  # fmt: skip
    return list(runs)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_for(condition: Callable[[], object], timeout: float, what: str, poll: float = 1.0):
    """The first true value of `condition`; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except OSError:
            value = None  # The server is down or restarting: ask again.
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def scheduled_run(api_url: str, start: datetime, states: tuple[str, ...]) -> dict | None:
    """The nightly run the scheduler made for `start`, once its state is one of `states`."""
    for flow_run in deployment_runs(api_url, NIGHTLY):
        expected = parse_time(flow_run["expected_start_time"])
        if abs((expected - start).total_seconds()) < 1 and flow_run["state_type"] in states:
            return flow_run
    return None


def run_seconds(flow_run: dict) -> float:
    return (parse_time(flow_run["end_time"]) - parse_time(flow_run["start_time"])).total_seconds()


def trigger_and_wait(machine: Machine, deployment: str, timeout: float) -> tuple[dict, float]:
    """`prefect deployment run`, then the run's end; (the run, seconds from trigger to end)."""
    api_url = machine.env["PREFECT_API_URL"]
    before = {flow_run["id"] for flow_run in deployment_runs(api_url, deployment)}
    started = time.monotonic()
    machine.prefect("deployment", "run", deployment)

    def ended() -> dict | None:
        for flow_run in deployment_runs(api_url, deployment):
            if flow_run["id"] not in before and flow_run["state_type"] in TERMINAL_STATES:
                return flow_run
        return None

    flow_run = wait_for(ended, timeout, f"a run of {deployment} to end", poll=0.5)
    return flow_run, time.monotonic() - started
