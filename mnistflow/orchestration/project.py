"""The DVC project on disk: where its root is, and its stages in order.

The root is found, never assumed: `MNISTFLOW_ROOT` when set, else the nearest folder upwards
from the working directory that holds dvc.yaml. So an installed (non-editable) package works
from any checkout, and commands that need no project (predict, validate) need none.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from mnistflow.errors import PipelineInputError
from mnistflow.paths import DVC_YAML

ROOT_VARIABLE = "MNISTFLOW_ROOT"


def find_project_root(start: Path | None = None) -> Path:
    """The project root: $MNISTFLOW_ROOT, else the nearest folder at or above `start` (the
    working directory by default) that holds dvc.yaml."""
    if os.environ.get(ROOT_VARIABLE):
        root = Path(os.environ[ROOT_VARIABLE]).resolve()
        if not (root / DVC_YAML).is_file():
            raise PipelineInputError(f"{ROOT_VARIABLE}={root}: no dvc.yaml there")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DVC_YAML).is_file():
            return folder
    raise PipelineInputError(
        f"{here}: not inside an mnistflow project (no dvc.yaml here or above); run from a "
        f"checkout or set {ROOT_VARIABLE}"
    )


def stage_names(root: Path) -> list[str]:
    """The stages in the order dvc.yaml lists them (its order is the pipeline's)."""
    content = yaml.safe_load((Path(root) / DVC_YAML).read_text(encoding="utf-8"))
    return list(content["stages"])


def stage_upstreams(root: Path) -> dict[str, list[str]]:
    """Per stage, the stages whose outputs it depends on (dvc.yaml's DAG), in dvc.yaml's order."""
    stages = yaml.safe_load((Path(root) / DVC_YAML).read_text(encoding="utf-8"))["stages"]
    outputs = {name: _outputs(spec) for name, spec in stages.items()}
    return {
        name: [
            other
            for other in stages
            if other != name
            and any(_covers(out, dep) for out in outputs[other] for dep in spec.get("deps") or [])
        ]
        for name, spec in stages.items()
    }


def always_changed_stages(root: Path) -> set[str]:
    """The stages dvc.yaml marks `always_changed` (they run on every repro)."""
    stages = yaml.safe_load((Path(root) / DVC_YAML).read_text(encoding="utf-8"))["stages"]
    return {name for name, spec in stages.items() if spec.get("always_changed")}


def _outputs(spec: dict) -> list[str]:
    """A stage's outputs: its outs, metrics and plots, each a path or a {path: options}."""
    entries = [e for key in ("outs", "metrics", "plots") for e in spec.get(key) or []]
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def _covers(output: str, dependency: str) -> bool:
    """Whether `dependency` is `output` or lies inside it."""
    return dependency == output or dependency.startswith(output.rstrip("/") + "/")
