"""The default training recipe against the one before it, side by side, on the full data.

Both train the same tutorial CNN (architecture unchanged) in float32 on the prepared MNIST the
pipeline trains on (data/prepared: 54,000 training, 6,000 validation and 10,000 test images),
with the train stage's own code (`mnistflow.training.loop.train`: tf.data input, checkpoints,
DVCLive), under params.yaml's compute section (oneDNN ISA cap, threads). Each run is a fresh
process; the recipes alternate, the order rotating between rounds, so drift on this shared
machine hits both alike. For each: training seconds (train() wall time, validation after each
epoch included), training images per second, the share of the float32 peak that is (72 MFLOP
per training image: forward and backward of the CNN; the peak is the best 2048² float32
matmul of TensorFlow and onnxruntime, measured in the same run), test accuracy, and whether
repeats gave the same weights byte for byte.

- previous: the default before issue 27 (preset `cnn-adam-batch32`: Adam 0.001 constant, batch
  32, 12 epochs).
- default: params.yaml's train section as committed.

    python benchmarks/training_recipe.py [--repeats 2]

Needs data/prepared (make run). Writes benchmarks/results/training_recipe.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
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
RECIPES = {"previous": "cnn-adam-batch32", "default": None}
# Forward and backward (about 3x forward) of the tutorial CNN per training image: its convs and
# dense layers make 12.0 M multiply-adds forward (benchmarks/precision.py counts them).
TRAINING_FLOPS_PER_IMAGE = 72e6
TARGET_ACCURACY = 0.9925
TARGET_TIME_SHARE = 0.40


def recipe_params(preset: str | None) -> dict:
    """params.yaml, with the preset's overrides where one is named."""
    sys.path.insert(0, str(ROOT))
    from mnistflow.params import read_params_file
    from mnistflow.paths import PRESETS
    from mnistflow.training.presets import preset_overrides

    params = read_params_file(ROOT / "params.yaml")
    if preset is None:
        return params
    result = copy.deepcopy(params)
    for dotted, value in preset_overrides(ROOT / PRESETS, preset).items():
        *sections, key = dotted.split(".")
        target = result
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return result


def child(recipe: str) -> None:
    """Train one recipe in this (fresh) process; print one JSON line."""
    import tempfile

    from mnistflow.compute.cpu_kernels import apply_cpu_kernels
    from mnistflow.params import parse_params

    params = parse_params(recipe_params(RECIPES[recipe]), "params.yaml")
    apply_cpu_kernels(params)
    from mnistflow.data.prepared import load_prepared
    from mnistflow.training.loop import train

    data = load_prepared(ROOT / "data" / "prepared")
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        result = train(
            data,
            params.model,
            params.train,
            checkpoint_folder=Path(scratch) / "checkpoint",
            live_folder=Path(scratch) / "live",
        )
        seconds = time.perf_counter() - started
    probabilities = result.model.predict(data.test.x, batch_size=1024, verbose=0)
    accuracy = float((probabilities.argmax(1) == data.test.y.argmax(1)).mean())
    weights = hashlib.sha256()
    for array in result.model.get_weights():
        weights.update(array.tobytes())
    train_params = params.train
    print(json.dumps({
        "recipe": recipe,
        "seconds": seconds,
        "images_per_second": len(data.train.x) * train_params.epochs / seconds,
        "test_accuracy": accuracy,
        "weights_sha256": weights.hexdigest(),
        "settings": {
            "optimizer": train_params.optimizer, "learning_rate": train_params.learning_rate,
            "schedule": train_params.lr_schedule.name, "batch_size": train_params.batch_size,
            "epochs": train_params.epochs, "augmentation": train_params.augmentation.enabled,
        },
    }))  # fmt: skip


def float32_peak() -> float:
    """FLOP/s of the best 2048² float32 matmul (benchmarks/precision.py's measurement), in a
    fresh process under params.yaml's compute settings."""
    probe = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/benchmarks']\n"
        "from mnistflow.params import load_params\n"
        "from mnistflow.compute.cpu_kernels import apply_cpu_kernels\n"
        "apply_cpu_kernels(load_params(sys.argv[1] + '/params.yaml'))\n"
        "from precision import peaks\n"
        "found = peaks()\n"
        "print(max(found['float32_tensorflow'], found['float32_onnxruntime']))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT)], capture_output=True, text=True, check=True
    )
    return float(output.stdout.strip().splitlines()[-1])


def run_child(recipe: str) -> dict:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, __file__, "--child", recipe],
        capture_output=True, text=True, env=environment, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"{recipe:>9}: {found['seconds']:6.1f} s, {found['images_per_second']:6.0f} images/s, "
        f"test accuracy {found['test_accuracy']:.4f}",
        flush=True,
    )
    return found


def summarise(runs: list[dict], peak: float) -> dict:
    fastest = min(runs, key=lambda run: run["seconds"])
    return {
        "settings": runs[0]["settings"],
        "seconds_fastest": round(fastest["seconds"], 1),
        "seconds_median": round(statistics.median(run["seconds"] for run in runs), 1),
        "images_per_second": round(fastest["images_per_second"], 1),
        "peak_share": round(fastest["images_per_second"] * TRAINING_FLOPS_PER_IMAGE / peak, 3),
        "test_accuracy": sorted({run["test_accuracy"] for run in runs}),
        "same_weights_every_repeat": len({run["weights_sha256"] for run in runs}) == 1,
        "runs": runs,
    }


def markdown(summary: dict, peak: float, repeats: int) -> str:
    previous, default = summary["previous"], summary["default"]
    time_share = default["seconds_fastest"] / previous["seconds_fastest"]
    lines = [
        "| recipe | settings | training s (fastest / median) | images/s | share of float32 "
        "peak | test accuracy | same weights each repeat |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("previous", "default"):
        entry = summary[name]
        s = entry["settings"]
        settings = (
            f"{s['optimizer']} {s['learning_rate']:g} {s['schedule']}, batch {s['batch_size']}, "
            f"{s['epochs']} epochs{', augmented' if s['augmentation'] else ''}"
        )
        accuracy = " / ".join(f"{value:.4f}" for value in entry["test_accuracy"])
        lines.append(
            f"| {name} | {settings} | {entry['seconds_fastest']} / {entry['seconds_median']} | "
            f"{entry['images_per_second']:.0f} | {entry['peak_share']:.0%} | {accuracy} | "
            f"{'yes' if entry['same_weights_every_repeat'] else 'NO'} |"
        )
    lowest = min(default["test_accuracy"])
    lines += [
        "",
        f"Default against previous: {time_share:.0%} of its training time (target <= "
        f"{TARGET_TIME_SHARE:.0%}); test accuracy {lowest:.4f} (target >= {TARGET_ACCURACY}).",
        "",
        f"float32 peak (best 2048² matmul): {peak / 1e9:.0f} GFLOP/s; "
        f"{TRAINING_FLOPS_PER_IMAGE / 1e6:.0f} MFLOP per training image. {repeats} runs of "
        f"each recipe, alternating in fresh processes; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {cpu_model()}.",
    ]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    sys.path.insert(0, str(ROOT))
    from mnistflow.compute.cpu_features import cpu_model as model

    return model()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=sorted(RECIPES))
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child)
        return
    if not (ROOT / "data" / "prepared" / "train.npz").is_file():
        raise SystemExit("data/prepared is missing: run `make run` first")
    peak = float32_peak()
    print(f"float32 peak: {peak / 1e9:.0f} GFLOP/s", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in RECIPES}
    order = list(RECIPES)
    for round_number in range(arguments.repeats):
        for name in order[round_number % 2 :] + order[: round_number % 2]:
            runs[name].append(run_child(name))
    summary = {name: summarise(found, peak) for name, found in runs.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training_recipe.json").write_text(
        json.dumps({"float32_peak": peak, **summary}, indent=2) + "\n"
    )
    text = markdown(summary, peak, arguments.repeats)
    (RESULTS / "training_recipe.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
