"""What a training run ran on: devices, TensorFlow/CUDA/cuDNN versions, and a fingerprint.

The fingerprint hashes the interpreter, the devices (GPU models; "CPU" for a CPU run) and every
installed distribution's version, so two runs whose metrics differ can be told apart by
environment. The host's CPU model and OS go to the log, not into this hashed report.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform

from mnistflow.cpu_features import cpu_model
from mnistflow.training.device import DevicePlan, GpuInfo


def installed_distributions() -> list[str]:
    return sorted(
        f"{dist.metadata['Name']}=={dist.version}".lower()
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    )


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
    digest = hashlib.sha256(
        json.dumps({"report": report, "packages": installed_distributions()}).encode()
    )
    report["fingerprint"] = digest.hexdigest()[:16]
    return report


def host_description() -> str:
    """The host a run trained on, for the log: CPU model and OS."""
    return f"{cpu_model()}, {platform.platform()}"
