"""What computes the numbers: the declared kernel settings, applied to a stage's process, and
the fingerprint of what will actually run on this host.

Two hosts given the same inputs produce the same bytes only if they run the same arithmetic.
What decides that here is not in the data or the code: the device (CPU or GPU), the number
format (float32, bf16, fp16), XLA, which oneDNN kernels TensorFlow dispatches to (an AVX2
convolution rounds differently from an AVX-512 one; oneDNN off means Eigen's kernels, other
bytes again), which kernels onnxruntime's MLAS picks (by the same CPU features), how many
threads split a reduction, and the library releases (and Python's). So:

- The choices a project makes are params (`compute.cpu_isa`, `compute.threads`, `train.device`,
  `train.mixed_precision`, `train.xla`), recorded in dvc.lock like any other.
- The intra-op thread count is a param too (`compute.threads`): measured here, it decides the
  bytes, not the number of cores the host has.
- `platform_fingerprint` resolves them against this host into a small JSON document, which
  the `compute` stage writes on every `dvc repro` (always_changed) to reports/compute.json.
  The stages whose bytes it can change list that file under their deps: on a host that would
  compute differently, the file differs, DVC re-runs them, and dvc.lock says why, instead of
  other bytes appearing under an unchanged lock. Hosts that compute alike write identical
  files (AMD Zen 4 and Intel with AMX alike resolve `avx512_core`), so nothing re-runs there.
- `mnistflow.compute.cpu_kernels.apply_cpu_kernels` sets the cap in a stage's process before
  TensorFlow loads.

Where the host limits what the params ask (a CPU without AVX-512, an environment that sets
ONEDNN_MAX_CPU_ISA lower, TF_ENABLE_ONEDNN_OPTS=0), the fingerprint says what will really run.

Detecting a GPU without importing TensorFlow (which costs seconds on every no-op run): no
NVIDIA driver in /proc means TensorFlow cannot see one; where the driver is present,
TensorFlow is asked.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mnistflow.compute.cpu_features import detect_cpu_flags
from mnistflow.compute.cpu_kernels import (
    effective_onednn_isa,
    onednn_enabled,
    onnxruntime_float_kernels,
)
from mnistflow.params import Params

# The releases whose arithmetic or serialisation reaches a hashed output (pyproject pins them).
BYTE_DETERMINING_LIBRARIES = (
    "tensorflow", "keras", "numpy", "onnx", "onnxruntime", "tf2onnx", "scipy", "cleanlab",
    "scikit-learn", "pillow", "h5py",
)  # fmt: skip
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def nvidia_driver_present(driver: Path = NVIDIA_GPUS) -> bool:
    try:
        return any(driver.iterdir())
    except OSError:
        return False


def library_versions(names: tuple[str, ...] = BYTE_DETERMINING_LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def training_plan_description(params: Params) -> dict[str, Any]:
    """Device, number format and XLA as the train stage will resolve them here, and every GPU
    TensorFlow sees (evaluate and export predict on one even when training is asked to run on
    the CPU), with the CUDA and cuDNN releases it was built with."""
    from mnistflow.training.device import detect_gpus, plan_devices

    gpus = detect_gpus() if nvidia_driver_present() else []
    plan = plan_devices(params.train.device, params.train.mixed_precision, params.train.xla, gpus)
    described: dict[str, Any] = {
        "device": plan.device,
        "gpus": sorted(gpu.name for gpu in gpus),
        "precision": plan.precision_policy,
        "xla": plan.jit_compile,
    }
    if gpus:
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        described["cuda"] = str(build.get("cuda_version"))
        described["cudnn"] = str(build.get("cudnn_version"))
    return described


def platform_fingerprint(
    params: Params,
    cpu_flags: frozenset[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What will compute this project's numbers on this host: identical on hosts that compute
    alike, different wherever the arithmetic would differ."""
    flags = detect_cpu_flags() if cpu_flags is None else cpu_flags
    env = os.environ if environment is None else environment
    onednn = onednn_enabled(env)
    return {
        **training_plan_description(params),
        "tensorflow_cpu_kernels": (
            f"oneDNN {effective_onednn_isa(params.compute.cpu_isa, flags, env)}"
            if onednn
            else "Eigen (TF_ENABLE_ONEDNN_OPTS=0)"
        ),
        "tensorflow_threads": params.compute.threads,
        "onnxruntime_cpu_kernels": onnxruntime_float_kernels(flags),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
