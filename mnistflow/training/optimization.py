"""What a model is compiled with: optimizer, metrics, learning-rate schedule, seeds."""

from __future__ import annotations

import math

from mnistflow.params import Metric, TrainParams


def make_optimizer(params: TrainParams):
    import keras

    rate = params.learning_rate
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=params.momentum)
    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=rate, momentum=params.momentum)
    if params.optimizer == "adadelta":
        # The tutorials' Adadelta assumed learning rate 1.0; Keras 3 defaults to 0.001, so the
        # rate always comes from params.
        return keras.optimizers.Adadelta(learning_rate=rate)
    return keras.optimizers.Adam(learning_rate=rate)


def make_metrics(names: list[Metric]) -> list:
    import keras

    by_name = {
        "accuracy": lambda: "accuracy",
        "precision": lambda: keras.metrics.Precision(name="precision"),
        "recall": lambda: keras.metrics.Recall(name="recall"),
    }
    return [by_name[name]() for name in names]


def learning_rate_at(epoch: int, params: TrainParams) -> float:
    """The learning rate of (0-based) `epoch` under the schedule; a pure function of the epoch,
    so a resumed run continues the schedule exactly."""
    schedule, base = params.lr_schedule, params.learning_rate
    if schedule.name == "step":
        return base * schedule.decay_rate ** (epoch // schedule.step_epochs)
    if schedule.name == "exponential":
        return base * schedule.decay_rate**epoch
    if schedule.name == "cosine":
        return _cosine(base, schedule.min_learning_rate, epoch, params.epochs)
    if schedule.name == "one_cycle":
        warmup = min(schedule.warmup_epochs, params.epochs - 1)
        if epoch < warmup:
            start = base / 10
            return start + (base - start) * epoch / warmup
        return _cosine(base, schedule.min_learning_rate, epoch - warmup, params.epochs - warmup)
    return base


def _cosine(base: float, floor: float, epoch: int, epochs: int) -> float:
    """From `base` at epoch 0 down to `floor` at the last of `epochs`, along half a cosine."""
    progress = epoch / max(epochs - 1, 1)
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    # Seeds plus deterministic kernels: the same data and params give the same weights.
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
