"""The team's stack for real: `python -m mnistflow.stack up` in a temporary folder, each service
doing its real work (SQL on PostgreSQL, a flow run through Prefect's server stored in
PostgreSQL with its task on the stack's Dask worker, `dvc push`/`pull` through the S3 bucket,
a wrong secret refused), then `down`, after which every process is gone and every port free.

The stack's folder is made under the system's temporary folder rather than pytest's
(/tmp/pytest-of-root is 0700 and PostgreSQL runs as the `postgres` account when the tests run
as root); it is removed at the end. Every process is stopped by its own recorded pid.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from mnistflow.orchestration.process_guard import OWNER_VARIABLE
from mnistflow.stack import postgres, seaweedfs, team
from mnistflow.stack.credentials import read_aws_credentials
from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.machine import read_machine_settings
from mnistflow.stack.ports import port_is_free
from mnistflow.stack.processes import interpreter_tool, stop_process
from mnistflow.stack.state import read_state
from tests.team_machines import run
from tests.test_pipeline_end_to_end import GIT_IDENTITY

STACK_COMMAND = [sys.executable, "-m", "mnistflow.stack"]
COMMAND_TIMEOUT = 180


def environment(scratch: Path, **extra: str) -> dict[str, str]:
    """This environment without any Prefect, AWS or process-guard settings of the pytest
    process; DVC's and git's user-level files in `scratch`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "AWS_")) and key != OWNER_VARIABLE
    }
    env.update(
        GIT_IDENTITY,
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(scratch / "dvc-site"),
        XDG_CONFIG_HOME=str(scratch / "config"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return {**env, **extra}


def dvc(*arguments: str, cwd: Path, env: dict[str, str], expect_failure: bool = False) -> str:
    return run([sys.executable, "-m", "dvc", *arguments], cwd, env, expect_failure)


def git(*arguments: str, cwd: Path, env: dict[str, str]) -> str:
    return run(["git", *arguments], cwd, env)


def has_ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A stack brought up by its command line; stopped by its recorded pids whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix="mnistflow-stack-"))
    scratch = tmp_path_factory.mktemp("stack-scratch")
    layout = StackLayout.of(directory)
    try:
        started = time.monotonic()
        output = run([*STACK_COMMAND, "up", "--dir", str(directory)], scratch,
                     environment(scratch))  # fmt: skip
        up_seconds = time.monotonic() - started
        yield {"layout": layout, "scratch": scratch, "output": output, "seconds": up_seconds}
    finally:
        state = read_state(layout)
        for service in reversed((state.services if state else {}).values()):
            stop_process(service)
        shutil.rmtree(directory, ignore_errors=True)


def test_up_reports_the_stack_and_writes_what_machines_use(stack):
    layout: StackLayout = stack["layout"]
    state = read_state(layout)
    assert set(state.services) == {
        "postgres", "seaweedfs", "dask-scheduler", "dask-worker", "prefect-server"
    }  # fmt: skip
    assert state.startup_seconds < 120 and stack["seconds"] < 150
    assert "team stack up in" in stack["output"]
    assert len(stack["output"].splitlines()) <= 8
    # Every port distinct, every one listened on by the stack, on loopback only.
    ports = state.ports
    assert len(set(ports.values())) == len(ports)
    pids = {service.pid for service in state.services.values()}
    family = pids | {
        child.pid for pid in pids for child in psutil.Process(pid).children(recursive=True)
    }
    listening = {
        connection.laddr
        for connection in psutil.net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN and connection.pid in family
    }
    assert {address.ip for address in listening} == {"127.0.0.1"}, listening
    assert {address.port for address in listening} == set(ports.values())

    settings = read_machine_settings(layout.machine_json_file)
    env_file = layout.machine_env_file.read_text()
    assert f"PREFECT_API_URL={settings.prefect_api_url}" in env_file
    assert f"MNISTFLOW_DVC_ENDPOINT_URL={settings.dvc_endpoint_url}" in env_file
    # Where the keys are, never the keys themselves; the keys private to this user.
    keys = read_aws_credentials(layout.aws_credentials_file)
    for public in (env_file, layout.machine_json_file.read_text(), layout.state_file.read_text()):
        assert keys.secret_access_key not in public
    assert layout.aws_credentials_file.stat().st_mode & 0o077 == 0
    assert layout.postgres_password_file.stat().st_mode & 0o077 == 0
    assert (layout.git_remote / "HEAD").is_file()


def test_a_second_up_is_refused_while_the_stack_runs(stack):
    with pytest.raises(StackError, match="already running"):
        team.up(stack["layout"].root)


def test_postgres_answers_sql_and_holds_prefects_tables(stack):
    layout: StackLayout = stack["layout"]
    state = read_state(layout)
    password = layout.postgres_password_file.read_text().strip()
    url = postgres.connection_url(state.ports["postgres"], password)
    [(version,)] = postgres.query(url, "SELECT version()")
    assert version.startswith("PostgreSQL ")
    # Prefect's migrations ran on this database: its state lives here, not in SQLite.
    tables = {name for (name,) in postgres.query(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )}  # fmt: skip
    assert {"flow_run", "task_run", "deployment", "work_pool"} <= tables
    assert not list((layout.prefect_home).glob("*.db"))
    with pytest.raises(Exception, match="password authentication failed"):
        postgres.query(postgres.connection_url(state.ports["postgres"], "wrong"), "SELECT 1")


FLOW_ON_THE_STACK = """
import json, os, sys
from prefect import flow, task
from prefect_dask import DaskTaskRunner

@task
def where_am_i() -> int:
    return os.getpid()

@flow(task_runner=DaskTaskRunner(address=sys.argv[1]))
def on_the_stack() -> list[int]:
    return [future.result() for future in [where_am_i.submit() for _ in range(2)]]

state = on_the_stack(return_state=True)
print("RESULT " + json.dumps({"pids": state.result(), "state": state.type.value}))
"""


def test_a_flow_runs_through_the_server_on_postgres_with_tasks_on_the_dask_worker(stack):
    layout: StackLayout = stack["layout"]
    scratch: Path = stack["scratch"]
    settings = read_machine_settings(layout.machine_json_file)
    env = environment(
        scratch, PREFECT_API_URL=settings.prefect_api_url, PREFECT_HOME=str(scratch / "prefect")
    )
    output = run([sys.executable, "-c", FLOW_ON_THE_STACK, settings.dask_address], scratch, env)
    [line] = [line for line in output.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["state"] == "COMPLETED"
    # The tasks ran in the stack's worker process (the nanny's child), not in the flow's.
    state = read_state(layout)
    worker_processes = {
        child.pid for child in psutil.Process(state.services["dask-worker"].pid).children()
    }
    assert set(result["pids"]) <= worker_processes, (result, worker_processes)
    # The run is recorded in PostgreSQL.
    password = layout.postgres_password_file.read_text().strip()
    url = postgres.connection_url(state.ports["postgres"], password)
    rows = postgres.query(url, "SELECT state_type FROM flow_run WHERE name IS NOT NULL")
    assert ("COMPLETED",) in rows


def test_dvc_push_and_pull_through_the_bucket_byte_for_byte(stack):
    layout: StackLayout = stack["layout"]
    scratch: Path = stack["scratch"]
    env = environment(scratch)
    publisher, reader = scratch / "machine-a", scratch / "machine-b"
    publisher.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=publisher, env=env)
    dvc("init", "--quiet", cwd=publisher, env=env)
    run([*STACK_COMMAND, "join", "--dir", str(layout.root), "--clone", str(publisher),
         "--publishes"], publisher, env)  # fmt: skip
    content = os.urandom(3 * 1024 * 1024)
    (publisher / "blob.bin").write_bytes(content)
    dvc("add", "blob.bin", cwd=publisher, env=env)
    git("add", "blob.bin.dvc", ".gitignore", ".dvc/config", ".dvc/.gitignore", cwd=publisher,
        env=env)  # fmt: skip
    git("commit", "--quiet", "-m", "data", cwd=publisher, env=env)
    dvc("push", cwd=publisher, env=env)

    settings = read_machine_settings(layout.machine_json_file)
    keys = read_aws_credentials(layout.aws_credentials_file)
    client = seaweedfs.s3_client(settings.dvc_endpoint_url, keys)
    stored = client.list_objects_v2(Bucket="mnistflow", Prefix="dvc/")
    assert [item["Size"] for item in stored["Contents"]] == [len(content)]

    # Nothing of the stack is committed: the remote and its keys are in the local config.
    assert not git("status", "--porcelain", cwd=publisher, env=env).strip()
    committed = git("show", "HEAD:.dvc/config", cwd=publisher, env=env)
    assert "s3://" not in committed and keys.secret_access_key not in committed
    assert git("config", "--local", "mnistflow.publish", cwd=publisher, env=env).strip() == "true"

    git("clone", "--quiet", str(publisher), str(reader), cwd=scratch, env=env)
    run([*STACK_COMMAND, "join", "--dir", str(layout.root), "--clone", str(reader)], reader, env)
    assert git("config", "--local", "mnistflow.publish", cwd=reader, env=env).strip() == "false"
    dvc("pull", cwd=reader, env=env)
    assert (reader / "blob.bin").read_bytes() == content

    # A wrong secret: the server refuses, and DVC says so.
    dvc("remote", "modify", "--local", "team", "access_key_id", keys.access_key_id, cwd=reader,
        env=env)  # fmt: skip
    dvc("remote", "modify", "--local", "team", "secret_access_key", "not-the-secret",
        cwd=reader, env=env)  # fmt: skip
    (reader / "blob.bin").unlink()
    shutil.rmtree(reader / ".dvc" / "cache")
    refused = dvc("pull", cwd=reader, env=env, expect_failure=True)
    assert "403" in refused or "Forbidden" in refused or "SignatureDoesNotMatch" in refused, (
        refused[-2000:]
    )
    assert not (reader / "blob.bin").exists()


def test_a_port_in_use_is_named_before_anything_starts(tmp_path):
    with socket.socket() as holder:
        port = next(port for port in range(20000, 30000) if port_is_free(port))
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(StackError, match=rf"port in use on 127\.0\.0\.1: {port} \(postgres\)"):
            team.up(tmp_path / "other", first_port=port)
    assert not (tmp_path / "other").exists()


def test_a_missing_program_is_named():
    with pytest.raises(StackError, match="`no-such-server` not found beside .*PyPI package x"):
        interpreter_tool("no-such-server", "x")


def test_down_stops_every_process_and_frees_every_port(stack):
    layout: StackLayout = stack["layout"]
    scratch: Path = stack["scratch"]
    state = read_state(layout)
    pids = {service.pid for service in state.services.values()}
    family = pids | {
        child.pid for pid in pids for child in psutil.Process(pid).children(recursive=True)
    }
    started = time.monotonic()
    output = run([*STACK_COMMAND, "down", "--dir", str(layout.root)], scratch,
                 environment(scratch))  # fmt: skip
    assert time.monotonic() - started < 60
    assert "every port free" in output
    assert all(has_ended(pid) for pid in family), [pid for pid in family if not has_ended(pid)]
    assert all(port_is_free(port) for port in state.ports.values())
    assert read_state(layout).services == {}
    sockets = seaweedfs.local_grpc_sockets(team.seaweedfs_ports(state.ports))
    assert not [path for path in sockets if path.exists()]
    # SeaweedFS's own log files are in the stack's logs/, not in the system's /tmp.
    assert list(layout.logs.glob("weed.*.log.*"))
    pid = state.services["seaweedfs"].pid
    assert not list(Path(tempfile.gettempdir()).glob(f"weed.*.log.*.{pid}"))
    stopped = subprocess.run([*STACK_COMMAND, "status", "--dir", str(layout.root)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stopped.returncode == 1 and "down" in stopped.stdout


def test_a_state_file_naming_another_process_signals_nothing(tmp_path):
    """A state file edited to name a process the stack did not start, its start time read
    from /proc and all: that process carries no service mark, so it is never signalled."""
    from mnistflow.orchestration.process_guard import process_identity
    from mnistflow.stack.processes import ServiceProcess

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        planted = ServiceProcess(name="victim", pid=bystander.pid,
                                 identity=process_identity(bystander.pid),
                                 log=str(tmp_path / "victim.log"), grace_seconds=2)  # fmt: skip
        assert stop_process(planted) == "not running"
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)


def state_file_content(tmp_path) -> dict:
    """A well-formed stack.json for a stack in `tmp_path`, with one service."""
    from mnistflow.stack.state import PORT_NAMES

    service = {"name": "dask-scheduler", "pid": 4242, "identity": "4242:1",
               "log": str(tmp_path / "logs" / "dask-scheduler.log")}  # fmt: skip
    return {"directory": str(tmp_path), "bucket": "b", "services": {"dask-scheduler": service},
            "ports": {name: 20000 + index for index, name in enumerate(PORT_NAMES)}}  # fmt: skip


@pytest.mark.parametrize(
    "field, value",
    [("port", 70000), ("stop_signal", "SIGSTOP"), ("grace_seconds", 1e9), ("pid", 1),
     ("ports", {}), ("log", "/elsewhere/logs/dask-scheduler.log"), ("directory", "/srv/other"),
     ("pid", "4242"), ("port", True), ("grace_seconds", "10"), ("startup_seconds", "NaN"),
     ("log", "{root}/logs/.."), ("log", "{root}/logs/./dask-scheduler.log"),
     ("log", "{root}/logs/dask\0scheduler.log")],
)  # fmt: skip
def test_a_state_file_out_of_bounds_is_refused_by_name(tmp_path, field, value):
    """stack.json lies in a folder others may write: a port no socket has, a signal that
    would freeze a server instead of stopping it, an endless grace, init's pid, ports missing
    (refused before anything is stopped), a service of another stack (recognised by its log),
    another stack's folder; a pid, port or grace of the wrong JSON type, a startup time that
    is no number, a log path that is the folder itself, or dotted, or holds a NUL."""
    layout = StackLayout.of(tmp_path)
    state = state_file_content(layout.root)
    layout.state_file.write_text(json.dumps(state))
    assert read_state(layout).services["dask-scheduler"].pid == 4242  # well-formed: read
    service = state["services"]["dask-scheduler"]
    if isinstance(value, str):
        value = value.replace("{root}", str(layout.root))
    if field == "port":
        state["ports"]["dask_scheduler"] = value
    elif field in ("ports", "directory"):
        state[field] = value
    elif field == "startup_seconds":
        state[field] = float(value)  # json.dumps writes NaN, which a JSON parser may take
    else:
        service[field] = value
    layout.state_file.write_text(json.dumps(state))
    with pytest.raises(StackError, match="not a stack state file|directory: expected") as refused:
        read_state(layout)
    assert str(layout.state_file) in str(refused.value)
    assert ("ports" if field == "port" else field) in str(refused.value)


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "not utf-8"])
def test_a_state_file_that_is_no_small_file_is_refused_at_once(tmp_path, kind):
    layout = StackLayout.of(tmp_path)
    if kind == "fifo":
        os.mkfifo(layout.state_file)
    elif kind == "link to /dev/zero":
        layout.state_file.symlink_to("/dev/zero")
    else:
        layout.state_file.write_bytes(b"\xff\xfe{")
    started = time.monotonic()
    with pytest.raises(StackError, match="not a stack state file"):
        read_state(layout)
    assert time.monotonic() - started < 5
