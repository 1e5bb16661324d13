"""Train stage: fit the model from params on the prepared data, keep the best epoch, save it."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stages.atomic import atomic_file, write_json, write_text
from stages.device import DevicePlan, DeviceRequest, Toggle, apply_plan, detect_gpus, plan_devices
from stages.errors import run_stage
from stages.keras_io import save_model_reproducibly
from stages.mnist_sources import NUM_CLASSES
from stages.model import ModelParams, build_model
from stages.params import load_section
from stages.prepared_data import PreparedData, load_prepared

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class TrainParams:
    optimizer: Literal["adam", "sgd", "rmsprop", "adadelta"] = "adam"
    learning_rate: float = 0.001
    loss: str = "categorical_crossentropy"
    batch_size: int = 128
    epochs: int = 12
    seed: int = 42
    device: DeviceRequest = "auto"
    mixed_precision: Toggle = "auto"
    xla: Toggle = "auto"


@dataclass(frozen=True)
class TrainResult:
    model: object  # keras.Model; kept untyped so importing this module stays light
    history: list[dict[str, float]]
    best_epoch: int
    plan: DevicePlan
    seconds: float
    images_per_second: float


def make_optimizer(params: TrainParams):
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        # The tutorials' Adadelta assumed learning rate 1.0; Keras 3 defaults to 0.001, so the
        # rate always comes from params.
        "adadelta": keras.optimizers.Adadelta,
    }
    return optimizers[params.optimizer](learning_rate=params.learning_rate)


def make_keep_best_callback(monitor: str = "val_accuracy"):
    """A callback that restores, at the end of training, the weights of the best epoch."""
    import keras

    class KeepBestWeights(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best_value = float("-inf")
            self.best_epoch = 0
            self.best_weights = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is not None and value > self.best_value:
                self.best_value = float(value)
                self.best_epoch = epoch + 1
                self.best_weights = self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return KeepBestWeights()


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    # Seeds plus deterministic kernels: the same data and params give the same weights.
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(data: PreparedData, model_params: ModelParams, params: TrainParams) -> TrainResult:
    plan = plan_devices(params.device, params.mixed_precision, params.xla, detect_gpus())
    strategy = apply_plan(plan)
    seed_everything(params.seed)
    logger.info("training on %s", plan.describe())
    with strategy.scope():
        model = build_model(data.train.x.shape[1:], NUM_CLASSES, model_params)
        model.compile(
            optimizer=make_optimizer(params),
            loss=params.loss,
            metrics=["accuracy"],
            jit_compile=plan.jit_compile,
        )
    keep_best = make_keep_best_callback()
    started = time.perf_counter()
    fitted = model.fit(
        data.train.x,
        data.train.y,
        batch_size=params.batch_size,
        epochs=params.epochs,
        validation_data=(data.validation.x, data.validation.y),
        callbacks=[keep_best],
        verbose=2 if _is_logged_to_file() else 1,
    )
    seconds = time.perf_counter() - started
    history = [
        {
            "epoch": epoch + 1,
            **{key: float(values[epoch]) for key, values in fitted.history.items()},
        }
        for epoch in range(len(fitted.history["loss"]))
    ]
    logger.info(
        "best epoch %d of %d: val_accuracy %.4f",
        keep_best.best_epoch,
        params.epochs,
        keep_best.best_value,
    )
    return TrainResult(
        model=model,
        history=history,
        best_epoch=keep_best.best_epoch,
        plan=plan,
        seconds=seconds,
        images_per_second=len(data.train.x) * params.epochs / seconds,
    )


def _is_logged_to_file() -> bool:
    import sys

    # One line per epoch instead of a progress bar when nobody watches a terminal.
    return not sys.stdout.isatty()


def history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--history", type=Path, default=Path("reports/train_history.csv"))
    parser.add_argument("--summary", type=Path, default=Path("reports/train.json"))
    arguments = parser.parse_args()
    model_params = load_section(ModelParams, "model", arguments.params)
    params = load_section(TrainParams, "train", arguments.params)
    result = train(load_prepared(arguments.data), model_params, params)
    with atomic_file(arguments.model) as temporary:
        save_model_reproducibly(result.model, temporary)
    write_text(arguments.history, history_csv(result.history))
    best = result.history[result.best_epoch - 1]
    write_json(
        arguments.summary,
        {
            "best_epoch": result.best_epoch,
            "best_val_accuracy": best["val_accuracy"],
            "epochs": params.epochs,
            "seconds": round(result.seconds, 2),
            "images_per_second": round(result.images_per_second, 1),
            # One string, so `dvc metrics show` stays one readable column.
            "device": result.plan.describe(),
        },
    )


if __name__ == "__main__":
    run_stage(main)
