"""The training loop: build and compile, resume from a checkpoint, fit with callbacks.

Metrics per epoch go to DVCLive (its Keras callback) for `dvc plots` and `dvc exp show`; a
checkpoint after every epoch, outside the stage's outputs, lets a killed run resume where it
stopped and end with the weights an uninterrupted run would have had.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.data.prepared import PreparedData
from mnistflow.params import ModelParams, TrainParams
from mnistflow.training.checkpoints import (
    TrainingState,
    load_checkpoint,
    restore_variables,
    settings_fingerprint,
    training_code_digest,
)
from mnistflow.training.dataset import evaluation_dataset, steps_per_epoch, training_dataset
from mnistflow.training.device import (
    DevicePlan,
    GpuInfo,
    apply_plan,
    detect_gpus,
    plan_devices,
)
from mnistflow.training.environment import environment_report, host_description
from mnistflow.training.models import build_model, float32_copy
from mnistflow.training.optimization import (
    learning_rate_at,
    make_metrics,
    make_optimizer,
    seed_everything,
)

logger = logging.getLogger(__name__)


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


def run_fingerprint(
    model_params: ModelParams, params: TrainParams, data: PreparedData, plan: DevicePlan
) -> str:
    """What a checkpoint must match to be resumed: the params, the training data, the training
    code, the versions of the libraries that compute the weights, and the device plan."""
    import keras
    import tensorflow as tf

    settings = {
        "model": model_params.model_dump(),
        "train": params.model_dump(),
        "training_code": training_code_digest(),
        "libraries": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },  # fmt: skip
        "devices": dataclasses.asdict(plan),
    }
    arrays = [data.train.x, data.train.y, data.validation.x, data.validation.y]
    return settings_fingerprint(settings, arrays)


def compiled_model(input_shape, model_params: ModelParams, params: TrainParams, plan, strategy):
    """The model of `model_params`, built and compiled inside the distribution strategy."""
    with strategy.scope():
        model = build_model(input_shape, NUM_CLASSES, model_params)
        model.compile(
            optimizer=make_optimizer(params),
            loss=params.loss,
            metrics=make_metrics(params.metrics),
            jit_compile=plan.jit_compile,
        )
    return model


def resume_state(model, strategy, checkpoint_folder: Path | None, run_id: str):
    """(state, best weights) from this run's checkpoint, or a fresh state when there is none,
    it belongs to other params or data, or its variables do not fit the model."""
    fresh = TrainingState(fingerprint=run_id), None
    checkpoint = load_checkpoint(checkpoint_folder, run_id) if checkpoint_folder else None
    if checkpoint is None:
        return fresh
    with strategy.scope():
        fits = restore_variables(model, checkpoint.variables)
    if not fits:
        logger.warning(
            "ignoring the checkpoint in %s: its variables do not fit the model", checkpoint_folder
        )
        return fresh
    return checkpoint.state, checkpoint.best_weights


def make_callbacks(params: TrainParams, progress, live_folder: Path | None, history, extra):
    """[DVCLive, learning-rate schedule, progress, *extra], each only where it applies."""
    import keras

    from mnistflow.training.callbacks import live_callback

    callbacks = [progress, *extra]
    if params.lr_schedule.name != "constant":
        schedule = keras.callbacks.LearningRateScheduler(
            lambda epoch, _: learning_rate_at(epoch, params)
        )
        callbacks.insert(0, schedule)
    if live_folder is not None:
        callbacks.insert(0, live_callback(live_folder, history))
    return callbacks


def fit(
    model,
    data: PreparedData,
    params: TrainParams,
    global_batch: int,
    first_epoch: int,
    callbacks: list,
) -> None:
    """Epochs first_epoch..params.epochs-1 on the seeded per-epoch shuffle of the data."""
    model.fit(
        training_dataset(
            data.train.x,
            data.train.y,
            global_batch,
            params.seed,
            first_epoch,
            params.epochs,
            params.augmentation if params.augmentation.enabled else None,
        ),
        steps_per_epoch=steps_per_epoch(len(data.train.x), global_batch),
        initial_epoch=first_epoch,
        # The dataset shuffles itself, per epoch, from the seed.
        shuffle=False,
        epochs=params.epochs,
        validation_data=evaluation_dataset(data.validation.x, data.validation.y, global_batch),
        callbacks=callbacks,
        verbose=2 if not sys.stdout.isatty() else 1,
    )


def place(params: TrainParams):
    """(device plan, visible GPUs, distribution strategy, global batch), seeds set."""
    gpus = detect_gpus()
    plan = plan_devices(params.device, params.mixed_precision, params.xla, gpus)
    strategy = apply_plan(plan)
    seed_everything(params.seed)
    replicas = strategy.num_replicas_in_sync
    global_batch = params.batch_size * replicas
    logger.info("training on %s (host: %s)", plan.describe(), host_description())
    if replicas > 1:
        logger.info(
            "batch size %d per replica × %d replicas = global batch %d",
            params.batch_size,
            replicas,
            global_batch,
        )
    return plan, gpus, strategy, global_batch


def progress_callback(params: TrainParams, state, checkpoint_folder: Path | None, best_weights):
    from mnistflow.training.callbacks import TrainingProgress

    early = params.early_stopping
    return TrainingProgress(
        state,
        checkpoint_folder,
        monitor=params.monitor,
        min_delta=early.min_delta,
        patience=early.patience if early.enabled else None,
        restore_best_weights=params.restore_best_weights,
        best_weights=best_weights,
    )


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

    # place() sets Keras' process-wide precision policy; it is put back afterwards, so models
    # built later in the same process (tests, notebooks) are not silently mixed precision.
    policy = keras.mixed_precision.global_policy()
    try:
        return _train(data, model_params, params, checkpoint_folder, live_folder, extra_callbacks)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _train(
    data: PreparedData,
    model_params: ModelParams,
    params: TrainParams,
    checkpoint_folder: Path | None,
    live_folder: Path | None,
    extra_callbacks: tuple,
) -> TrainResult:
    plan, gpus, strategy, global_batch = place(params)
    model = compiled_model(data.train.x.shape[1:], model_params, params, plan, strategy)
    run_id = run_fingerprint(model_params, params, data, plan) if checkpoint_folder else ""
    state, best_weights = resume_state(model, strategy, checkpoint_folder, run_id)
    resumed_from = state.epochs_done
    if resumed_from:
        logger.info(
            "resuming from the checkpoint in %s after epoch %d of %d",
            checkpoint_folder,
            resumed_from,
            params.epochs,
        )
    progress = progress_callback(params, state, checkpoint_folder, best_weights)
    callbacks = make_callbacks(params, progress, live_folder, state.history, extra_callbacks)
    started = time.perf_counter()
    if state.epochs_done < params.epochs and not state.stopped_early:
        fit(model, data, params, global_batch, state.epochs_done, callbacks)
    else:
        # Killed after the last epoch's checkpoint but before the model was saved.
        progress.set_model(model)
        progress.restore_best()
        if live_folder is not None:
            callbacks[0].live.end()  # DVCLive's callback is first: close its run
    seconds = time.perf_counter() - started
    epochs_here = state.epochs_done - resumed_from
    speed = len(data.train.x) * epochs_here / seconds if epochs_here else 0.0
    logger.info("%d epoch(s) in %.1f s, %.0f images/s", epochs_here, seconds, speed)
    best = state.best_value if state.best_value is not None else float("nan")
    logger.info("best epoch %d of %d: %s %.4f", state.best_epoch, state.epochs_done,
                params.monitor, best)  # fmt: skip
    return TrainResult(
        model=float32_copy(model),
        history=state.history,
        best_epoch=state.best_epoch,
        plan=plan,
        gpus=gpus,
        global_batch_size=global_batch,
        resumed_from_epoch=resumed_from,
        stopped_early=state.stopped_early,
        seconds=seconds,
        images_per_second=speed,
    )


def train_summary(result: TrainResult, params: TrainParams) -> dict:
    """reports/train.json: the run's best epoch, resume, speed, devices and environment."""
    best = result.history[result.best_epoch - 1] if result.best_epoch else {}
    return {
        "best_epoch": result.best_epoch,
        "best_val_accuracy": best.get("val_accuracy"),
        "epochs_run": len(result.history),
        "epochs": params.epochs,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "global_batch_size": result.global_batch_size,
        # No wall-clock figures: they would change this DVC output's hash on every run. The
        # train() log line and benchmarks/ carry them.
        # Strings, so `dvc metrics show` keeps each in one readable column.
        "device": result.plan.describe(),
        "environment": environment_report(result.plan, result.gpus),
    }
