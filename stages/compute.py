"""Compute stage: what will compute this project's numbers on this host, to reports/compute.json.

It runs on every `dvc repro` (always_changed in dvc.yaml) and takes a fraction of a second
(TensorFlow is imported only where an NVIDIA driver is present). The stages whose bytes depend
on the kernels list its output under their deps, so a host that would compute differently
re-runs them instead of leaving other bytes under an unchanged dvc.lock
(mnistflow/compute/fingerprint.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistflow.compute.fingerprint import platform_fingerprint
from mnistflow.core.atomic import write_json
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    arguments = parser.parse_args()
    fingerprint = platform_fingerprint(load_params(arguments.params))
    write_json(arguments.output, fingerprint)
    logger.info(
        "%s, %s, TensorFlow on %s with %d threads, onnxruntime on %s",
        fingerprint["device"],
        fingerprint["precision"],
        fingerprint["tensorflow_cpu_kernels"],
        fingerprint["tensorflow_threads"],
        fingerprint["onnxruntime_cpu_kernels"],
    )


if __name__ == "__main__":
    run_stage(main)
