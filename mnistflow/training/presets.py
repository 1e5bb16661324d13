"""Named sets of param overrides (presets.yaml): the tutorials' set-ups, run as experiments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnistflow.errors import PipelineInputError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    params: dict[str, Any]

    def dvc_command(self) -> str:
        """The same experiment for people who drive DVC directly."""
        return "dvc exp run " + " ".join(
            f"-S '{key}={format_value(value)}'" for key, value in self.params.items()
        )


def format_value(value: Any) -> str:
    """A value for DVC's --set-param: strings bare, the rest as JSON, except floats, written
    with a dot before any exponent (`1.0e-05`, not JSON's `1e-05`), so that a YAML 1.1 reader
    of the command or of the params it writes (PyYAML) reads a number too."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return yaml.safe_dump(value).split("\n", 1)[0]
    return json.dumps(value)


def load_presets(path: Path) -> dict[str, Preset]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PipelineInputError(f"{path}: cannot read presets ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise PipelineInputError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(content, dict):
        raise PipelineInputError(f"{path}: expected a mapping of preset names")
    presets = {}
    for name, entry in content.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
            raise PipelineInputError(f"{path}: preset {name!r} needs a 'params' mapping")
        presets[name] = Preset(name, str(entry.get("description", "")).strip(), entry["params"])
    return presets


def preset_overrides(path: Path, name: str) -> dict[str, Any]:
    presets = load_presets(path)
    if name not in presets:
        raise PipelineInputError(f"{path}: no preset {name!r}; known presets: {', '.join(presets)}")
    return dict(presets[name].params)
