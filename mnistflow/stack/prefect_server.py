"""The team's Prefect server: `prefect server start` on 127.0.0.1, its state in PostgreSQL.

Every machine's workers and flow runs talk to it through PREFECT_API_URL; its scheduler
creates the deployments' scheduled runs (never run on Prefect's temporary servers).
"""

from __future__ import annotations

from mnistflow.orchestration.prefect_home import server_is_healthy
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.ports import LOOPBACK
from mnistflow.stack.processes import (
    ServiceProcess,
    detached_environment,
    interpreter_tool,
    start_process,
)


def api_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}/api"


def start_prefect_server(layout: StackLayout, port: int, database_url: str) -> ServiceProcess:
    """`database_url`: postgresql+asyncpg://… (the password stays in this process's
    environment, readable by its user only)."""
    layout.prefect_home.mkdir(parents=True, exist_ok=True)
    environment = {
        key: value
        for key, value in detached_environment().items()
        # The server is configured here alone, not by whatever profile the caller uses.
        if not key.startswith("PREFECT_")
    }
    environment.update(
        PREFECT_HOME=str(layout.prefect_home),
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        # No network here: telemetry would only log failures.
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The UI asks /ui-settings where its API is; left alone it answers port 4200.
        PREFECT_UI_API_URL=api_url(port),
    )
    command = [
        str(interpreter_tool("prefect", "prefect")), "server", "start",
        "--host", LOOPBACK, "--port", str(port),
    ]  # fmt: skip
    return start_process(
        "prefect-server", command, layout.log("prefect-server"), environment,
        layout.prefect_home, grace_seconds=20.0,
    )  # fmt: skip


def answers(port: int) -> bool:
    return server_is_healthy(api_url(port))
