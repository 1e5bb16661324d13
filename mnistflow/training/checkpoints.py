"""What a crashed training run needs to resume, kept on disk outside the stage's outputs.

After each epoch the callback writes, atomically, every model variable (weights and the dropout
layers' random-generator states), every optimizer variable, the best epoch's weights, the
history and the early-stopping counters. Keras' BackupAndRestore keeps only the first two, so a
resumed run would forget which epoch was best; this keeps all of it. A checkpoint carries a
fingerprint of the params and data it belongs to and is ignored when they differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnistflow.atomic import atomic_directory

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
VARIABLES_FILE = "variables.npz"
BEST_WEIGHTS_FILE = "best_weights.npz"


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


def fingerprint(settings: dict, arrays: list[np.ndarray]) -> str:
    """A hash of the run's settings and the bytes of its (already loaded) training data."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def save_checkpoint(folder: Path, checkpoint: Checkpoint) -> None:
    with atomic_directory(folder) as staging:
        with open(staging / VARIABLES_FILE, "wb") as handle:
            np.savez(handle, *checkpoint.variables)
        with open(staging / BEST_WEIGHTS_FILE, "wb") as handle:
            np.savez(handle, *checkpoint.best_weights)
        (staging / STATE_FILE).write_text(
            json.dumps(dataclasses.asdict(checkpoint.state), indent=1), encoding="utf-8"
        )


def _arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def load_checkpoint(folder: Path, expected_fingerprint: str) -> Checkpoint | None:
    """The checkpoint in `folder` if it belongs to this run, else None (with the reason logged)."""
    state_path = Path(folder) / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = TrainingState(**json.loads(state_path.read_text(encoding="utf-8")))
        if state.fingerprint != expected_fingerprint:
            logger.warning(
                "ignoring the checkpoint in %s: it was written for other params or data", folder
            )
            return None
        return Checkpoint(
            state=state,
            variables=_arrays(Path(folder) / VARIABLES_FILE),
            best_weights=_arrays(Path(folder) / BEST_WEIGHTS_FILE),
        )
    except (OSError, ValueError, TypeError, KeyError) as error:
        logger.warning("ignoring the unreadable checkpoint in %s (%s)", folder, error)
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
