"""Deployment parameters are requests, not orders: paths stay inside the project, Dask addresses
come from the operator's list.

Anyone who can reach the Prefect API can start a deployment with any parameters. A path
parameter must therefore resolve (symlinks followed) inside the project or one of the roots the
operator lists in MNISTFLOW_DATA_ROOTS, and a Dask scheduler address must be one the operator
lists in MNISTFLOW_DASK_ADDRESSES, in the worker's own environment, which API callers do not
control.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnistflow.errors import PipelineInputError

DATA_ROOTS_VARIABLE = "MNISTFLOW_DATA_ROOTS"
DASK_ADDRESSES_VARIABLE = "MNISTFLOW_DASK_ADDRESSES"
# Repository internals no deployment parameter may point into.
PROTECTED = {".git", ".dvc"}


def _listed(variable: str, separator: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(separator) if item.strip()]


def allowed_roots(project_root: Path) -> list[Path]:
    return [Path(project_root).resolve()] + [
        Path(root).resolve() for root in _listed(DATA_ROOTS_VARIABLE, os.pathsep)
    ]


def confined_path(project_root: Path, value: str, parameter: str) -> Path:
    """`value` (relative to the project, or absolute) resolved, if it lies in an allowed root."""
    candidate = Path(value)
    resolved = (candidate if candidate.is_absolute() else Path(project_root) / candidate).resolve()
    roots = allowed_roots(project_root)
    if not within_roots(resolved, roots):
        raise PipelineInputError(
            f"parameter {parameter}={value!r} resolves to {resolved}, outside the project and the "
            f"roots in {DATA_ROOTS_VARIABLE} ({', '.join(map(str, roots))}); refused"
        )
    if PROTECTED & set(resolved.parts):
        raise PipelineInputError(
            f"parameter {parameter}={value!r} points into {'/'.join(sorted(PROTECTED))}; refused"
        )
    return resolved


def within_roots(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def confined_files(folder: Path, files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files that resolve inside `folder` or a root the operator lists, those that escape,
    e.g. by a link, or lead into .git or .dvc). An inbox's files are its own: a link to the
    project's params, a DVC config or a key must not be read, hashed and quoted."""
    roots = [Path(folder).resolve()] + [
        Path(root).resolve() for root in _listed(DATA_ROOTS_VARIABLE, os.pathsep)
    ]
    inside, outside = [], []
    for path in files:
        resolved = Path(path).resolve()
        allowed = within_roots(resolved, roots) and not PROTECTED & set(resolved.parts)
        (inside if allowed else outside).append(path)
    return inside, outside


def confined_dask_address(address: str | None) -> str | None:
    """`address` if the operator allowed it (MNISTFLOW_DASK_ADDRESSES, comma-separated)."""
    if address is None:
        return None
    allowed = _listed(DASK_ADDRESSES_VARIABLE, ",")
    if address not in allowed:
        raise PipelineInputError(
            f"parameter dask_address={address!r} is not among the scheduler addresses the "
            f"operator allows in {DASK_ADDRESSES_VARIABLE} ({', '.join(allowed) or 'none'}); "
            "refused"
        )
    return address
