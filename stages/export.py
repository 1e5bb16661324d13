"""Export stage: models/model.keras → models/model.onnx (float32) and models/model.int8.onnx
(static int8 quantization of it), each judged by its gates (mnistflow/release/candidates.py).

A pure function of its declared inputs, every one in dvc.yaml: the model, the normalization,
the raw data (test images judge both models, training images calibrate the int8 one), the
test metrics, the baseline, the compute fingerprint and the params. Nothing is read from git
or dvc.lock. What is served is the registry's decision, not a file this stage keeps in place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistflow.compute.cpu_kernels import apply_cpu_kernels
from mnistflow.compute.keras_loading import load_keras
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params
from mnistflow.release.candidates import ExportPaths, export_candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("params", "model", "normalization", "raw", "metrics", "validation", "baseline",
                 "output", "int8-output", "outcomes", "report"):  # fmt: skip
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the accepted reference: its profile travels in the model for predict's drift flags",
    )
    arguments = vars(parser.parse_args())
    params = load_params(arguments.pop("params"))
    # Before TensorFlow loads: which kernels run is a declared input
    # (mnistflow/compute/cpu_kernels.py).
    apply_cpu_kernels(params)
    load_keras()  # first, so that whatever imports Keras below gets it without extras
    export_candidates(ExportPaths(**arguments), params)


if __name__ == "__main__":
    run_stage(main)
