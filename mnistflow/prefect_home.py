"""One Prefect home per project, shared by every mnistflow command.

`mnistflow run`, `mnistflow serve` and the flows they run all keep Prefect's state (its SQLite
database, logs, the local server's record) in the project's `.prefect/` folder, so a run
started by `make run` shows in the UI of `mnistflow serve`, and two projects never mix.
When a project server is up (`mnistflow serve` started one), commands use it rather than
starting a temporary server of their own on the same database.

Only environment variables and a small JSON record here: importing this never imports Prefect,
which reads its settings once, at import.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from mnistflow.atomic import write_json

PREFECT_FOLDER = ".prefect"
SERVER_RECORD = "server.json"


def prefect_home(root: Path) -> Path:
    return Path(root) / PREFECT_FOLDER


def server_is_healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def running_project_server(root: Path) -> str | None:
    """The API URL of the project's server when one is up and answering, else None."""
    record = prefect_home(root) / SERVER_RECORD
    try:
        api_url = json.loads(record.read_text(encoding="utf-8"))["api_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return api_url if server_is_healthy(api_url) else None


@contextlib.contextmanager
def recorded_server(root: Path, api_url: str, pid: int) -> Iterator[None]:
    """Record the project's server for the block, so other commands find and use it."""
    record = prefect_home(root) / SERVER_RECORD
    write_json(record, {"api_url": api_url, "pid": pid})
    try:
        yield
    finally:
        record.unlink(missing_ok=True)


def use_project_prefect(root: Path) -> None:
    """Point this process (and its children) at the project's Prefect home and server.

    Call before Prefect is imported. An explicit PREFECT_API_URL (a shared server) is kept.
    """
    home = prefect_home(root)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    # No network here: Prefect's telemetry would only log failures.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        api_url = running_project_server(root)
        if api_url:
            os.environ["PREFECT_API_URL"] = api_url
