"""The orchestration as users drive it, for real: `mnistflow run` killed with SIGKILL mid-training,
and Prefect's own CLI deploying to a work pool served by a process worker.

Each test works in a throwaway git repository with its own Prefect home; nothing here touches
the developer's ~/.prefect or the project's .prefect/.
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

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mnistflow.orchestration.local_server import local_prefect_server
from mnistflow.orchestration.prefect_home import SERVER_RECORD, prefect_home
from mnistflow.orchestration.process_guard import OWNER_VARIABLE, marked_processes, process_identity
from mnistflow.training.checkpoints import snapshots
from tests.test_pipeline_end_to_end import copy_project, environment, set_params
from tests.test_prefect_home import free_port

BIN = Path(sys.executable).parent


def clean_environment(**extra: str) -> dict[str, str]:
    """The test environment without any Prefect or guard settings of this pytest process."""
    env = {
        key: value
        for key, value in environment().items()
        if not key.startswith("PREFECT_") and key != OWNER_VARIABLE
    }
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return {**env, **extra}


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_a_killed_run_leaves_nothing_behind_and_the_next_run_completes(tmp_path):
    workspace = copy_project(tmp_path / "project")
    set_params(workspace, {"train": {"epochs": 3}})
    checkpoints = workspace / ".checkpoints" / "train"
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as log:
        first = subprocess.Popen(
            [str(BIN / "mnistflow"), "run"],
            cwd=workspace,
            env=clean_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        owner = process_identity(first.pid)
        wait_until(
            lambda: snapshots(checkpoints) or first.poll() is not None,
            600,
            "training's first epoch",
        )
        assert first.poll() is None, first_log.read_text()[-3000:]
        descendants = psutil.Process(first.pid).children(recursive=True)
        commands = [" ".join(process.cmdline()) for process in descendants]
        assert any("stages.train" in command for command in commands), commands
        assert any("uvicorn" in command for command in commands), commands  # Prefect's server
        # A crash, an OOM kill: the run's own process only, as the kernel would do it.
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()

    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, [" ".join(process.cmdline()) for process in alive]
    assert not marked_processes(owner)

    started = time.monotonic()
    second = subprocess.run(
        [str(BIN / "mnistflow"), "run", "--wait", "60"],
        cwd=workspace,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-4000:]
    assert "waiting for mnistflow-writer.lock" not in output
    assert f"the previous run (pid {first.pid}" in output
    assert "resuming from the checkpoint" in output
    assert time.monotonic() - started < 600
    assert json.loads((workspace / "reports" / "train.json").read_text())["epochs_run"] == 3
    # Its flow runs are in the project's Prefect home, the one `mnistflow serve` uses.
    assert (workspace / ".prefect" / "prefect.db").is_file()


def prefect(*arguments: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(BIN / "prefect"), *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"prefect {' '.join(arguments)}:\n{output[-4000:]}"
    return output


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start` on a free port with a private home."""
    with local_prefect_server(tmp_path, free_port()) as (api_url, _):
        yield clean_environment(PREFECT_HOME=str(prefect_home(tmp_path)), PREFECT_API_URL=api_url)


def test_prefect_cli_deploys_to_a_work_pool_and_a_worker_runs_it(
    tmp_path, prefect_server, small_onnx_model, mnist_slice
):
    workspace = copy_project(tmp_path / "project")
    (workspace / "models").mkdir(exist_ok=True)
    (workspace / "models" / "model.onnx").write_bytes(small_onnx_model.read_bytes())
    inbox = workspace / "data" / "inbox"
    inbox.mkdir(parents=True)
    for index in range(12):
        Image.fromarray(mnist_slice.x_test[index]).save(inbox / f"digit-{index:02d}.png")
    env = {**prefect_server, "MNISTFLOW_ROOT": str(workspace)}

    prefect("work-pool", "create", "mnistflow", "--type", "process", "--base-job-template",
            "prefect-work-pool.json", cwd=workspace, env=env)  # fmt: skip
    deployed = prefect("--no-prompt", "deploy", "--all", cwd=workspace, env=env)
    assert "nightly-pipeline/nightly" in deployed and "inbox-predictions/inbox" in deployed
    listed = prefect("deployment", "ls", cwd=workspace, env=env)
    assert "nightly-pipeline/nightly" in listed and "inbox-predictions/inbox" in listed
    prefect("flow-run", "ls", cwd=workspace, env=env)

    prefect("deployment", "run", "inbox-predictions/inbox", cwd=workspace, env=env)
    # The pool's template takes no job variables: a caller cannot choose the command the
    # worker runs, nor its environment or folder.
    planted = tmp_path / "ran-the-callers-command"
    for variable in (f"command=touch {planted}", 'env={"PYTHONSTARTUP": "/tmp/x.py"}',
                     "working_dir=/"):  # fmt: skip
        refused = "(?s)deployment run.*Validation failed. Failure reason: Additional"
        with pytest.raises(AssertionError, match=refused):
            prefect("deployment", "run", "inbox-predictions/inbox", "--job-variable", variable,
                    cwd=workspace, env=env)  # fmt: skip
    # A caller may choose nothing but repredict: any other parameter is refused by the server.
    with pytest.raises(AssertionError, match="prefect deployment run"):
        prefect("deployment", "run", "inbox-predictions/inbox", "--param", "model=/etc/passwd",
                cwd=workspace, env=env)  # fmt: skip
    # An API caller's own pickle with its own hash: refused by the flow before any stage runs.
    hostile = tmp_path / "mnist.pkl.gz"
    hostile.write_bytes(b"a pickle that would run code")
    request = json.dumps({"data.source": str(hostile), "data.sha256": "0" * 64})
    prefect("deployment", "run", "nightly-pipeline/nightly", "--params",
            json.dumps({"overrides": json.loads(request)}), cwd=workspace, env=env)  # fmt: skip
    prefect("worker", "start", "--pool", "mnistflow", "--run-once", cwd=workspace, env=env)
    assert not planted.exists()
    refused = flow_runs(prefect_server["PREFECT_API_URL"], "nightly-pipeline")
    assert [run["state_type"] for run in refused] == ["FAILED"], refused
    assert "deployment parameters refused" in refused[0]["state"]["message"]
    assert not (workspace / "data" / "raw" / "mnist.npz").exists()

    # The worker exits 0 whatever the run's end: ask the server for the state.
    runs = flow_runs(prefect_server["PREFECT_API_URL"], "batch-predict")
    assert [run["state_type"] for run in runs] == ["COMPLETED"], runs
    [partition] = (workspace / "predictions" / "inbox").glob("part-*.parquet")
    rows = pq.read_table(partition).to_pydict()
    assert len(rows["file"]) == 12
    labels = mnist_slice.y_test[[int(name[6:8]) for name in rows["file"]]]
    assert np.mean(np.array(rows["predicted"]) == labels) >= 0.5


def api_filter(api_url: str, what: str, body: dict, timeout: float = 30) -> list[dict]:
    """POST /{what}/filter on the server's API: the matching objects."""
    request = urllib.request.Request(
        f"{api_url}/{what}/filter",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def flow_runs(api_url: str, flow_name: str) -> list[dict]:
    """The flow runs of `flow_name` that are not merely scheduled, from the server's API."""
    return api_filter(
        api_url,
        "flow_runs",
        {
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}},
        },
    )


def test_the_guardian_stops_what_a_killed_process_started(tmp_path):
    """The mechanism alone: a parent marks and guards its children, is SIGKILLed, and its
    grandchild (re-parented to init by then) is stopped too."""
    script = (
        "import subprocess, sys, time\n"
        "from mnistflow.orchestration.process_guard import guard_children\n"
        "guard_children()\n"
        "subprocess.Popen(['sh', '-c', 'sleep 600; true'])\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert parent.stdout.readline().strip() == b"started"
        owner = process_identity(parent.pid)
        children = psutil.Process(parent.pid).children(recursive=True)
        assert any("sleep" in " ".join(child.cmdline()) for child in children)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs(children, timeout=20)
        assert not alive
        assert not marked_processes(owner)
    finally:
        if parent.poll() is None:
            parent.kill()


def deployment_names(api_url: str) -> set[str]:
    """The deployments the server holds, by name; none while it does not answer."""
    try:
        return {deployment["name"] for deployment in api_filter(api_url, "deployments", {}, 10)}
    except (OSError, ValueError):  # urllib's URLError is an OSError
        return set()


def test_serve_without_a_server_starts_one_serves_the_deployments_and_stops_it(tmp_path):
    """`mnistflow serve` with no PREFECT_API_URL: a local server on the project's Prefect home,
    prefect.yaml's deployments registered on it, and both gone after a Ctrl-C."""
    workspace = copy_project(tmp_path / "project")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = clean_environment(MNISTFLOW_PREFECT_HOME=str(tmp_path / "prefect-home"))
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        serving = subprocess.Popen(
            [str(BIN / "mnistflow"), "serve", "--port", str(port)],
            cwd=workspace, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(
            lambda: deployment_names(api_url) >= {"nightly", "inbox"} or serving.poll() is not None,
            180,
            "the deployments on the served server",
        )
        assert serving.poll() is None, log.read_text()[-3000:]
        assert f"serving against {api_url}" in log.read_text()
        # One server: Prefect's client in the serve process uses it too, and starts no
        # temporary server of its own (it would, were the setting only in the environment).
        assert "Starting temporary server" not in log.read_text(), log.read_text()[-3000:]
        server = [
            child
            for child in psutil.Process(serving.pid).children(recursive=True)
            if "server" in child.cmdline() and str(port) in child.cmdline()
        ]
        assert server, "no `prefect server start` under the serve process"
        serving.send_signal(signal.SIGINT)
        serving.wait(60)
        _, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, f"the served server outlived `mnistflow serve`: {alive}"
        assert not (tmp_path / "prefect-home" / SERVER_RECORD).exists()
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.wait(10)
