"""JSON files read where a missing or damaged file is an answer ("nothing there"), not an
error: a report that was never written, a revision without that output. Where it is an error,
mnistflow.errors.read_json_object says which file and what it should hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The file's JSON value; None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
