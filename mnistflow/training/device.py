"""Where and how training runs: device, distribution strategy, mixed precision, XLA.

`plan_devices` is a pure function of what was asked and what hardware is visible, so its
choices are tested on any machine; `detect_gpus` and `apply_plan` are the thin parts that
touch TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from mnistflow.errors import PipelineInputError
from mnistflow.params import DeviceRequest, MixedPrecision, Toggle

logger = logging.getLogger(__name__)

# Tensor cores, where float16 pays off, arrived with Volta (compute capability 7.0).
MIXED_PRECISION_MIN_CAPABILITY = (7, 0)
# On CPUs auto means float32, whatever the CPU has: bf16 on AMX measured 1.5x float32's
# images/s (benchmarks/results/precision.md), but AMX and AVX-512 BF16 round differently, so
# a dvc.lock made on one host would not reproduce on the other. bf16 is an explicit choice
# (train.mixed_precision: bf16), recorded in params and in reports/compute.json.
PRECISION_POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class DevicePlan:
    device: Literal["cpu", "gpu"]
    gpu_count: int
    strategy: Literal["default", "one_device", "mirrored"]
    precision_policy: Literal["float32", "mixed_float16", "mixed_bfloat16"]
    jit_compile: bool

    def describe(self) -> str:
        where = "CPU" if self.device == "cpu" else f"{self.gpu_count} GPU(s)"
        return (
            f"{where}, strategy={self.strategy}, precision={self.precision_policy}, "
            f"xla={'on' if self.jit_compile else 'off'}"
        )


def plan_devices(
    device: DeviceRequest,
    mixed_precision: MixedPrecision,
    xla: Toggle,
    gpus: list[GpuInfo],
) -> DevicePlan:
    if device == "gpu" and not gpus:
        raise PipelineInputError(
            "train.device: 'gpu' but TensorFlow sees no GPU; install the [gpu] extra and check "
            "the CUDA driver, or set train.device to auto or cpu"
        )
    on_gpu = device != "cpu" and bool(gpus)
    used_gpus = gpus if on_gpu else []
    policy = PRECISION_POLICIES[_precision(mixed_precision, used_gpus)]

    # XLA fuses kernels well on GPUs; on CPUs it mostly adds compile time.
    jit_compile = on_gpu if xla == "auto" else bool(xla)

    if not on_gpu:
        strategy = "default"
    elif len(used_gpus) == 1:
        strategy = "one_device"
    else:
        strategy = "mirrored"
    return DevicePlan(
        device="gpu" if on_gpu else "cpu",
        gpu_count=len(used_gpus),
        strategy=strategy,
        precision_policy=policy,
        jit_compile=jit_compile,
    )


def _precision(mixed_precision: MixedPrecision, used_gpus: list[GpuInfo]) -> str:
    """float32, bf16 or fp16 for the request on this hardware."""
    if mixed_precision is False:
        return "float32"
    if mixed_precision == "fp16" and not used_gpus:
        raise PipelineInputError(
            "train.mixed_precision: 'fp16' on a CPU, where float16 arithmetic is emulated and "
            "slower than float32; use bf16 (or auto) for CPUs, fp16 for GPUs"
        )
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    if mixed_precision is True:
        # float16 matmuls are emulated on CPUs; bfloat16 is the CPU's reduced precision.
        return "fp16" if used_gpus else "bf16"
    if used_gpus:
        capable = all(
            gpu.compute_capability is not None
            and gpu.compute_capability >= MIXED_PRECISION_MIN_CAPABILITY
            for gpu in used_gpus
        )
        return "fp16" if capable else "float32"
    return "float32"


def detect_gpus() -> list[GpuInfo]:
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(
            GpuInfo(
                name=details.get("device_name", gpu.name),
                compute_capability=details.get("compute_capability"),
            )
        )
    return found


def apply_plan(plan: DevicePlan):
    """Set the precision policy (hiding GPUs for a CPU plan); return the distribution strategy."""
    import keras
    import tensorflow as tf

    if plan.device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            logger.warning("GPUs were already initialised; cannot hide them for a CPU run")
    keras.mixed_precision.set_global_policy(plan.precision_policy)
    if plan.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if plan.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()
