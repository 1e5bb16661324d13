"""What a crashed training run needs to resume, kept on disk outside the stage's outputs.

After each epoch the callback writes every model variable (weights and the dropout layers'
random-generator states), every optimizer variable, the best epoch's weights, the history and
the early-stopping counters. Keras' BackupAndRestore keeps only the first two, so a resumed run
would forget which epoch was best; this keeps all of it.

A checkpoint can never poison a run:
- it carries a fingerprint of everything that decides the weights: params, training data, the
  training code, the library versions and the device plan; any difference and it is ignored;
- one that cannot be read (empty, truncated, corrupt) is discarded with a warning;
- each save is a new folder (`epoch-0003-<time>/`) written under a temporary name, its files
  fsynced, then renamed into place; older snapshots are removed only after that, so at every
  instant a complete snapshot exists. Temporary folders of a killed write are cleaned up;
  an unreadable snapshot is moved aside (`.damaged-…`), never deleted, and never read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnistflow.core.durable import fsync_path

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
VARIABLES_FILE = "variables.npz"
BEST_WEIGHTS_FILE = "best_weights.npz"
SNAPSHOT_PREFIX = "epoch-"
TEMPORARY_PREFIX = ".writing-"


@dataclass
class TrainingState:
    fingerprint: str
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False


@dataclass(frozen=True)
class Checkpoint:
    state: TrainingState
    variables: list[np.ndarray]  # model.variables then optimizer.variables, in order
    best_weights: list[np.ndarray]


def settings_fingerprint(settings: dict, arrays: list[np.ndarray]) -> str:
    """A hash of the run's settings and the bytes of its (already loaded) training data."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def training_code_digest() -> str:
    """sha256 of the training package's sources: the model zoo, the loop, the input pipeline.

    A checkpoint written by other model code with the same params must not be resumed."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def _snapshot_name(epochs_done: int) -> str:
    # Unique per save, ordered by epoch then time: saving the same epoch again never has to
    # remove the old folder first (a moment with no snapshot).
    return f"{SNAPSHOT_PREFIX}{epochs_done:04d}-{time.time_ns():020d}"


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def snapshots(folder: Path) -> list[Path]:
    """The complete snapshots in `folder`, newest first."""
    if not Path(folder).is_dir():
        return []
    found = [
        path
        for path in Path(folder).iterdir()
        if path.is_dir() and path.name.startswith(SNAPSHOT_PREFIX)
    ]
    return sorted(found, key=lambda path: path.name, reverse=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary folders left by a write that was killed."""
    if Path(folder).is_dir():
        for path in Path(folder).iterdir():
            if path.name.startswith(TEMPORARY_PREFIX):
                shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(folder: Path, checkpoint: Checkpoint) -> Path:
    """Write a new snapshot, durably, then drop the older ones; returns the snapshot."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=folder))
    try:
        _write_synced(staging / VARIABLES_FILE, lambda h: np.savez(h, *checkpoint.variables))
        _write_synced(staging / BEST_WEIGHTS_FILE, lambda h: np.savez(h, *checkpoint.best_weights))
        state = json.dumps(dataclasses.asdict(checkpoint.state), indent=1).encode("utf-8")
        _write_synced(staging / STATE_FILE, lambda h: h.write(state))
        fsync_path(staging)
        snapshot = folder / _snapshot_name(checkpoint.state.epochs_done)
        os.rename(staging, snapshot)
        fsync_path(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    for older in snapshots(folder):
        if older != snapshot:
            shutil.rmtree(older, ignore_errors=True)
    return snapshot


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


# What reading a damaged snapshot raises: empty or truncated zips, bad JSON, missing files,
# a state of another shape.
UNREADABLE = (
    FileNotFoundError,
    ValueError,
    TypeError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
)
DAMAGED_PREFIX = ".damaged-"


def _read_snapshot(snapshot: Path) -> Checkpoint:
    state = TrainingState(**json.loads((snapshot / STATE_FILE).read_text(encoding="utf-8")))
    return Checkpoint(
        state=state,
        variables=_arrays(snapshot / VARIABLES_FILE),
        best_weights=_arrays(snapshot / BEST_WEIGHTS_FILE),
    )


def load_checkpoint(folder: Path, expected_fingerprint: str) -> Checkpoint | None:
    """The newest readable snapshot in `folder` if it belongs to this run, else None.

    Unreadable snapshots are deleted with a warning (an older one is tried next); one of
    another run (params, data, code, libraries or devices differ) is ignored with a warning."""
    folder = Path(folder)
    remove_stale_temporaries(folder)
    for snapshot in snapshots(folder):
        try:
            checkpoint = _read_snapshot(snapshot)
        except UNREADABLE as error:
            logger.warning(
                "discarding the unreadable checkpoint %s (%s: %s)",
                snapshot,
                type(error).__name__,
                error,
            )
            # Moved aside, not deleted: kept for a post-mortem, never resumed from.
            os.replace(snapshot, snapshot.with_name(DAMAGED_PREFIX + snapshot.name))
            continue
        if checkpoint.state.fingerprint != expected_fingerprint:
            logger.warning(
                "ignoring the checkpoint in %s: it was written for other params, data, training "
                "code, library versions or devices; starting over",
                folder,
            )
            return None
        return checkpoint
    return None


def remove_checkpoint(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def model_and_optimizer_variables(model) -> list:
    return list(model.variables) + list(model.optimizer.variables)


def restore_variables(model, values: list[np.ndarray]) -> bool:
    """Assign saved values to the model's and optimizer's variables; False if they don't fit."""
    model.optimizer.build(model.trainable_variables)
    variables = model_and_optimizer_variables(model)
    if len(variables) != len(values) or any(
        tuple(variable.shape) != value.shape
        for variable, value in zip(variables, values, strict=True)
    ):
        return False
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
    return True
