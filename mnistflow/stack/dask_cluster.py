"""The Dask cluster for the inbox: one `dask scheduler` and one `dask worker` (a nanny and its
worker process), every port on 127.0.0.1 given explicitly.

A worker runs the project's code, so it starts from this interpreter (the venv's dask) with
its scratch space in the stack's folder.
"""

from __future__ import annotations

from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.ports import LOOPBACK
from mnistflow.stack.processes import (
    ServiceProcess,
    detached_environment,
    interpreter_tool,
    log_tail,
    start_process,
)


def scheduler_address(port: int) -> str:
    return f"tcp://{LOOPBACK}:{port}"


def start_scheduler(layout: StackLayout, port: int, dashboard_port: int) -> ServiceProcess:
    layout.dask.mkdir(parents=True, exist_ok=True)
    command = [
        str(interpreter_tool("dask", "dask[distributed]")), "scheduler",
        "--host", LOOPBACK, "--port", str(port),
        "--dashboard-address", f"{LOOPBACK}:{dashboard_port}",
    ]  # fmt: skip
    return start_process(
        "dask-scheduler", command, layout.log("dask-scheduler"), detached_environment(),
        layout.dask,
    )  # fmt: skip


def start_worker(
    layout: StackLayout, scheduler_port: int, worker_port: int, nanny_port: int, http_port: int
) -> ServiceProcess:
    """`http_port`: the worker's health and metrics routes, which it serves even without a
    dashboard (left unset, on every address)."""
    scratch = layout.dask / "worker"
    scratch.mkdir(parents=True, exist_ok=True)
    command = [
        str(interpreter_tool("dask", "dask[distributed]")), "worker",
        scheduler_address(scheduler_port),
        "--host", LOOPBACK, "--worker-port", str(worker_port), "--nanny-port", str(nanny_port),
        "--nworkers", "1", "--no-dashboard", "--local-directory", str(scratch),
        "--name", "stack-worker-1", "--dashboard-address", f"{LOOPBACK}:{http_port}",
    ]  # fmt: skip
    return start_process(
        "dask-worker", command, layout.log("dask-worker"), detached_environment(), layout.dask
    )


def connected_workers(address: str, timeout: float) -> int:
    """How many workers the scheduler at `address` has (0 when it does not answer)."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout) as client:
            return len(client.scheduler_info()["workers"])
    except (OSError, TimeoutError):
        return 0


def wait_for_workers(address: str, count: int, timeout: float, worker: ServiceProcess) -> None:
    """Until `count` workers joined the scheduler; StackError with the worker's log if not."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout) as client:
            client.wait_for_workers(count, timeout=timeout)
    except (OSError, TimeoutError) as error:
        raise StackError(
            f"dask: {count} worker(s) at {address} not within {timeout:.0f} s ({error}); the "
            f"end of {worker.log}:\n{log_tail(worker)}"
        ) from None
