"""Prepare stage: scale to float32 [0, 1], shape for the model, one-hot labels, validation split."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import PipelineInputError, run_stage
from stages.mnist_sources import NUM_CLASSES, load_npz
from stages.model import input_shape_for, model_name_in
from stages.params import read_params_file, section_from_mapping
from stages.prepared_data import PreparedData, PreparedSplit, save_prepared

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareParams:
    validation_fraction: float = 0.1
    seed: int = 42
    # Optional caps for quick runs (tests, smoke runs); null keeps every image.
    max_train_images: int | None = None
    max_test_images: int | None = None


def _shape_images(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    scaled = images.astype(np.float32) / np.float32(255.0)
    return scaled.reshape(len(images), *input_shape)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    import keras

    return keras.utils.to_categorical(labels, NUM_CLASSES).astype(np.float32)


def prepare(
    raw: dict[str, np.ndarray], params: PrepareParams, input_shape: tuple[int, ...]
) -> PreparedData:
    """Scale, shape each image to the model's `input_shape`, one-hot, split off validation."""
    if not 0.0 < params.validation_fraction < 1.0:
        raise PipelineInputError(
            f"prepare.validation_fraction: {params.validation_fraction}; expected 0 < f < 1"
        )
    x_train, y_train = raw["x_train"], raw["y_train"]
    x_test, y_test = raw["x_test"], raw["y_test"]
    if params.max_test_images is not None:
        x_test, y_test = x_test[: params.max_test_images], y_test[: params.max_test_images]

    # One fixed-seed permutation decides both the validation split and the training cap, so
    # a capped run is a random (not first-N) sample and reruns pick the same images.
    order = np.random.default_rng(params.seed).permutation(len(x_train))
    if params.max_train_images is not None:
        order = order[: params.max_train_images]
    validation_size = int(round(len(order) * params.validation_fraction))
    if validation_size == 0 or validation_size == len(order):
        raise PipelineInputError(
            f"prepare.validation_fraction {params.validation_fraction} of {len(order)} training "
            "images leaves an empty training or validation split"
        )
    validation_index = np.sort(order[:validation_size])
    train_index = np.sort(order[validation_size:])

    def split(images: np.ndarray, labels: np.ndarray) -> PreparedSplit:
        return PreparedSplit(_shape_images(images, input_shape), _one_hot(labels))

    return PreparedData(
        train=split(x_train[train_index], y_train[train_index]),
        validation=split(x_train[validation_index], y_train[validation_index]),
        test=split(x_test, y_test),
    )


def input_shape_from_params(all_params: dict) -> tuple[int, ...]:
    """The input shape of the model params.yaml names (model.name, default cnn)."""
    try:
        return input_shape_for(model_name_in(all_params))
    except ValueError as error:
        raise PipelineInputError(f"params:{error}") from None


def require_passed_validation(report: Path) -> None:
    """Refuse to prepare data that the validate stage did not pass."""
    try:
        passed = json.loads(report.read_text(encoding="utf-8"))["success"] is True
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineInputError(
            f"{report}: no readable validation result ({error}); run the validate stage first"
        ) from None
    if not passed:
        raise PipelineInputError(f"{report}: the raw data failed validation; not preparing it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw/mnist.npz"))
    parser.add_argument("--validation", type=Path, default=Path("reports/validation.json"))
    parser.add_argument("--output", type=Path, default=Path("data/prepared"))
    arguments = parser.parse_args()
    require_passed_validation(arguments.validation)
    all_params = read_params_file(arguments.params)
    params = section_from_mapping(PrepareParams, all_params.get("prepare"), "params:prepare")
    input_shape = input_shape_from_params(all_params)
    raw = load_npz(arguments.raw).as_npz_dict()
    data = prepare(raw, params, input_shape)
    save_prepared(data, arguments.output)
    logger.info(
        "prepared images shaped %s: %d train, %d validation, %d test -> %s",
        input_shape,
        len(data.train.x),
        len(data.validation.x),
        len(data.test.x),
        arguments.output,
    )


if __name__ == "__main__":
    run_stage(main)
