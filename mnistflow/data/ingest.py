"""Obtain MNIST from the configured source and write it in Keras' own mnist.npz layout."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import yaml

from mnistflow.core.atomic import atomic_file
from mnistflow.core.git import file_at_revision
from mnistflow.data import sources
from mnistflow.params import DataParams

logger = logging.getLogger(__name__)


def committed_data_sha256(params_file: Path, project: Path | None = None) -> str | None:
    """data.sha256 as the params file's last commit holds it (git HEAD of `project`, default
    the working directory: the stage's project), not as the working copy says: an experiment,
    a deployment request or an uncommitted edit changes the working copy only. The file is
    looked up by its place in the project, never through links, so a params.yaml that is a
    link into another repository cannot lend that repository's commits. None outside a git
    repository, for a params file outside the project, or where HEAD has no such value."""
    project = Path(project or Path.cwd()).absolute()
    relative = Path(os.path.relpath(Path(params_file).absolute(), project))
    if ".." in relative.parts:
        return None
    shown = file_at_revision(project, "HEAD", f"./{relative.as_posix()}")
    if shown is None:
        return None
    try:
        committed = yaml.safe_load(shown) or {}
    except yaml.YAMLError:
        return None
    value = (committed.get("data") or {}).get("sha256") if isinstance(committed, dict) else None
    return value.lower() if isinstance(value, str) else None


def trusted_pickles(params_file: Path) -> frozenset[str]:
    """The pickle hashes ingest may unpickle: those this code ships, and the committed one."""
    committed = committed_data_sha256(params_file)
    return sources.SHIPPED_PICKLES | ({committed} if committed else set())


def write_raw(arrays: sources.MnistArrays, output: Path) -> None:
    # np.savez pins the zip timestamps, so equal arrays give byte-identical files (and one DVC
    # hash) on every run and machine.
    with atomic_file(output) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays.as_npz_dict())


def ingest(
    params: DataParams, output: Path, trusted: frozenset[str] = sources.SHIPPED_PICKLES
) -> Path:
    source, arrays = params.source, sources.load_source(params.source, params.sha256, trusted)
    write_raw(arrays, output)
    logger.info(
        "MNIST from %s: %d train, %d test images -> %s",
        source,
        len(arrays.x_train),
        len(arrays.x_test),
        output,
    )
    return output
