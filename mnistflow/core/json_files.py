"""JSON read back. Leniently where a missing or damaged file is an answer ("nothing there"):
a report that was never written, a revision without that output (`read_json`). Strictly where
text must hold an object, with an error that says where (`json_object`); for a file that must
exist, mnistflow.errors.read_json_object says which file and what it should hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnistflow.errors import PipelineInputError


def read_json(path: Path) -> Any:
    """The file's JSON value; None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def json_object(text: str, where: str) -> dict:
    """`text` as a JSON object; PipelineInputError naming `where` when it is not one."""
    try:
        content = json.loads(text)
    except ValueError as error:
        raise PipelineInputError(f"{where}: not JSON ({error})") from None
    if not isinstance(content, dict):
        raise PipelineInputError(f"{where}: expected a JSON object")
    return content
