"""DVC's command line from Python, where its public output or its own process is the point
(a replay in another worktree, `dvc commit`): one way to run it, with this
interpreter's DVC, never another on PATH. (mnistflow.orchestration.dvc_runs uses DVC's Python
API where a stage or an experiment runs, reporting.dvc_views for the report's diffs.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mnistflow.errors import PipelineInputError


def dvc(root: Path, *arguments: str, isolated: bool = False) -> subprocess.CompletedProcess:
    """`dvc ARGUMENTS` in `root`. `isolated`: without this process's MNISTFLOW_ROOT, and with
    this interpreter's tools first on PATH (a replay's stages run `python -m stages…`)."""
    environment = None
    if isolated:
        environment = {**os.environ}
        interpreter_dir = str(Path(sys.executable).parent)
        environment["PATH"] = os.pathsep.join([interpreter_dir, environment.get("PATH", "")])
        environment.pop("MNISTFLOW_ROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "dvc", *arguments],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def checked_dvc(root: Path, *arguments: str) -> str:
    """`dvc ARGUMENTS`' output; PipelineInputError with DVC's own message when it fails."""
    result = dvc(root, *arguments)
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise PipelineInputError(f"`dvc {' '.join(arguments)}` failed: {message}")
    return result.stdout
