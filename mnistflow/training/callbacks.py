"""Keras callbacks of a training run: progress (best epoch, early stopping, checkpoints) and
DVCLive's per-epoch metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np

from mnistflow.training.checkpoints import (
    Checkpoint,
    TrainingState,
    model_and_optimizer_variables,
    save_checkpoint,
)

logger = logging.getLogger(__name__)


class TrainingProgress(keras.callbacks.Callback):
    """Keeps the history, the best epoch and the early-stopping count in `state`, and
    checkpoints them with every variable after each epoch (when given a folder)."""

    def __init__(
        self,
        state: TrainingState,
        checkpoint_folder: Path | None,
        monitor: str,
        min_delta: float,
        patience: int | None,
        restore_best_weights: bool,
        best_weights: list[np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.state = state
        self.checkpoint_folder = checkpoint_folder
        self.monitor = monitor
        self.min_delta = min_delta
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.best_weights = best_weights
        self.higher_is_better = "loss" not in monitor

    def _improved(self, value: float) -> bool:
        if self.state.best_value is None:
            return True
        if self.higher_is_better:
            return value > self.state.best_value + self.min_delta
        return value < self.state.best_value - self.min_delta

    def _record(self, epoch: int, logs: dict) -> None:
        row = {"epoch": epoch + 1, **{key: float(value) for key, value in logs.items()}}
        self.state.history.append(row)
        self.state.epochs_done = epoch + 1
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(
                f"train.monitor: {self.monitor!r} is not among the logged metrics {sorted(logs)}"
            )
        if self._improved(float(value)):
            self.state.best_value = float(value)
            self.state.best_epoch = epoch + 1
            self.state.epochs_without_improvement = 0
            self.best_weights = self.model.get_weights()
        else:
            self.state.epochs_without_improvement += 1

    def _stop_if_stalled(self, epoch: int) -> None:
        if self.patience is None or self.state.epochs_without_improvement < self.patience:
            return
        logger.info(
            "early stopping after epoch %d: %s has not improved for %d epochs",
            epoch + 1,
            self.monitor,
            self.patience,
        )
        self.state.stopped_early = True
        self.model.stop_training = True

    def _checkpoint(self) -> None:
        variables = [np.asarray(variable) for variable in model_and_optimizer_variables(self.model)]
        save_checkpoint(
            self.checkpoint_folder,
            Checkpoint(state=self.state, variables=variables, best_weights=self.best_weights),
        )

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch, logs or {})
        self._stop_if_stalled(epoch)
        if self.checkpoint_folder is not None:
            self._checkpoint()

    def on_train_end(self, logs=None):
        self.restore_best()

    def restore_best(self) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def live_callback(live_folder: Path, earlier_epochs: list[dict[str, float]]):
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
