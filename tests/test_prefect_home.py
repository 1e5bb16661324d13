"""One Prefect home per project: a project's server is found by its commands, no other's."""

from __future__ import annotations

import json
import socket
import urllib.request

from mnistflow.orchestration.local_server import local_prefect_server
from mnistflow.orchestration.prefect_home import SERVER_RECORD, prefect_home, running_project_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_project_server_is_found_by_its_project_only(tmp_path):
    project, other = tmp_path / "project", tmp_path / "other"
    project.mkdir()
    other.mkdir()
    assert running_project_server(project) is None
    with local_prefect_server(project, free_port()) as (api_url, _):
        assert running_project_server(project) == api_url
        # Its UI (what `mnistflow serve` shows) talks to this server, on this port.
        base = api_url.removesuffix("/api")
        with urllib.request.urlopen(f"{base}/ui-settings", timeout=10) as response:
            assert json.loads(response.read())["api_url"] == api_url
        # Another project that finds a copy of the record (a stale one naming this port)
        # must not use a server that keeps its state elsewhere.
        record = (prefect_home(project) / SERVER_RECORD).read_text()
        prefect_home(other).mkdir(parents=True)
        (prefect_home(other) / SERVER_RECORD).write_text(
            record.replace(str(project.resolve()), str(other.resolve()))
        )
        assert running_project_server(other) is None
    assert not (prefect_home(project) / SERVER_RECORD).exists()
    assert running_project_server(project) is None


def test_the_home_is_the_projects_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("MNISTFLOW_PREFECT_HOME", raising=False)
    assert prefect_home(tmp_path) == tmp_path / ".prefect"
    monkeypatch.setenv("MNISTFLOW_PREFECT_HOME", str(tmp_path / "shared"))
    assert prefect_home(tmp_path / "checkout") == (tmp_path / "shared").resolve()
