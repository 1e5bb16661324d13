"""Each DVC stage's import closure inside the project, against the deps dvc.yaml lists.

Imports are read statically (ast), function-level ones included; a module is covered when its
file, or a folder holding it, is among the stage's deps.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path
from typing import Any

import yaml


def module_file(root: Path, name: str) -> Path | None:
    """The project file of module `name` (a package's __init__.py), None outside the project."""
    parts = name.split(".")
    for candidate in (
        root.joinpath(*parts).with_suffix(".py"),
        root.joinpath(*parts, "__init__.py"),
    ):
        if candidate.is_file():
            return candidate
    return None


def imported_names(root: Path, path: Path) -> set[str]:
    """Every module name `path` imports, each dotted prefix included (its __init__ runs)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base_parts = list(package[: len(package) - node.level + 1]) if node.level else []
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {
        ".".join(name.split(".")[: i + 1]) for name in names for i in range(name.count(".") + 1)
    }


def import_closure(root: Path, entries: list[Path]) -> set[Path]:
    seen: set[Path] = set()
    pending = list(entries)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        pending.extend(
            found for name in imported_names(root, path) if (found := module_file(root, name))
        )
    return seen


def stage_closure(root: Path, stage: dict[str, Any]) -> set[Path]:
    """What `python -m <module>` in the stage's cmd runs: the module, the packages above it
    (their __init__ runs first), and everything they import."""
    words = shlex.split(" ".join(stage["cmd"].split()))
    parts = words[words.index("-m") + 1].split(".")
    entries = [module_file(root, ".".join(parts[: i + 1])) for i in range(len(parts))]
    return import_closure(root, [entry for entry in entries if entry])


def dependency_gaps(root: Path, stages: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Per stage with a gap: project modules it imports that no dep covers ("missing"), and
    project modules its deps cover that it never imports ("extra")."""
    gaps = {}
    for name, stage in stages.items():
        closure = stage_closure(root, stage)
        deps = [root / dep for dep in stage.get("deps", [])]
        covered = {
            path
            for dep in deps
            for path in ([dep] if dep.suffix == ".py" else dep.rglob("*.py"))
            if path.is_file()
        }
        missing = sorted(str(p.relative_to(root)) for p in closure - covered)
        extra = sorted(str(p.relative_to(root)) for p in covered - closure)
        if missing or extra:
            gaps[name] = {"missing": missing, "extra": extra}
    return gaps


def pipeline_stages(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def stages_importing(root: Path, module: Path) -> set[str]:
    """The stages whose import closure holds `module` (a path inside `root`)."""
    return {
        name
        for name, stage in pipeline_stages(root).items()
        if module in stage_closure(root, stage)
    }
