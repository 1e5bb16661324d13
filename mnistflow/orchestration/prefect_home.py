"""One Prefect home per project, shared by every mnistflow command.

`mnistflow run`, `mnistflow serve` and the flows they run all keep Prefect's state (its SQLite
database, logs, the local server's record) in the project's `.prefect/` folder, so a run
started by `make run` shows in the UI of `mnistflow serve`, and two projects never mix.
When a project server is up (`mnistflow serve` started one), commands use it rather than
starting a temporary server of their own on the same database.

MNISTFLOW_PREFECT_HOME overrides the folder (e.g. to share one home between checkouts); an
explicit PREFECT_API_URL (a shared server) is kept as it is.

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

from mnistflow.core.atomic import write_json
from mnistflow.core.small_files import read_small_regular_file
from mnistflow.paths import PREFECT_HOME

SERVER_RECORD = "server.json"
HOME_VARIABLE = "MNISTFLOW_PREFECT_HOME"


def prefect_home(root: Path) -> Path:
    """The project's `.prefect/`, or the folder $MNISTFLOW_PREFECT_HOME names."""
    override = os.environ.get(HOME_VARIABLE)
    return Path(override).expanduser().resolve() if override else Path(root) / PREFECT_HOME


def server_is_healthy(api_url: str) -> bool:
    try:
        # Generous: a busy 2-core machine answered slower than 2 s (a live server taken for dead).
        with urllib.request.urlopen(f"{api_url}/health", timeout=10) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


# A record is a few hundred bytes; a larger file is no record.
MAX_RECORD_BYTES = 4096


def read_server_record(root: Path) -> dict:
    """The project's server record, read without following a link or blocking on a FIFO
    (a workspace file anyone with the workspace may have replaced); ValueError when it is
    not a small regular file holding a JSON object."""
    record = prefect_home(root) / SERVER_RECORD
    content = json.loads(read_small_regular_file(record, MAX_RECORD_BYTES))
    if not isinstance(content, dict):
        raise ValueError("the server record is not a JSON object")
    return content


def running_project_server(root: Path) -> str | None:
    """The API URL of the project's server when one is up and answering, else None."""
    try:
        content = read_server_record(root)
        api_url, project = content["api_url"], content["project"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # A record left by a killed server of this project may name a port another project's
    # server now holds: only a server that says it serves this project's home counts. A home
    # shared through MNISTFLOW_PREFECT_HOME is served by whichever checkout started it.
    shared = bool(os.environ.get(HOME_VARIABLE))
    if (not shared and project != str(Path(root).resolve())) or not server_is_healthy(api_url):
        return None
    return api_url if _serves_home(api_url, prefect_home(root)) else None


def _serves_home(api_url: str, home: Path) -> bool:
    """Whether the server at `api_url` keeps its state in `home` (its settings say so)."""
    try:
        with urllib.request.urlopen(f"{api_url}/admin/settings", timeout=10) as response:
            settings = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return str(settings.get("home", "")) == str(home.resolve())


@contextlib.contextmanager
def recorded_server(root: Path, api_url: str, pid: int) -> Iterator[None]:
    """Record the project's server for the block, so other commands find and use it."""
    record = prefect_home(root) / SERVER_RECORD
    write_json(record, {"api_url": api_url, "pid": pid, "project": str(Path(root).resolve())})
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
    # A new home's temporary server runs its database migrations first; on a loaded 2-core
    # machine that took longer than Prefect's 20 s default (seen: a fresh `make run` failed).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not os.environ.get("PREFECT_API_URL"):
        api_url = running_project_server(root)
        if api_url:
            os.environ["PREFECT_API_URL"] = api_url
