"""Precision on this CPU, side by side in one run: float32 vs bf16 training, and Keras vs
onnxruntime float32 vs onnxruntime int8 serving, each against the CPU's measured peak.

1. Peaks: the best 2048² matmul rate per number format, measured here: float32 (TensorFlow's
   oneDNN and onnxruntime's MLAS, the higher), bf16 (TensorFlow's bf16 matmul, on AVX-512 BF16
   or AMX where the CPU has them) and int8 (onnxruntime's MatMulInteger, u8×s8 on VNNI/AMX).
2. Training: the train stage's own `train()` (tf.data, metrics, the device plan) on the tutorial
   CNN, float32 vs bf16 (train.mixed_precision false vs bf16), each run a fresh process, order
   rotated; images/s of the epochs after the first (tracing excluded), the median of the runs,
   and the fraction of the peak of its format that it reaches (forward + backward ≈ 3× the
   forward FLOPs). Each run's test accuracy is on the 10,000 test images.
3. Serving: model.predict on models/model.keras, onnxruntime on models/model.onnx and on
   models/model.int8.onnx at batch 1, 64 and 1024 (medians of repeats), the fraction of each
   one's bound (forward FLOPs against the peak of its format), and each one's test accuracy.

Writes benchmarks/results/precision.{json,md}. Needs `dvc repro export` first.

    python benchmarks/precision.py [--runs 3] [--train-images 12000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The throughput benchmark's FLOP count and results writer: a sibling script (Python puts this
# folder on sys.path).
from predict_throughput import best_rate, flops_per_image, write_results

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "data" / "raw" / "mnist.npz"
BATCHES = (1, 64, 1024)
IMAGES_AT_BATCH = {1: 1000, 64: 10000, 1024: 10000}
TRAIN_VARIANTS = {"float32": False, "bf16": "bf16"}
# One training step costs about three forward passes (forward, and twice that backward).
TRAINING_FLOPS_PER_FORWARD = 3

# Child-process code that times each epoch's training steps into `ended` (the validation pass
# after them is not training throughput); the training benchmarks' children share it.
EPOCH_CLOCK = """
ended = []

class EpochClock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        ended.append(self.last - self.started)
"""

# The child process: trains with the stage's own code and prints one JSON line.
TRAIN_CHILD = (
    """
import json, sys, time
import numpy as np
import keras
from mnistflow.data.prepared import prepare
from mnistflow.data.sources import load_npz
from mnistflow.params import ModelParams, PrepareParams, TrainParams
from mnistflow.training.loop import train
from mnistflow.training.input_shapes import input_shape_for

raw_path, images, epochs, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
raw = load_npz(raw_path)
data, _ = prepare(raw.as_npz_dict(), PrepareParams(max_train_images=images), input_shape_for("cnn"))
"""
    + EPOCH_CLOCK
    + """
mixed = {"False": False, "bf16": "bf16"}[precision]
params = TrainParams(epochs=epochs, device="cpu", mixed_precision=mixed)
result = train(data, ModelParams(), params, extra_callbacks=(EpochClock(),))
probabilities = result.model.predict(data.test.x, batch_size=1024, verbose=0)
accuracy = float((probabilities.argmax(1) == data.test.y.argmax(1)).mean())
rates = [len(data.train.x) / seconds for seconds in ended[1:]]
print(json.dumps({"images_per_second": float(np.median(rates)), "test_accuracy": accuracy,
                  "policy": result.plan.precision_policy}))
"""
)


def peaks(size: int = 2048) -> dict[str, float]:
    """Operations per second of the best 2048² matmul in each number format."""
    import onnxruntime
    import tensorflow as tf
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    operations = 2 * size**3

    def session(node, a_type, b_type, out_type):
        graph = helper.make_graph(
            [node],
            "matmul",
            [
                helper.make_tensor_value_info("a", a_type, [size, size]),
                helper.make_tensor_value_info("b", b_type, [size, size]),
            ],
            [helper.make_tensor_value_info("c", out_type, [size, size])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )

    fp32 = session(
        helper.make_node("MatMul", ["a", "b"], ["c"]),
        TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT,
    )  # fmt: skip
    int8 = session(
        helper.make_node("MatMulInteger", ["a", "b"], ["c"]),
        TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32,
    )  # fmt: skip
    a_u8 = rng.integers(0, 255, (size, size), dtype=np.uint8)
    b_s8 = rng.integers(-127, 127, (size, size), dtype=np.int8)
    tf_a, tf_b = tf.constant(a), tf.constant(b)
    bf_a, bf_b = tf.cast(tf_a, tf.bfloat16), tf.cast(tf_b, tf.bfloat16)
    return {
        "float32_onnxruntime": best_rate(lambda: fp32.run(None, {"a": a, "b": b}), operations),
        "float32_tensorflow": best_rate(lambda: tf.linalg.matmul(tf_a, tf_b).numpy(), operations),
        "bf16_tensorflow": best_rate(lambda: tf.linalg.matmul(bf_a, bf_b).numpy(), operations),
        "int8_onnxruntime": best_rate(lambda: int8.run(None, {"a": a_u8, "b": b_s8}), operations),
    }


def training_runs(runs: int, images: int, epochs: int) -> dict[str, list[dict]]:
    """Fresh processes, order rotated, so drift of a shared VM hits both alike."""
    order = list(TRAIN_VARIANTS)
    results: dict[str, list[dict]] = {name: [] for name in order}
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for run in range(runs):
        for name in order[run % 2 :] + order[: run % 2]:
            output = subprocess.run(
                [sys.executable, "-c", TRAIN_CHILD, str(RAW), str(images), str(epochs),
                 str(TRAIN_VARIANTS[name])],
                cwd=ROOT, env=environment, capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures = json.loads(output.stdout.strip().splitlines()[-1])
            results[name].append(figures)
            print(f"train {name:>7} run {run + 1}: {figures['images_per_second']:7.0f} images/s, "
                  f"test accuracy {figures['test_accuracy']:.4f}", flush=True)  # fmt: skip
    return results


def serving(repeats: int) -> tuple[dict, dict, float]:
    """(images/s per variant and batch, test accuracy per variant, forward FLOPs per image)."""
    import keras
    import onnxruntime

    with np.load(RAW) as raw:
        images, labels = raw["x_test"], raw["y_test"]
    model = keras.models.load_model(ROOT / "models" / "model.keras")
    floats = (images.astype(np.float32) / np.float32(255))[..., None]

    def session(name: str):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(
            str(ROOT / "models" / name), sess_options=options, providers=["CPUExecutionProvider"]
        )

    sessions = {
        "onnxruntime fp32": session("model.onnx"),
        "onnxruntime int8": session("model.int8.onnx"),
    }
    runners = {
        "keras.predict": (lambda x, batch: model.predict(x, batch_size=batch, verbose=0), floats),
        **{
            name: (lambda x, batch, s=s: s.run(None, {"image": x})[0], images)
            for name, s in sessions.items()
        },
    }
    rates: dict[str, dict[int, float]] = {name: {} for name in runners}
    for batch in BATCHES:
        count = IMAGES_AT_BATCH[batch]
        for name, (runner, inputs) in runners.items():
            samples = []
            for _ in range(repeats):
                runner(inputs[:batch], batch)
                started = time.perf_counter()
                if name == "keras.predict":
                    runner(inputs[:count], batch)
                else:
                    for start in range(0, count, batch):
                        runner(inputs[start : start + batch], batch)
                samples.append(count / (time.perf_counter() - started))
            rates[name][batch] = statistics.median(samples)
            print(f"serve batch {batch:>4} {name:>16}: {rates[name][batch]:9.0f} images/s",
                  flush=True)  # fmt: skip
    accuracy = {
        name: float((runner(inputs, 1024).argmax(1) == labels).mean())
        for name, (runner, inputs) in runners.items()
    }
    return rates, accuracy, flops_per_image(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    peak = peaks()
    for name, value in peak.items():
        print(f"peak {name}: {value / 1e9:.0f} GOP/s", flush=True)
    fp32_peak = max(peak["float32_onnxruntime"], peak["float32_tensorflow"])
    format_peak = {"float32": fp32_peak, "bf16": peak["bf16_tensorflow"]}
    trained = training_runs(arguments.runs, arguments.train_images, arguments.epochs)
    rates, accuracy, flops = serving(arguments.repeats)
    training_flops = TRAINING_FLOPS_PER_FORWARD * flops

    train_rows, train_json = [], {}
    for name, runs in trained.items():
        median = statistics.median(run["images_per_second"] for run in runs)
        share = median * training_flops / format_peak[name]
        accuracies = [run["test_accuracy"] for run in runs]
        train_json[name] = {
            "runs_images_per_second": [round(run["images_per_second"], 1) for run in runs],
            "median_images_per_second": round(median, 1),
            "share_of_peak": round(share, 3),
            "test_accuracy": accuracies,
        }
        train_rows.append((name, median, share, accuracies))
    speedup = (
        train_json["bf16"]["median_images_per_second"]
        / train_json["float32"]["median_images_per_second"]
    )
    bound_peak = {"keras.predict": fp32_peak, "onnxruntime fp32": fp32_peak,
                  "onnxruntime int8": peak["int8_onnxruntime"]}  # fmt: skip
    int8_over_fp32 = rates["onnxruntime int8"][1024] / rates["onnxruntime fp32"][1024]
    result = {
        "peak_gops": {name: round(value / 1e9, 1) for name, value in peak.items()},
        "forward_mflop_per_image": round(flops / 1e6, 2),
        "training": train_json,
        "bf16_over_float32_training_median": round(speedup, 3),
        "serving_images_per_second": {
            name: {str(batch): round(value, 1) for batch, value in by_batch.items()}
            for name, by_batch in rates.items()
        },
        "serving_share_of_bound": {
            name: {
                str(batch): round(value * flops / bound_peak[name], 3)
                for batch, value in by_batch.items()
            }
            for name, by_batch in rates.items()
        },
        "serving_test_accuracy": accuracy,
        "int8_over_fp32_at_1024": round(int8_over_fp32, 3),
        "runs": arguments.runs,
        "train_images": arguments.train_images,
        "epochs": arguments.epochs,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    lines = [
        f"## Training (tutorial CNN, the train stage's code, {arguments.train_images} images, "
        f"batch 32, epochs 2..{arguments.epochs} timed, {arguments.runs} fresh processes each, "
        "order rotated)",
        "",
        "| precision | images/s (median) | runs | share of its peak | test accuracy (runs) |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {median:,.0f} | "
            f"{', '.join(f'{r:,.0f}' for r in train_json[name]['runs_images_per_second'])} | "
            f"{share:.1%} | {', '.join(f'{a:.4f}' for a in accuracies)} |"
            for name, median, share, accuracies in train_rows
        ),
        "",
        f"bf16 / float32 (medians): **{speedup:.2f}×**. Training costs about "
        f"{training_flops / 1e6:.0f} MFLOP per image; peaks measured here: float32 "
        f"{fp32_peak / 1e9:.0f} GFLOP/s, bf16 {peak['bf16_tensorflow'] / 1e9:.0f} GFLOP/s.",
        "",
        f"## Serving (models/model.keras, model.onnx, model.int8.onnx; medians of "
        f"{arguments.repeats} repeats)",
        "",
        "| variant | batch 1 | batch 64 | batch 1024 | share of bound at 1024 | test accuracy |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {by_batch[1]:,.0f} | {by_batch[64]:,.0f} | {by_batch[1024]:,.0f} | "
            f"{by_batch[1024] * flops / bound_peak[name]:.1%} | {accuracy[name]:.4f} |"
            for name, by_batch in rates.items()
        ),
        "",
        f"int8 / fp32 onnxruntime at batch 1024: **{int8_over_fp32:.2f}×** (at 64: "
        f"{rates['onnxruntime int8'][64] / rates['onnxruntime fp32'][64]:.2f}×, at 1: "
        f"{rates['onnxruntime int8'][1] / rates['onnxruntime fp32'][1]:.2f}×). Bounds: "
        f"{flops / 1e6:.1f} MFLOP per image against the float32 peak "
        f"({fp32_peak / flops:,.0f} images/s) and the int8 peak "
        f"{peak['int8_onnxruntime'] / 1e9:.0f} GOP/s ({peak['int8_onnxruntime'] / flops:,.0f} "
        "images/s).",
        f"Images/second, {os.cpu_count()} CPUs.",
    ]
    write_results("precision", result, lines)


if __name__ == "__main__":
    main()
