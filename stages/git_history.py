"""What a file held at the last commit: the baseline that gates and reports compare against."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def committed_json(relative: Path | str, cwd: Path | None = None) -> dict[str, Any]:
    """The JSON file `relative` as committed at git HEAD; {} outside git, before a first
    commit, or when the file was not committed or is not a JSON object."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{Path(relative).as_posix()}"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        content = json.loads(shown.stdout) if shown.returncode == 0 else {}
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}
