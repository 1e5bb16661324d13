"""Whether this clone publishes: pushes records and data, and registers model versions.

A run always records locally (a DVC experiment in this repository). Publishing changes the
team's history, so it is a decision, never a side effect of running: a clone publishes only
when told to, by `mnistflow run --publish` for one run, or by the per-clone setting

    git config mnistflow.publish true

which the team's nightly machine sets once (README: "Who publishes"). The setting lives in the
clone's own .git/config: never committed, never inherited by another clone, and never a
parameter a Prefect API caller can pass.
"""

from __future__ import annotations

from pathlib import Path

from mnistflow.core.git import git_or_none

SETTING = "mnistflow.publish"


def clone_publishes(root: Path) -> bool:
    """The clone's own setting (git config --local); false where it is unset."""
    value = git_or_none(root, "config", "--local", "--type=bool", "--get", SETTING)
    return value is not None and value.strip() == "true"


def publishing(root: Path, requested: bool | None = None) -> bool:
    """This run publishes: as asked for this run, else as the clone is set."""
    return clone_publishes(Path(root)) if requested is None else requested
