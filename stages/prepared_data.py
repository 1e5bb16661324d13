"""The prepared-data format shared by prepare (writer) and train/evaluate (readers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.atomic import atomic_directory
from stages.errors import PipelineInputError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class PreparedSplit:
    x: np.ndarray  # float32 in [0, 1], (N, 28, 28, 1) or (N, 784)
    y: np.ndarray  # float32 one-hot, (N, 10)


@dataclass(frozen=True)
class PreparedData:
    train: PreparedSplit
    validation: PreparedSplit
    test: PreparedSplit


def save_prepared(data: PreparedData, output: Path) -> None:
    # Uncompressed .npy inside .npz: loads fast and np.savez is byte-reproducible.
    with atomic_directory(output) as folder:
        for name in SPLITS:
            part: PreparedSplit = getattr(data, name)
            with open(folder / f"{name}.npz", "wb") as handle:
                np.savez(handle, x=part.x, y=part.y)


def load_split(folder: Path, name: str) -> PreparedSplit:
    path = Path(folder) / f"{name}.npz"
    if not path.is_file():
        raise PipelineInputError(f"{path}: missing; run the prepare stage first")
    with np.load(path, allow_pickle=False) as archive:
        return PreparedSplit(x=archive["x"], y=archive["y"])


def load_prepared(folder: Path) -> PreparedData:
    return PreparedData(**{name: load_split(folder, name) for name in SPLITS})
