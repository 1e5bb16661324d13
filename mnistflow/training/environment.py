"""What a training run ran on: devices and the Python, TensorFlow, Keras, NumPy, CUDA and cuDNN
versions.

No hash of every installed distribution: that made this hashed output depend on whatever else a
venv holds (and on an .egg-info in the working directory, which `importlib.metadata` counts
twice), inputs no stage declares. What decides the bytes is declared in reports/compute.json
(mnistflow/compute/fingerprint.py). The host's CPU model and OS go to the log, not into this report.
"""

from __future__ import annotations

import platform

from mnistflow.compute.cpu_features import cpu_model
from mnistflow.training.device import DevicePlan, GpuInfo


def environment_report(plan: DevicePlan, gpus: list[GpuInfo]) -> dict[str, str]:
    import keras
    import numpy as np
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    if plan.device == "gpu":
        devices = "; ".join(
            f"{gpu.name} (compute capability "
            f"{'.'.join(map(str, gpu.compute_capability)) if gpu.compute_capability else '?'})"
            for gpu in gpus[: plan.gpu_count]
        )
    else:
        # Not the CPU's model name nor the kernel's version: hosts of one machine kind differ
        # in both while computing the same weights, and this report is a hashed DVC output
        # (a fresh run on another host would change dvc.lock). host_description() logs them.
        devices = "CPU"
    report = {
        "devices": devices,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        # The versions TensorFlow was built against; the CPU wheel reports them too.
        "cuda": str(build.get("cuda_version", "none")),
        "cudnn": str(build.get("cudnn_version", "none")),
    }
    return report


def host_description() -> str:
    """The host a run trained on, for the log: CPU model and OS."""
    return f"{cpu_model()}, {platform.platform()}"
