"""What a file held at the last commit: the baseline that gates and reports compare against."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml


def committed_text(relative: Path | str, cwd: Path | None = None) -> str | None:
    """The file `relative` as committed at git HEAD; None outside git, before a first commit,
    or when the file was not committed."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{Path(relative).as_posix()}"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return shown.stdout if shown.returncode == 0 else None


def committed_json(relative: Path | str, cwd: Path | None = None) -> dict[str, Any]:
    """The JSON object `relative` held at git HEAD; {} when there is none."""
    try:
        content = json.loads(committed_text(relative, cwd) or "{}")
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def committed_yaml(relative: Path | str, cwd: Path | None = None) -> dict[str, Any]:
    """The YAML mapping `relative` held at git HEAD; {} when there is none."""
    try:
        content = yaml.safe_load(committed_text(relative, cwd) or "{}")
    except yaml.YAMLError:
        return {}
    return content if isinstance(content, dict) else {}
