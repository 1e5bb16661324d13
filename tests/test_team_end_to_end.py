"""The project on the team's stack, end to end and under faults, for real.

One stack (`python -m mnistflow.stack up`: PostgreSQL, Prefect's server on it, SeaweedFS's S3,
a Dask scheduler and worker, a bare git remote) serves the whole module, with three clones of
its git remote, each with its own Prefect home: machine A publishes and runs the `default`
queue's worker, machine B queues experiments, machine C only restores. The tests run in file
order, each building on the state the previous one left (one trained clone for all of them):

1. the nightly deployment fires by its schedule, A's worker runs it, the record and the model
   reach the git remote and the bucket; C restores the record byte for byte and
   `mnistflow verify` calls it identical;
2. the inbox deployment runs its shards on the stack's Dask worker and writes the partition a
   threaded run writes;
3. B's two queued experiments run at once and are recorded in B only;
4. faults, each a SIGKILL of real pids: Prefect's server during a run, A's worker and its run
   during training, SeaweedFS before a push; each followed by a scheduled run that completes.

Every process is stopped by its own pid, every wait bounded. Figures go to the JUnit XML as
properties (`pytest --junitxml=…`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mnistflow.stack import postgres, prefect_server, seaweedfs, team
from mnistflow.stack.credentials import read_aws_credentials, stack_s3_keys
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.machine import read_machine_settings
from mnistflow.stack.processes import ServiceProcess, stop_process
from mnistflow.stack.state import read_state, write_state
from mnistflow.training.checkpoints import snapshots
from tests.team_machines import (
    BIN,
    INBOX,
    NIGHTLY,
    STACK_COMMAND,
    TERMINAL_STATES,
    Machine,
    Worker,
    api,
    base_environment,
    deployment_runs,
    join_machine,
    parse_time,
    run,
    run_seconds,
    schedule_nightly_in,
    scheduled_run,
    start_worker,
    stop_worker,
    trigger_and_wait,
    wait_for,
)
from tests.test_pipeline_end_to_end import copy_project, set_params

# Bounds on the waits, in seconds, on a loaded 2-core machine.
PIPELINE_TIMEOUT = 600
RESTART_TIMEOUT = 120
INBOX_IMAGES = 40


@dataclass
class Team:
    layout: StackLayout
    scratch: Path
    api_url: str
    a: Machine
    b: Machine
    c: Machine
    worker: Worker
    record: str | None = None
    killed_run: str | None = None
    killed_at: datetime | None = None
    local_record: tuple[str, str] | None = None


def s3_objects(layout: StackLayout) -> dict[str, int]:
    """Every object in the stack's bucket under dvc/, with its size."""
    settings = read_machine_settings(layout.machine_json_file)
    client = seaweedfs.s3_client(settings.dvc_endpoint_url, read_aws_credentials(
        layout.aws_credentials_file))  # fmt: skip
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=team.BUCKET, Prefix="dvc/")
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def s3_key(md5: str) -> str:
    """Where DVC 3 keeps a file of this md5 in the remote."""
    return f"dvc/files/md5/{md5[:2]}/{md5[2:]}"


def output_md5(clone: Path, path: str) -> str:
    for stage in yaml.safe_load((clone / "dvc.lock").read_text())["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    raise AssertionError(f"{path} is not an output in {clone / 'dvc.lock'}")


def remote_refs(layout: StackLayout, prefix: str) -> dict[str, str]:
    """ref -> commit in the stack's bare git remote."""
    listed = subprocess.run(["git", "ls-remote", str(layout.git_remote)],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    refs = (line.split() for line in listed.splitlines())
    return {ref: commit for commit, ref in refs if ref.startswith(prefix)}


def newest_record(clone: Path) -> tuple[str, str]:
    """(ref, commit) of the newest experiment in a clone
    (refs/exps/<baseline commit, split>/<record name>)."""
    listed = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--sort=-committerdate",
         "--format=%(refname) %(objectname)"],
        cwd=clone, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert listed, f"no record in {clone}"
    return listed[0], listed[1]


def record_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def kill_family(pid: int) -> list[psutil.Process]:
    """SIGKILL a process and every descendant (a crash of that service); waits for them."""
    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for process in family:
        os.kill(process.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, alive
    return family


def restart_service(layout: StackLayout, name: str) -> ServiceProcess:
    """Start one stopped service of the stack again, on its ports, and wait until it answers
    (what a supervisor would do); the stack's state records its new pid."""
    state = read_state(layout)
    ports = state.ports
    if name == "prefect-server":
        password = layout.postgres_password_file.read_text().strip()
        database_url = postgres.connection_url(ports["postgres"], password, driver="asyncpg")
        service = prefect_server.start_prefect_server(layout, ports["prefect"], database_url)
        answers = lambda: prefect_server.answers(ports["prefect"])  # noqa: E731
    else:
        seaweedfs.remove_local_grpc_sockets(team.seaweedfs_ports(ports))
        keys = stack_s3_keys(layout.aws_credentials_file)
        service = seaweedfs.start_seaweedfs(layout, team.seaweedfs_ports(ports), keys, state.bucket)
        endpoint = seaweedfs.endpoint_url(team.seaweedfs_ports(ports))
        answers = lambda: seaweedfs.bucket_answers(endpoint, keys, state.bucket)  # noqa: E731
    write_state(layout, state.with_service(service))
    wait_for(answers, RESTART_TIMEOUT, f"{name} answering again", poll=0.5)
    return service


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A stack brought up by its command line; stopped by its recorded pids whatever happens.
    Its folder is under the system's temporary folder: PostgreSQL runs as `postgres` when the
    tests run as root, and pytest's folders are 0700."""
    directory = Path(tempfile.mkdtemp(prefix="mnistflow-team-"))
    scratch = tmp_path_factory.mktemp("team")
    layout = StackLayout.of(directory)
    try:
        run([*STACK_COMMAND, "up", "--dir", str(directory)], scratch, base_environment(scratch))
        yield layout, scratch
    finally:
        state = read_state(layout)
        for service in reversed((state.services if state else {}).values()):
            stop_process(service)
        seaweedfs.remove_local_grpc_sockets(team.seaweedfs_ports(state.ports) if state else {})
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def machines(stack):
    """The project pushed to the stack's git remote; machines A (publishes, the `default`
    queue's worker, the deployments), B and C joined; the work pool made."""
    layout, scratch = stack
    # The bucket reaches each clone only through `join`'s .dvc/config.local, never a commit:
    # what `mnistflow verify`'s worktree replay must be given by the clone.
    seed = copy_project(scratch / "seed")
    run(["git", "push", "--quiet", str(layout.git_remote), "main"], seed, base_environment(scratch))
    a = join_machine(layout, scratch, "machine-a", publishes=True)
    b = join_machine(layout, scratch, "machine-b", publishes=False)
    c = join_machine(layout, scratch, "machine-c", publishes=False)
    a.prefect("work-pool", "create", "mnistflow", "--type", "process",
              "--base-job-template", "prefect-work-pool.json")  # fmt: skip
    a.prefect("automation", "create", "--from-file", "prefect-zombie-automation.json")
    a.prefect("--no-prompt", "deploy", "--all")
    # The inbox runs when a test triggers it, never at a quarter-hour mid-test.
    a.prefect("deployment", "schedule", "clear", INBOX, "-y")
    worker = start_worker(a, "default", scratch / "worker-a.log")
    machines = Team(layout, scratch, a.env["PREFECT_API_URL"], a, b, c, worker)
    try:
        yield machines
    finally:
        stop_worker(machines.worker)


def test_the_nightly_fires_on_its_schedule_and_machine_a_publishes(machines, record_property):
    layout, a = machines.layout, machines.a
    start = schedule_nightly_in(machines.api_url, 20)
    flow_run = wait_for(lambda: scheduled_run(machines.api_url, start, TERMINAL_STATES),
                        PIPELINE_TIMEOUT, "the scheduled nightly run to end")  # fmt: skip
    assert flow_run["state_type"] == "COMPLETED", (flow_run["state"], machines.worker.log_tail())
    # Made by the server's scheduler, for the schedule's time, taken by A's worker.
    assert flow_run["auto_scheduled"] is True
    assert flow_run["work_queue_name"] == "default"
    assert flow_run["id"] in machines.worker.log.read_text()
    record_property("scheduled_run_seconds", round(run_seconds(flow_run), 1))
    delay = (parse_time(flow_run["start_time"]) - start).total_seconds()
    record_property("scheduled_run_start_delay_seconds", round(delay, 1))
    record_property("record_and_push_seconds", task_seconds(machines.api_url, "record-run"))

    ref, commit = newest_record(a.clone)
    machines.record = record_name(ref)
    assert remote_refs(layout, "refs/exps").get(ref) == commit
    # Its model, released by the gates, registered as a version: the tag is on the remote.
    assert remote_refs(layout, "refs/tags/mnist-classifier@v")
    stored = s3_objects(layout)
    for output in ("models/model.onnx", "models/model.keras", "data/raw/mnist.npz"):
        md5 = output_md5(a.clone, output)
        assert stored.get(s3_key(md5)) == (a.clone / output).stat().st_size, output


def task_seconds(api_url: str, name: str) -> float:
    """How long the newest task run called `name` ran, as the server recorded it."""
    [task_run] = api(api_url, "/task_runs/filter", {
        "task_runs": {"name": {"any_": [name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1,
    })  # fmt: skip
    return round(task_run["total_run_time"], 1)


def tracked_files(clone: Path) -> dict[str, bytes]:
    """Every file of every DVC-cached output in the clone's dvc.lock, by path."""
    files = {}
    for stage in yaml.safe_load((clone / "dvc.lock").read_text())["stages"].values():
        for out in stage.get("outs", []):
            path = clone / out["path"]
            found = sorted(path.rglob("*")) if path.is_dir() else [path]
            files.update({str(f.relative_to(clone)): f.read_bytes() for f in found if f.is_file()})
    return files


def test_a_third_clone_restores_the_record_from_s3_and_verify_calls_it_identical(
    machines, record_property
):
    a, c = machines.a, machines.c
    assert machines.record, "the nightly test made no record"
    assert not (c.clone / ".dvc" / "cache").exists()  # nothing but the bucket to pull from
    started = time.monotonic()
    c.dvc("exp", "pull", "origin", machines.record)
    record_property("record_pull_seconds", round(time.monotonic() - started, 1))
    c.dvc("exp", "apply", machines.record)
    restored, published = tracked_files(c.clone), tracked_files(a.clone)
    assert len(published) > 10 and restored.keys() == published.keys()
    assert [path for path in published if restored[path] != published[path]] == []

    started = time.monotonic()
    verified = c.run(str(BIN / "mnistflow"), "verify", machines.record)
    record_property("verify_seconds", round(time.monotonic() - started, 1))
    [summary] = re.findall(r"(\d+) of (\d+) outputs identical", verified)
    assert summary[0] == summary[1] and int(summary[0]) >= 10, verified[-3000:]


# gto first: importing it inside a running flow (the registry's lazy import) runs its
# logging.config.dictConfig, whose logging.shutdown flushes Prefect's API log handler while
# holding logging's lock, which that handler's worker thread needs: a deadlock, seen here.
THREADED_RUN = (
    "import gto\n"
    "from flows.batch_predict import batch_predict\n"
    "batch_predict(output='predictions/threaded')\n"
)


def test_the_inbox_runs_its_shards_on_the_stacks_dask_worker(
    machines, mnist_slice, record_property
):
    a = machines.a
    inbox = a.clone / "data" / "inbox"
    inbox.mkdir(parents=True)
    for index in range(INBOX_IMAGES):
        Image.fromarray(mnist_slice.x_test[index]).save(inbox / f"digit-{index:02d}.png")
    flow_run, seconds = trigger_and_wait(a, INBOX, 300)
    assert flow_run["state_type"] == "COMPLETED", (flow_run["state"], machines.worker.log_tail())
    record_property("dask_inbox_run_seconds", round(run_seconds(flow_run), 1))
    record_property("dask_inbox_trigger_to_end_seconds", round(seconds, 1))
    # The shards were tasks of the stack's scheduler (the worker gave the flow its address).
    from distributed import Client

    with Client(a.env["MNISTFLOW_DASK_ADDRESS"], timeout=30) as client:
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: {name: dict(prefix.state_counts)
                                    for name, prefix in dask_scheduler.task_prefixes.items()}
        )  # fmt: skip
    assert any(name.startswith("predict_shard") for name in prefixes), prefixes

    # The same inbox on Prefect's thread pool, in the same clone, into another folder.
    threaded_env = {k: v for k, v in a.env.items() if not k.startswith("MNISTFLOW_DASK")}
    started = time.monotonic()
    run([sys.executable, "-c", THREADED_RUN], a.clone, threaded_env)
    record_property("threaded_inbox_seconds", round(time.monotonic() - started, 1))
    [on_dask] = (a.clone / "predictions" / "inbox").glob("part-*.parquet")
    [threaded] = (a.clone / "predictions" / "threaded").glob("part-*.parquet")
    dask_rows = pq.read_table(on_dask).drop_columns(["predicted_at"])
    threaded_rows = pq.read_table(threaded).drop_columns(["predicted_at"])
    assert dask_rows.num_rows == INBOX_IMAGES
    assert dask_rows.equals(threaded_rows)


def start_queue(machine: Machine, jobs: int, log: Path) -> None:
    """`dvc queue start`, its output to a file: the workers it leaves behind inherit its
    output, so with pipes the call would return only once they exit."""
    with open(log, "ab") as output:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "--jobs", str(jobs)],
                       cwd=machine.clone, env=machine.env, stdout=output,
                       stderr=subprocess.STDOUT, timeout=120, check=True)  # fmt: skip


def queue_status(machine: Machine) -> list[str]:
    """The Status column of `dvc queue status`, one entry per experiment."""
    lines = machine.dvc("queue", "status").splitlines()
    return [word for line in lines for word in line.split()
            if word in ("Queued", "Running", "Success", "Failed")]  # fmt: skip


def test_two_experiments_queued_on_machine_b_run_at_once_and_publish_nothing(
    machines, record_property
):
    b, layout = machines.b, machines.layout
    # B starts from the nightly's record: only the stages a seed reaches run again.
    b.dvc("exp", "pull", "origin", machines.record)
    b.dvc("exp", "apply", machines.record)
    b.git("add", "-A")
    b.git("commit", "--quiet", "-m", "from the nightly's record")
    refs_before, objects_before = remote_refs(layout, "refs/"), s3_objects(layout)

    for seed in (1, 2):
        b.dvc("exp", "run", "--queue", "--set-param", f"train.seed={seed}", "--name",
              f"b-seed-{seed}")  # fmt: skip
    started = time.monotonic()
    start_queue(b, jobs=2, log=machines.scratch / "machine-b-queue.log")
    # At once: two of DVC's executors (`dvc exp exec-run`, one per experiment) alive together.
    wait_for(lambda: len(experiment_executors(b.clone)) == 2, 240,
             "both experiments executing at once", poll=0.5)  # fmt: skip
    statuses = wait_for(
        lambda: (lambda found: found if "Queued" not in found and "Running" not in found
                 else None)(queue_status(b)),
        PIPELINE_TIMEOUT, "both experiments to end", poll=3,
    )  # fmt: skip
    record_property("two_parallel_experiments_seconds", round(time.monotonic() - started, 1))
    assert statuses == ["Success", "Success"], b.dvc("queue", "logs", "b-seed-1")[-3000:]

    models = set()
    for seed in (1, 2):
        [ref] = [line for line in b.git("for-each-ref", "refs/exps", "--format=%(refname)")
                 .split() if line.endswith(f"/b-seed-{seed}")]  # fmt: skip
        metrics = json.loads(b.git("show", f"{ref}:reports/metrics.json"))
        assert metrics["accuracy"] > 0.5
        lock = yaml.safe_load(b.git("show", f"{ref}:dvc.lock"))
        models.add(next(out["md5"] for out in lock["stages"]["train"]["outs"]
                        if out["path"] == "models/model.keras"))  # fmt: skip
    assert len(models) == 2  # two seeds, two models: both really trained
    # B does not publish: nothing new on the git remote or in the bucket.
    assert remote_refs(layout, "refs/") == refs_before
    assert s3_objects(layout) == objects_before
    # DVC's queue workers leave once the queue is empty.
    wait_for(lambda: not queue_workers(b.clone), 120, "DVC's queue workers to exit")


def experiment_executors(clone: Path) -> list[psutil.Process]:
    """The `dvc exp exec-run` processes running experiments queued in `clone` (each started
    in the clone or in one of DVC's temporary copies under its .dvc/tmp/exps/)."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or [])
        where = process.info["cwd"] or ""
        if "exec-run" in command and (where == str(clone) or where.startswith(f"{clone}/")):
            found.append(process)
    return found


def queue_workers(clone: Path) -> list[psutil.Process]:
    """The `dvc exp queue-worker` processes working for `clone`."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or [])
        if "queue-worker" in command and process.info["cwd"] == str(clone):
            found.append(process)
    return found


def test_a_prefect_server_killed_mid_run_wedges_nothing(machines, record_property):
    layout, api_url = machines.layout, machines.api_url
    start = schedule_nightly_in(api_url, 15)
    wait_for(lambda: scheduled_run(api_url, start, ("RUNNING",)), 180,
             "the nightly run to start", poll=0.3)  # fmt: skip
    killed_at = time.monotonic()
    kill_family(read_state(layout).services["prefect-server"].pid)
    restart_service(layout, "prefect-server")
    record_property("server_outage_seconds", round(time.monotonic() - killed_at, 1))
    interrupted = wait_for(lambda: scheduled_run(api_url, start, TERMINAL_STATES), 300,
                           "the interrupted run to end rather than stay Running")  # fmt: skip
    record_property("server_killed_run_outcome", interrupted["state_type"])
    record_property("server_killed_run_message", (interrupted["state"]["message"] or "")[:300])
    assert interrupted["state_type"] in ("COMPLETED", "FAILED", "CRASHED"), interrupted["state"]
    assert machines.worker.process.poll() is None, machines.worker.log_tail()

    start = schedule_nightly_in(api_url, 10)
    following = wait_for(lambda: scheduled_run(api_url, start, TERMINAL_STATES),
                         PIPELINE_TIMEOUT, "the next scheduled run to end")  # fmt: skip
    assert following["state_type"] == "COMPLETED", following["state"]
    unfinished = [run["state_type"] for run in deployment_runs(api_url, NIGHTLY)
                  if run["state_type"] in ("PENDING", "RUNNING")]  # fmt: skip
    assert unfinished == []


def test_a_worker_killed_during_training_leaves_no_process(machines):
    a = machines.a
    # Three epochs: after the first one's checkpoint, two more keep training running while
    # the test finds and kills its processes.
    set_params(a.clone, {"train": {"epochs": 3}})
    a.git("commit", "--quiet", "-m", "three epochs", "params.yaml")
    checkpoints = a.clone / ".checkpoints" / "train"
    assert not snapshots(checkpoints)
    start = schedule_nightly_in(machines.api_url, 10)
    wait_for(lambda: snapshots(checkpoints), PIPELINE_TIMEOUT, "training's first checkpoint",
             poll=0.2)  # fmt: skip
    worker = machines.worker
    descendants = worker.flow_run_processes()
    assert any("stages.train" in " ".join(p.cmdline()) for p in descendants), descendants
    # The machine's Prefect processes die (OOM killer, a crash): the worker and its run.
    for process in [worker.process, *psutil.Process(worker.process.pid).children()]:
        os.kill(process.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)
    # The run's guardian stops its training process too (mnistflow/orchestration/process_guard).
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, [" ".join(process.cmdline()) for process in alive]
    assert snapshots(checkpoints)  # kept for the next run
    # Nobody is left to tell the server: the run still reads Running there.
    killed = scheduled_run(machines.api_url, start, ("RUNNING",))
    assert killed, deployment_runs(machines.api_url, NIGHTLY)
    machines.killed_run = killed["id"]
    machines.killed_at = datetime.now(timezone.utc)


def test_with_s3_down_the_next_run_resumes_training_and_records_locally(machines, record_property):
    layout, a = machines.layout, machines.a
    first_record, _ = newest_record(a.clone)
    kill_family(read_state(layout).services["seaweedfs"].pid)
    machines.worker = start_worker(a, "default", machines.scratch / "worker-a-2.log")
    start = schedule_nightly_in(machines.api_url, 10)
    flow_run = wait_for(lambda: scheduled_run(machines.api_url, start, TERMINAL_STATES),
                        PIPELINE_TIMEOUT, "the resumed run to end")  # fmt: skip
    log = machines.worker.log.read_text()
    assert "resuming from the checkpoint" in log and "after epoch 1 of 3" in log, log[-3000:]
    summary = json.loads((a.clone / "reports" / "train.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    # Recorded here; the push failed, so the run failed after the record was made.
    record_property("s3_down_run_outcome", flow_run["state_type"])
    assert flow_run["state_type"] == "FAILED", flow_run["state"]
    ref, commit = newest_record(a.clone)
    assert ref != first_record
    assert ref not in remote_refs(layout, "refs/exps")
    machines.local_record = (ref, commit)

    # The killed run went silent: the zombie automation marked it Crashed, nothing stays Running.
    killed = wait_for(lambda: flow_run_in(machines.api_url, machines.killed_run, "CRASHED"), 300,
                      "the killed run to be marked Crashed")  # fmt: skip
    assert "No heartbeat" in killed["state"]["message"]
    crashed_at = parse_time(killed["state"]["timestamp"])
    record_property("killed_run_crashed_after_seconds",
                    round((crashed_at - machines.killed_at).total_seconds(), 1))  # fmt: skip


def flow_run_in(api_url: str, flow_run_id: str, state_type: str) -> dict | None:
    """The flow run once its state is `state_type`."""
    flow_run = api(api_url, f"/flow_runs/{flow_run_id}")
    return flow_run if flow_run["state_type"] == state_type else None


def test_once_s3_is_back_the_next_run_pushes_the_local_record(machines):
    layout, a = machines.layout, machines.a
    ref, commit = machines.local_record
    restart_service(layout, "seaweedfs")
    model = s3_key(output_md5(a.clone, "models/model.keras"))
    assert model not in s3_objects(layout)
    start = schedule_nightly_in(machines.api_url, 10)
    flow_run = wait_for(lambda: scheduled_run(machines.api_url, start, TERMINAL_STATES),
                        PIPELINE_TIMEOUT, "the run after S3 came back to end")  # fmt: skip
    assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
    assert newest_record(a.clone) == (ref, commit)  # nothing new computed, nothing re-recorded
    assert remote_refs(layout, "refs/exps").get(ref) == commit
    assert model in s3_objects(layout)
