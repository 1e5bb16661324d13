"""Deployments from prefect.yaml, served in one process, with a local server when none is set.

Schedules never run on Prefect's temporary server, so without PREFECT_API_URL `serve`
starts `prefect server start` on the project's Prefect home (SQLite under .prefect/), records
it there for other commands to use (mnistflow.orchestration.prefect_home), and stops it on exit.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from mnistflow.orchestration.local_server import local_prefect_server
from mnistflow.paths import PREFECT_YAML


def deployment_specs(root: Path) -> list[dict[str, Any]]:
    """The deployments listed in the project's prefect.yaml."""
    content = yaml.safe_load((Path(root) / PREFECT_YAML).read_text(encoding="utf-8"))
    return content["deployments"]


def build_deployments(
    specs: list[dict[str, Any]], root: Path, every_seconds: int | None = None
) -> list:
    """RunnerDeployments for `prefect.serve`; `every_seconds` replaces every schedule."""
    from prefect.flows import load_flow_from_entrypoint

    deployments = []
    for spec in specs:
        path, function = spec["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{root / path}:{function}")
        schedule = (spec.get("schedules") or [{}])[0]
        timing: dict[str, Any] = {}
        if every_seconds:
            timing["interval"] = every_seconds
        elif "cron" in schedule:
            timing["cron"] = schedule["cron"]
        elif "interval" in schedule:
            timing["interval"] = schedule["interval"]
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                parameters=spec.get("parameters") or {},
                **timing,
            )
        )
    return deployments


def serve_deployments(root: Path, every_seconds: int | None = None, port: int = 4200) -> None:
    """Serve prefect.yaml's deployments against $PREFECT_API_URL, or a local server started
    here on the project's Prefect home and stopped on exit."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ.setdefault("MNISTFLOW_ROOT", str(root))
    os.chdir(root)
    with contextlib.ExitStack() as stack:
        api_url = (
            os.environ.get("PREFECT_API_URL")
            or stack.enter_context(local_prefect_server(Path(root), port)).api_url
        )
        # Prefect read its settings when it was imported, before the local server existed:
        # the variable alone reaches only child processes (the flow runs). This process needs
        # the setting too, or its client starts a temporary server of its own beside ours.
        os.environ["PREFECT_API_URL"] = api_url
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        print(f"serving against {api_url}", flush=True)
        deployments = build_deployments(deployment_specs(root), root, every_seconds)
        # pause_on_shutdown=False: stopping this process must not pause the schedules.
        serve(*deployments, pause_on_shutdown=False)
