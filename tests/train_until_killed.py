"""Run the real train stage, but SIGKILL the process right after epoch N's checkpoint is saved.

Used by the resume test: `python tests/train_until_killed.py N <train stage arguments>`.
"""

import os
import signal
import sys

import stages.train as train_stage
from mnistflow.training.callbacks import TrainingProgress

kill_after_epoch = int(sys.argv[1])
on_epoch_end = TrainingProgress.on_epoch_end


def on_epoch_end_then_die(self, epoch, logs=None):
    on_epoch_end(self, epoch, logs)
    if epoch + 1 == kill_after_epoch:
        os.kill(os.getpid(), signal.SIGKILL)


TrainingProgress.on_epoch_end = on_epoch_end_then_die
sys.argv = ["stages.train", *sys.argv[2:]]
train_stage.main()
