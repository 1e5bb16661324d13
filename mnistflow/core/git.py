"""git from Python: one way to run it, so every caller handles failure and odd names alike.

Output is decoded as UTF-8 with surrogate escapes (a file name that is not valid UTF-8 comes
back as the same str `os.fsdecode` would give), never with the locale's codec.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mnistflow.errors import PipelineInputError


def _run(root: Path, arguments: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *arguments],
        cwd=root,
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",
        check=False,
    )


def git(root: Path, *arguments: str) -> str:
    """git's output; PipelineInputError with git's own message when it fails."""
    result = _run(root, arguments)
    if result.returncode != 0:
        raise PipelineInputError(f"git {' '.join(arguments)} failed: {result.stderr.strip()}")
    return result.stdout


def git_or_none(root: Path, *arguments: str) -> str | None:
    """git's output, or None when it fails (a question whose answer may be "no")."""
    result = _run(root, arguments)
    return result.stdout if result.returncode == 0 else None


def file_at_revision(root: Path, revision: str, path: str) -> str | None:
    """The content of `path` at `revision`, None where it does not exist there."""
    return git_or_none(root, "show", f"{revision}:{path}")
