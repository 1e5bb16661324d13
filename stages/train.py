"""Train stage: fit the model from params on the prepared data, resumably, and save it.

Metrics per epoch go to DVCLive (its Keras callback) for `dvc plots` and `dvc exp show`; a
checkpoint after every epoch, outside the stage's outputs, lets a killed run resume where it
stopped and end with the weights an uninterrupted run would have had.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stages.atomic import atomic_file, write_json
from stages.device import (
    DevicePlan,
    DeviceRequest,
    GpuInfo,
    Toggle,
    apply_plan,
    detect_gpus,
    plan_devices,
)
from stages.environment import environment_report
from stages.errors import PipelineInputError, run_stage
from stages.keras_io import save_model_reproducibly
from stages.mnist_sources import NUM_CLASSES
from stages.model import ModelParams, build_model
from stages.params import load_section
from stages.prepared_data import PreparedData, load_prepared
from stages.training_data import evaluation_dataset, steps_per_epoch, training_dataset
from stages.training_state import (
    TrainingState,
    fingerprint,
    load_checkpoint,
    make_progress_callback,
    remove_checkpoint,
    restore_variables,
)

logger = logging.getLogger(__name__)

Metric = Literal["accuracy", "precision", "recall"]


@dataclass(frozen=True)
class EarlyStoppingParams:
    enabled: bool = False
    patience: int = 3  # epochs without improvement of train.monitor
    min_delta: float = 0.0


@dataclass(frozen=True)
class LearningRateScheduleParams:
    # constant | step (× decay_rate every step_epochs) | exponential (× decay_rate per epoch) |
    # cosine (from learning_rate down to min_learning_rate over the run)
    name: Literal["constant", "step", "exponential", "cosine"] = "constant"
    decay_rate: float = 0.5
    step_epochs: int = 5
    min_learning_rate: float = 0.0


@dataclass(frozen=True)
class TrainParams:
    optimizer: Literal["adam", "sgd", "rmsprop", "adadelta"] = "adam"
    learning_rate: float = 0.001
    momentum: float = 0.0  # sgd and rmsprop only
    loss: Literal["categorical_crossentropy", "mse"] = "categorical_crossentropy"
    metrics: tuple[Metric, ...] = ("accuracy", "precision", "recall")
    batch_size: int = 32  # per device; the global batch is this × the number of GPUs
    epochs: int = 12
    seed: int = 42
    # The validation metric that picks the best epoch and drives early stopping.
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    restore_best_weights: bool = True
    early_stopping: EarlyStoppingParams = field(default_factory=EarlyStoppingParams)
    lr_schedule: LearningRateScheduleParams = field(default_factory=LearningRateScheduleParams)
    device: DeviceRequest = "auto"
    mixed_precision: Toggle = "auto"
    xla: Toggle = "auto"


@dataclass(frozen=True)
class TrainResult:
    model: object  # keras.Model; kept untyped so importing this module stays light
    history: list[dict[str, float]]
    best_epoch: int
    plan: DevicePlan
    gpus: list[GpuInfo]
    global_batch_size: int
    resumed_from_epoch: int
    stopped_early: bool
    seconds: float
    images_per_second: float


def check_params(params: TrainParams) -> None:
    if params.epochs < 1 or params.batch_size < 1:
        raise PipelineInputError(
            f"train.epochs {params.epochs} and train.batch_size {params.batch_size}: "
            "expected positive integers"
        )
    if params.learning_rate <= 0:
        raise PipelineInputError(f"train.learning_rate: {params.learning_rate}; expected > 0")
    if params.momentum and params.optimizer not in ("sgd", "rmsprop"):
        raise PipelineInputError(
            f"train.momentum: {params.momentum} applies to sgd and rmsprop, not "
            f"{params.optimizer}; set it to 0"
        )
    if "accuracy" not in params.metrics and params.monitor == "val_accuracy":
        raise PipelineInputError("train.monitor: val_accuracy needs 'accuracy' in train.metrics")


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


def make_metrics(names: tuple[str, ...]) -> list:
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
        progress = epoch / max(params.epochs - 1, 1)
        floor = schedule.min_learning_rate
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return base


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    # Seeds plus deterministic kernels: the same data and params give the same weights.
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def run_fingerprint(model_params: ModelParams, params: TrainParams, data: PreparedData) -> str:
    """What a checkpoint must match to be resumed: the params and the training data."""
    settings = {"model": dataclasses.asdict(model_params), "train": dataclasses.asdict(params)}
    return fingerprint(settings, [data.train.x, data.train.y, data.validation.x, data.validation.y])


def make_live_callback(live_folder: Path, earlier_epochs: list[dict[str, float]]):
    """DVCLive's Keras callback, with the epochs a resumed run already did logged again."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback
    from dvclive.utils import standardize_metric_name

    # dvcyaml=None: dvc.yaml declares the metrics and plots itself (DVCLive would rewrite it on
    # every run); save_dvc_exp=False: DVC runs this stage, so DVC records the experiment.
    live = Live(dir=str(live_folder), dvcyaml=None, save_dvc_exp=False)
    for row in earlier_epochs:
        for name, value in row.items():
            if name != "epoch":
                live.log_metric(standardize_metric_name(name, "dvclive.keras"), value)
        live.next_step()
    return DVCLiveCallback(live=live)


def train(
    data: PreparedData,
    model_params: ModelParams,
    params: TrainParams,
    checkpoint_folder: Path | None = None,
    live_folder: Path | None = None,
    extra_callbacks: tuple = (),
) -> TrainResult:
    """Fit the model; with `checkpoint_folder`, resume from and checkpoint into it."""
    import keras

    check_params(params)
    gpus = detect_gpus()
    plan = plan_devices(params.device, params.mixed_precision, params.xla, gpus)
    strategy = apply_plan(plan)
    seed_everything(params.seed)
    replicas = strategy.num_replicas_in_sync
    global_batch = params.batch_size * replicas
    logger.info("training on %s", plan.describe())
    if replicas > 1:
        logger.info(
            "batch size %d per replica × %d replicas = global batch %d",
            params.batch_size,
            replicas,
            global_batch,
        )
    with strategy.scope():
        model = build_model(data.train.x.shape[1:], NUM_CLASSES, model_params)
        model.compile(
            optimizer=make_optimizer(params),
            loss=params.loss,
            metrics=make_metrics(params.metrics),
            jit_compile=plan.jit_compile,
        )

    run_id = run_fingerprint(model_params, params, data) if checkpoint_folder else ""
    state, best_weights = TrainingState(fingerprint=run_id), None
    checkpoint = load_checkpoint(checkpoint_folder, run_id) if checkpoint_folder else None
    if checkpoint is not None:
        with strategy.scope():
            fits = restore_variables(model, checkpoint.variables)
        if fits:
            state, best_weights = checkpoint.state, checkpoint.best_weights
            logger.info(
                "resuming from the checkpoint in %s after epoch %d of %d",
                checkpoint_folder,
                state.epochs_done,
                params.epochs,
            )
        else:
            logger.warning(
                "ignoring the checkpoint in %s: its variables do not fit the model",
                checkpoint_folder,
            )
    resumed_from = state.epochs_done

    early = params.early_stopping
    progress = make_progress_callback(
        state,
        checkpoint_folder,
        monitor=params.monitor,
        min_delta=early.min_delta,
        patience=early.patience if early.enabled else None,
        restore_best_weights=params.restore_best_weights,
        best_weights=best_weights,
    )
    callbacks = [progress, *extra_callbacks]
    if params.lr_schedule.name != "constant":
        scheduler = keras.callbacks.LearningRateScheduler(
            lambda epoch, _: learning_rate_at(epoch, params)
        )
        callbacks.insert(0, scheduler)
    live_callback = None
    if live_folder is not None:
        live_callback = make_live_callback(live_folder, state.history)
        callbacks.insert(0, live_callback)

    started = time.perf_counter()
    if state.epochs_done < params.epochs and not state.stopped_early:
        model.fit(
            training_dataset(
                data.train.x,
                data.train.y,
                global_batch,
                params.seed,
                state.epochs_done,
                params.epochs,
            ),
            steps_per_epoch=steps_per_epoch(len(data.train.x), global_batch),
            initial_epoch=state.epochs_done,
            # The dataset shuffles itself, per epoch, from the seed.
            shuffle=False,
            epochs=params.epochs,
            validation_data=evaluation_dataset(data.validation.x, data.validation.y, global_batch),
            callbacks=callbacks,
            verbose=2 if not sys.stdout.isatty() else 1,
        )
    else:
        # Killed after the last epoch's checkpoint but before the model was saved.
        progress.set_model(model)
        progress.restore_best()
        if live_callback is not None:
            live_callback.live.end()
    seconds = time.perf_counter() - started
    epochs_here = state.epochs_done - resumed_from
    logger.info(
        "best epoch %d of %d: %s %.4f",
        state.best_epoch,
        state.epochs_done,
        params.monitor,
        state.best_value if state.best_value is not None else float("nan"),
    )
    return TrainResult(
        model=model,
        history=state.history,
        best_epoch=state.best_epoch,
        plan=plan,
        gpus=gpus,
        global_batch_size=global_batch,
        resumed_from_epoch=resumed_from,
        stopped_early=state.stopped_early,
        seconds=seconds,
        images_per_second=len(data.train.x) * epochs_here / seconds if epochs_here else 0.0,
    )


def train_summary(result: TrainResult, params: TrainParams) -> dict:
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    return {
        "best_epoch": result.best_epoch,
        "best_val_accuracy": best.get("val_accuracy"),
        "epochs_run": len(result.history),
        "epochs": params.epochs,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "global_batch_size": result.global_batch_size,
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        # Strings, so `dvc metrics show` keeps each in one readable column.
        "device": result.plan.describe(),
        "environment": environment_report(result.plan, result.gpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--live", type=Path, default=Path("reports/training"))
    parser.add_argument("--summary", type=Path, default=Path("reports/train.json"))
    parser.add_argument("--checkpoints", type=Path, default=Path(".checkpoints/train"))
    arguments = parser.parse_args()
    model_params = load_section(ModelParams, "model", arguments.params)
    params = load_section(TrainParams, "train", arguments.params)
    result = train(
        load_prepared(arguments.data),
        model_params,
        params,
        checkpoint_folder=arguments.checkpoints,
        live_folder=arguments.live,
    )
    with atomic_file(arguments.model) as temporary:
        save_model_reproducibly(result.model, temporary)
    write_json(arguments.summary, train_summary(result, params))
    # Only a saved model makes the checkpoint redundant.
    remove_checkpoint(arguments.checkpoints)


if __name__ == "__main__":
    run_stage(main)
