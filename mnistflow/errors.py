"""The one error type the library raises for bad input, and the input checks that raise it."""

from __future__ import annotations

import json
from pathlib import Path


class PipelineInputError(ValueError):
    """Bad input: a message that names the file, the field and what was expected."""


def require_file(path: Path) -> None:
    """Raise PipelineInputError unless `path` is an existing file."""
    if not path.exists():
        raise PipelineInputError(f"{path}: no such file or folder")
    if not path.is_file():
        raise PipelineInputError(f"{path}: expected a file, found a folder")


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in `path`; PipelineInputError naming the file and `what` it should hold."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineInputError(f"{path}: missing; expected {what}") from None
    except ValueError as error:
        raise PipelineInputError(f"{path}: not valid JSON ({error}); expected {what}") from None
    if not isinstance(content, dict):
        raise PipelineInputError(f"{path}: expected a JSON object with {what}")
    return content
