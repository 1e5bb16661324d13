"""The one error type the library raises for bad input."""

from __future__ import annotations

from pathlib import Path


class PipelineInputError(ValueError):
    """Bad input: a message that names the file, the field and what was expected."""


def require_file(path: Path) -> None:
    """Raise PipelineInputError unless `path` is an existing file."""
    if not path.exists():
        raise PipelineInputError(f"{path}: no such file or folder")
    if not path.is_file():
        raise PipelineInputError(f"{path}: expected a file, found a folder")
