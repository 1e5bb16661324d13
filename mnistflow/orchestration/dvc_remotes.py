"""The project's DVC remote with a relative URL resolved from the project, wherever DVC works.

DVC resolves a relative local remote URL (`url = ../../mnistflow-dvc-remote` in .dvc/config)
against the folder its config file is read from. For `dvc exp push` that is a temporary copy,
for `Repo(root, rev=...)` the git tree's virtual root: the URL then points at `/...`, not at
the folder beside the project. Everything here that talks to the remote passes this override.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def default_remote_name(root: Path) -> str | None:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.config["core"].get("remote")


def resolved_remote_config(root: Path) -> dict[str, Any]:
    """A DVC config override giving every remote with a relative local URL its absolute one
    (relative to the project's .dvc/, as `dvc remote add` meant it); {} when none needs it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return resolved_remote_urls(repo.config["remote"])


def resolved_remote_urls(remotes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """resolved_remote_config's override from the remotes of a workspace's loaded config."""
    # The workspace's Config already resolved relative URLs against the real .dvc/ folder;
    # a temporary copy or a git revision would not, so the resolved ones are passed on.
    override = {
        name: {"url": str(Path(settings["url"]))}
        for name, settings in remotes.items()
        if "url" in settings and "://" not in settings["url"]
    }
    return {"remote": override} if override else {}
