"""Prepared data: normalized, shaped for the model, one-hot labels, a validation split.

`prepare` makes it from the raw arrays; `save_prepared` / `load_prepared` are its on-disk
format, written by the prepare stage and read by train and evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.atomic import atomic_directory
from mnistflow.data.normalization import Normalization, fit_normalization
from mnistflow.errors import PipelineInputError
from mnistflow.params import PrepareParams

PREPARED_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class PreparedSplit:
    x: np.ndarray  # float32 model inputs, (N, 28, 28, 1) or (N, 784)
    y: np.ndarray  # float32 one-hot, (N, 10)


@dataclass(frozen=True)
class PreparedData:
    train: PreparedSplit
    validation: PreparedSplit
    test: PreparedSplit


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def split_indices(count: int, params: PrepareParams) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) positions among `count` training images.

    One fixed-seed permutation decides both the validation split and the training cap, so a
    capped run is a random (not first-N) sample and reruns pick the same images.
    """
    order = np.random.default_rng(params.seed).permutation(count)
    if params.max_train_images is not None:
        order = order[: params.max_train_images]
    validation_size = int(round(len(order) * params.validation_fraction))
    if validation_size == 0 or validation_size == len(order):
        raise PipelineInputError(
            f"prepare.validation_fraction {params.validation_fraction} of {len(order)} training "
            "images leaves an empty training or validation split"
        )
    return np.sort(order[validation_size:]), np.sort(order[:validation_size])


def prepare(
    raw: dict[str, np.ndarray], params: PrepareParams, input_shape: tuple[int, ...]
) -> tuple[PreparedData, Normalization]:
    """Split off validation, fit the normalization on the training split, apply it to every
    split, shape each image to the model's `input_shape`, one-hot the labels."""
    x_train, y_train = raw["x_train"], raw["y_train"]
    test_count = params.max_test_images
    x_test, y_test = raw["x_test"][:test_count], raw["y_test"][:test_count]
    train_index, validation_index = split_indices(len(x_train), params)
    normalization = fit_normalization(params.normalization, x_train[train_index])

    def split(images: np.ndarray, labels: np.ndarray) -> PreparedSplit:
        inputs = normalization.apply(images).reshape(len(images), *input_shape)
        return PreparedSplit(inputs, one_hot(labels))

    data = PreparedData(
        train=split(x_train[train_index], y_train[train_index]),
        validation=split(x_train[validation_index], y_train[validation_index]),
        test=split(x_test, y_test),
    )
    return data, normalization


def save_prepared(data: PreparedData, output: Path) -> None:
    # Uncompressed .npy inside .npz: loads fast and np.savez is byte-reproducible.
    with atomic_directory(output) as folder:
        for name in PREPARED_SPLITS:
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
    return PreparedData(**{name: load_split(folder, name) for name in PREPARED_SPLITS})
