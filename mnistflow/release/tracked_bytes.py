"""The bytes of a DVC-tracked file at a git revision, from this clone's DVC cache or its
remote, vouched for by the md5 git records for them, never by the cache that delivered them."""

from __future__ import annotations

import hashlib
from pathlib import Path


def bytes_at_revision(root: Path, revision: str, path: str) -> bytes:
    """The file's bytes as `revision` tracks them (DVC's cache, else its remote); whatever
    DVC raises when neither has them."""
    from dvc.repo import Repo

    from mnistflow.orchestration.dvc_remotes import resolved_remote_config

    config = resolved_remote_config(root)
    with (
        Repo(str(root), rev=revision, config=config) as repo,
        repo.dvcfs.open(path, "rb") as source,
    ):
        return source.read()


def matches(content: bytes, expected_md5: str | None) -> bool:
    """Whether `content` is what git records (an md5 that exists and agrees)."""
    return expected_md5 is not None and hashlib.md5(content).hexdigest() == expected_md5
