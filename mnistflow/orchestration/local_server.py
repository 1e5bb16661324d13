"""`prefect server start` on the project's Prefect home, on loopback, recorded while it runs.

What `mnistflow serve` (flows/deployments.py) and the kept server (kept_server.py) run: a
real server, because schedules never run on Prefect's temporary one and a server outliving a
command is the point of keeping one. Other commands find it through the record
(mnistflow.orchestration.prefect_home).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mnistflow.orchestration.prefect_home import prefect_home, recorded_server, server_is_healthy

SERVER_LOG = "server.log"


class LocalServer(NamedTuple):
    """A started `prefect server start`: its API URL and its process (which a keeper waits
    on, so that it ends the moment its server does)."""

    api_url: str
    process: subprocess.Popen


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def local_prefect_server(
    root: Path, port: int = 4200, timeout: float = 90
) -> Iterator[LocalServer]:
    """`prefect server start` on 127.0.0.1:port on the project's Prefect home, recorded there
    while it runs."""
    url = f"http://127.0.0.1:{port}/api"
    home = prefect_home(root)
    home.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The UI asks /ui-settings where its API is; left alone it answers port 4200
        # whatever --port says, and the UI of a server on another port shows nothing.
        "PREFECT_UI_API_URL": url,
    }
    environment.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    with open(home / SERVER_LOG, "ab") as log:
        server = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not server_is_healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {home / SERVER_LOG}")
            time.sleep(0.5)
        with recorded_server(root, url, server.pid):
            yield LocalServer(url, server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
