"""Obtain MNIST from the configured source and write it in Keras' own mnist.npz layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mnistflow.atomic import atomic_file
from mnistflow.data import sources
from mnistflow.params import DataParams

logger = logging.getLogger(__name__)


def obtain(params: DataParams) -> tuple[str, sources.MnistArrays]:
    """Return (the source used, the checked arrays)."""
    return params.source, sources.load_source(params.source, params.sha256)


def write_raw(arrays: sources.MnistArrays, output: Path) -> None:
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
