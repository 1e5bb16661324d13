"""Run the real train stage, but SIGKILL the process right after epoch N's checkpoint is saved.

Used by the resume test: `python tests/train_until_killed.py N <train stage arguments>`.
"""

import os
import signal
import sys

import stages.train as train_stage

kill_after_epoch = int(sys.argv[1])
make_progress_callback = train_stage.make_progress_callback


def make_killing_progress_callback(*args, **kwargs):
    callback = make_progress_callback(*args, **kwargs)
    on_epoch_end = callback.on_epoch_end

    def on_epoch_end_then_die(epoch, logs=None):
        on_epoch_end(epoch, logs)
        if epoch + 1 == kill_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    callback.on_epoch_end = on_epoch_end_then_die
    return callback


train_stage.make_progress_callback = make_killing_progress_callback
sys.argv = ["stages.train", *sys.argv[2:]]
train_stage.main()
