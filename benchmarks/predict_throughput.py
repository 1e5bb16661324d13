"""Prediction throughput and memory: onnxruntime vs model.predict vs a tf.function.

Side by side in one run, on the 10,000 MNIST test images, at batch 1, 64 and 1024; medians
of repeats (these machines vary up to 2× between runs, so only same-run ratios mean much).
Also: the CPU's bound for this model (FLOPs per image against a measured float32 matmul
rate), and the peak RSS of `mnistflow predict` on 10,000 vs 1,000,000 images (streaming).
Writes benchmarks/results/predict_throughput.{json,md}. Needs `dvc repro export` first.

    python benchmarks/predict_throughput.py [--repeats 3] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BATCHES = (1, 64, 1024)
# Batch 1 is slow for Keras; fewer images keep the run short without changing the rate.
IMAGES_AT_BATCH = {1: 1000, 64: 10000, 1024: 10000}


def flops_per_image(model) -> float:
    """Multiply-adds ×2 of the Conv2D and Dense layers."""
    total = 0
    for layer in model.layers:
        kind = layer.__class__.__name__
        if kind == "Conv2D":
            height, width, filters = layer.output.shape[1:]
            kernel = np.prod(layer.kernel.shape[:-1])
            total += 2 * height * width * filters * kernel
        elif kind == "Dense":
            total += 2 * np.prod(layer.kernel.shape)
    return float(total)


def matmul_flops_per_second(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """float32 matmul rate of numpy's BLAS and of onnxruntime's own MatMul (MLAS).

    The machine may pin OpenBLAS to older kernels (OPENBLAS_CORETYPE), while onnxruntime picks
    the widest vector unit, so the higher of the two is what the CPU allows this model.
    """
    import onnxruntime
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    engines = {"numpy": lambda: a @ b, "onnxruntime": lambda: session.run(None, {"a": a, "b": b})}
    return {name: best_rate(multiply, 2 * size**3, repeats) for name, multiply in engines.items()}


def best_rate(multiply, operations: float, repeats: int = 5) -> float:
    """Operations per second of the fastest of `repeats` calls, after one warm-up call."""
    multiply()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        multiply()
        times.append(time.perf_counter() - started)
    return operations / min(times)


def rate(run_batch, images: np.ndarray, batch: int) -> float:
    run_batch(images[:batch])  # warm-up: graph building, allocations
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        run_batch(images[start : start + batch])
    return len(images) / (time.perf_counter() - started)


def throughput(repeats: int) -> dict[str, dict[int, float]]:
    import keras
    import onnxruntime
    import tensorflow as tf

    model = keras.models.load_model(ROOT / "models" / "model.keras")
    with np.load(ROOT / "data" / "raw" / "mnist.npz") as raw:
        uint8_images = raw["x_test"]
    float_images = (uint8_images.astype(np.float32) / np.float32(255))[..., None]
    session = onnxruntime.InferenceSession(
        str(ROOT / "models" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    serve = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    runners = {
        "onnxruntime": (lambda x: session.run(None, {"image": x}), uint8_images),
        "model.predict": (None, float_images),
        "tf.function": (lambda x: serve(tf.constant(x)).numpy(), float_images),
    }
    figures: dict[str, dict[int, float]] = {name: {} for name in runners}
    for batch in BATCHES:
        count = IMAGES_AT_BATCH[batch]
        for name, (runner, images) in runners.items():
            if name == "model.predict":

                def runner(x, batch=batch):
                    return model.predict(x, batch_size=batch, verbose=0)

                samples = []
                for _ in range(repeats):
                    runner(images[:batch])
                    started = time.perf_counter()
                    runner(images[:count])
                    samples.append(count / (time.perf_counter() - started))
            else:
                samples = [rate(runner, images[:count], batch) for _ in range(repeats)]
            figures[name][batch] = statistics.median(samples)
            print(f"batch {batch:>4} {name:>13}: {figures[name][batch]:9.0f} images/s", flush=True)
    figures["flops_per_image"] = flops_per_image(model)
    return figures


def measured_predict(source: Path, output: Path, check: bool = False) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit code) of one fresh `mnistflow predict` process on
    `source`, measured by a parent that does nothing else (RUSAGE_CHILDREN)."""
    measure = (
        "import resource, subprocess, sys, time; started = time.perf_counter(); "
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "time.perf_counter() - started, code)"
    )
    command = [
        sys.executable, "-c", measure, sys.executable, "-m", "mnistflow", "predict",
        str(source), "-o", str(output), "--no-progress",
        "--model", str(ROOT / "models" / "model.onnx"), "--params", str(ROOT / "params.yaml"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    kilobytes, seconds, code = result.stdout.split()
    if check and int(code) != 0:
        raise RuntimeError(f"mnistflow predict {source} exited {code}")
    return int(kilobytes) / 1024, float(seconds), int(code)


def peak_rss_mb(images: int, scratch: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `mnistflow predict` on `images` images from an .npy file."""
    with np.load(ROOT / "data" / "raw" / "mnist.npz") as raw:
        test = raw["x_test"]
    source = scratch / f"images_{images}.npy"
    array = np.lib.format.open_memmap(source, mode="w+", dtype=np.uint8, shape=(images, 28, 28))
    for start in range(0, images, len(test)):
        stop = min(start + len(test), images)
        array[start:stop] = test[: stop - start]
    array.flush()
    del array
    rss, seconds, _ = measured_predict(source, scratch / f"out_{images}.csv", check=True)
    source.unlink()
    return rss, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-rss", action="store_true")
    arguments = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    figures = throughput(arguments.repeats)
    flops = figures.pop("flops_per_image")
    matmul_rates = matmul_flops_per_second()
    cpu_rate = max(matmul_rates.values())
    bound = cpu_rate / flops
    onnx, keras_predict, tf_function = (
        figures["onnxruntime"],
        figures["model.predict"],
        figures["tf.function"],
    )
    result = {
        "images_per_second": {
            name: {str(batch): round(value, 1) for batch, value in rates.items()}
            for name, rates in figures.items()
        },
        "flops_per_image": flops,
        "matmul_gflops": {name: round(value / 1e9, 1) for name, value in matmul_rates.items()},
        "cpu_bound_images_per_second": round(bound, 1),
        "onnx_over_predict_at_1024": round(onnx[1024] / keras_predict[1024], 2),
        "onnx_over_tf_function_at_1": round(onnx[1] / tf_function[1], 2),
        "onnx_over_predict_at_1": round(onnx[1] / keras_predict[1], 2),
        "onnx_share_of_cpu_bound_at_1024": round(onnx[1024] / bound, 3),
        "repeats": arguments.repeats,
        "cpus": os.cpu_count(),
    }
    lines = [
        "| batch | onnxruntime | model.predict | tf.function | onnx/predict | onnx/tf.function |",
        "|---|---|---|---|---|---|",
        *(
            f"| {b} | {onnx[b]:,.0f} | {keras_predict[b]:,.0f} | {tf_function[b]:,.0f} | "
            f"{onnx[b] / keras_predict[b]:.2f} | {onnx[b] / tf_function[b]:.2f} |"
            for b in BATCHES
        ),
        "",
        f"CPU bound: {flops / 1e6:.1f} MFLOP/image at {cpu_rate / 1e9:.0f} GFLOP/s (best float32 "
        f"2048² matmul: numpy {matmul_rates['numpy'] / 1e9:.0f}, onnxruntime "
        f"{matmul_rates['onnxruntime'] / 1e9:.0f}) = {bound:,.0f} images/s; onnxruntime at "
        f"batch 1024 reaches {onnx[1024] / bound:.0%} of it.",
        f"Images/second, medians of {arguments.repeats} repeats in one run, {os.cpu_count()} CPUs.",
    ]
    if not arguments.skip_rss:
        with tempfile.TemporaryDirectory() as scratch:
            small = peak_rss_mb(10_000, Path(scratch))
            large = peak_rss_mb(1_000_000, Path(scratch))
        result["rss_mb_10k"], result["rss_mb_1m"] = round(small[0], 1), round(large[0], 1)
        result["rss_ratio_1m_over_10k"] = round(large[0] / small[0], 3)
        result["seconds_1m"] = round(large[1], 1)
        lines.append(
            f"`mnistflow predict` peak RSS: {small[0]:.0f} MB for 10,000 images, {large[0]:.0f} MB "
            f"for 1,000,000 ({large[0] / small[0]:.2f}×, target ≤ 1.5×); 1,000,000 images took "
            f"{large[1]:.0f} s end to end."
        )
    write_results("predict_throughput", result, lines)


def write_results(name: str, figures: dict, lines: list[str]) -> None:
    """benchmarks/results/NAME.json (the figures) and NAME.md (the lines), and print the lines."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
