"""The device plan: which device, strategy, precision and XLA setting for what hardware."""

from __future__ import annotations

import pytest

from mnistflow.compute.cpu_features import detect_cpu_flags
from mnistflow.errors import PipelineInputError
from mnistflow.training.device import GpuInfo, detect_gpus, plan_devices

H100 = GpuInfo("NVIDIA H100", (9, 0))
T4 = GpuInfo("Tesla T4", (7, 5))
P100 = GpuInfo("Tesla P100", (6, 0))


def test_cpu_when_no_gpu():
    plan = plan_devices("auto", "auto", "auto", [])
    assert (plan.device, plan.strategy, plan.precision_policy, plan.jit_compile) == (
        "cpu",
        "default",
        "float32",
        False,
    )


def test_one_modern_gpu_gets_mixed_precision_and_xla():
    plan = plan_devices("auto", "auto", "auto", [H100])
    assert plan.device == "gpu" and plan.gpu_count == 1
    assert plan.strategy == "one_device"
    assert plan.precision_policy == "mixed_float16"
    assert plan.jit_compile is True


def test_several_gpus_are_mirrored():
    assert plan_devices("auto", "auto", "auto", [T4, T4]).strategy == "mirrored"


def test_old_gpu_keeps_float32():
    assert plan_devices("auto", "auto", "auto", [P100]).precision_policy == "float32"
    assert plan_devices("auto", "auto", "auto", [H100, P100]).precision_policy == "float32"


def test_explicit_cpu_ignores_gpus():
    plan = plan_devices("cpu", "auto", "auto", [H100])
    assert plan.device == "cpu" and plan.gpu_count == 0 and plan.strategy == "default"
    assert plan.precision_policy == "float32"


def test_explicit_toggles_win():
    plan = plan_devices("auto", False, False, [H100])
    assert plan.precision_policy == "float32" and plan.jit_compile is False
    cpu_plan = plan_devices("auto", True, True, [])
    assert cpu_plan.precision_policy == "mixed_bfloat16" and cpu_plan.jit_compile is True


def test_auto_is_float32_on_every_cpu_and_fp16_on_modern_gpus():
    """The host never picks a number format on a CPU: bf16 on AMX rounds differently from bf16
    on AVX-512 BF16, so a lock made on one would not reproduce on the other."""
    assert plan_devices("cpu", "auto", "auto", [H100]).precision_policy == "float32"
    assert plan_devices("auto", "auto", "auto", []).precision_policy == "float32"
    # A GPU run is planned by the GPU.
    assert plan_devices("auto", "auto", "auto", [H100]).precision_policy == "mixed_float16"
    assert plan_devices("auto", "auto", "auto", [P100]).precision_policy == "float32"


def test_named_precisions_and_false_win_over_the_hardware():
    assert plan_devices("auto", "bf16", "auto", []).precision_policy == "mixed_bfloat16"
    assert plan_devices("auto", "bf16", "auto", [H100]).precision_policy == "mixed_bfloat16"
    assert plan_devices("auto", "fp16", "auto", [T4]).precision_policy == "mixed_float16"
    assert plan_devices("auto", False, "auto", [H100]).precision_policy == "float32"


def test_fp16_on_a_cpu_is_a_clear_error():
    with pytest.raises(PipelineInputError, match=r"train.mixed_precision: 'fp16' on a CPU.*bf16"):
        plan_devices("cpu", "fp16", "auto", [H100])


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 avx512_vnni\n\n")
    assert detect_cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16", "avx512_vnni"}
    assert detect_cpu_flags(tmp_path / "absent") == frozenset()


def test_a_bf16_trained_model_is_saved_computing_in_float32():
    """The float32 copy of a bf16 batch-norm CNN (moving statistics included) computes exactly
    what the same architecture built in float32 computes with the same weights."""
    import keras
    import numpy as np

    from mnistflow.params import ModelParams
    from mnistflow.training.models import build_model, float32_copy

    params = ModelParams(name="cnn_bn")
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = build_model((28, 28, 1), 10, params)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(0)
    # Non-trivial weights and moving statistics, as training leaves them.
    trained.set_weights(
        [rng.normal(0.5, 0.2, w.shape).astype(w.dtype) for w in trained.get_weights()]
    )
    copy = float32_copy(trained)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    reference = build_model((28, 28, 1), 10, params)  # built in float32
    reference.set_weights(trained.get_weights())
    images = rng.random((8, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(
        copy.predict(images, verbose=0), reference.predict(images, verbose=0)
    )
    assert float32_copy(copy) is copy


def test_gpu_requested_but_absent_is_a_clear_error():
    with pytest.raises(PipelineInputError, match="train.device.*no GPU"):
        plan_devices("gpu", "auto", "auto", [])


def test_detection_on_this_machine_matches_tensorflow():
    import tensorflow as tf

    assert len(detect_gpus()) == len(tf.config.list_physical_devices("GPU"))


def test_mirrored_training_over_two_devices_scales_the_batch():
    """The multi-GPU path, run for real on two logical CPU devices (no GPU here)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import OFFLINE_WHEEL
    from tests.project_root import PROJECT_ROOT

    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "tests" / "train_mirrored_on_cpus.py"),
         str(OFFLINE_WHEEL)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["strategy"] == "mirrored" and outcome["replicas"] == 2
    assert outcome["global_batch_size"] == 64
    assert "batch size 32 per replica × 2 replicas = global batch 64" in result.stderr
    assert outcome["val_accuracy"] > 0.7
    assert outcome["resumed_from_epoch"] == 2 and outcome["restored_weights_equal"]
