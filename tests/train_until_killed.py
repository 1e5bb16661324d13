"""Run the real train stage, but SIGKILL the process right after epoch N's checkpoint is saved.

Used by the resume test: `python tests/train_until_killed.py N <train stage arguments>`.
"""

import os
import signal
import sys
from pathlib import Path

import stages.train as train_stage
from mnistflow.compute.cpu_kernels import apply_cpu_kernels
from mnistflow.compute.keras_loading import load_keras
from mnistflow.params import load_params

kill_after_epoch = int(sys.argv[1])
arguments = sys.argv[2:]
# As the stage does, before TensorFlow loads: the hook below imports Keras first, so the stage's
# own calls (apply_cpu_kernels refuses to run after TensorFlow is imported) are made here.
apply_cpu_kernels(load_params(Path(arguments[arguments.index("--params") + 1])))
load_keras()
train_stage.apply_cpu_kernels = lambda params: None

from mnistflow.training.callbacks import TrainingProgress  # noqa: E402 - after the settings

on_epoch_end = TrainingProgress.on_epoch_end


def on_epoch_end_then_die(self, epoch, logs=None):
    on_epoch_end(self, epoch, logs)
    if epoch + 1 == kill_after_epoch:
        os.kill(os.getpid(), signal.SIGKILL)


TrainingProgress.on_epoch_end = on_epoch_end_then_die
sys.argv = ["stages.train", *arguments]
train_stage.main()
