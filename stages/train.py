"""Train stage: fit the model from params on the prepared data, resumably, and save it."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistflow.compute.cpu_kernels import apply_cpu_kernels
from mnistflow.compute.keras_loading import load_keras
from mnistflow.core.atomic import atomic_file, write_json
from mnistflow.data.prepared import load_prepared
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params
from mnistflow.training.checkpoints import remove_checkpoint
from mnistflow.training.loop import train, train_summary
from mnistflow.training.saving import save_model_reproducibly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    arguments = parser.parse_args()
    params = load_params(arguments.params)
    # Before TensorFlow loads: which kernels run is a declared input
    # (mnistflow/compute/cpu_kernels.py).
    apply_cpu_kernels(params)
    load_keras()  # first, so that whatever imports Keras below gets it without extras
    result = train(
        load_prepared(arguments.data),
        params.model,
        params.train,
        checkpoint_folder=arguments.checkpoints,
        live_folder=arguments.live,
    )
    with atomic_file(arguments.model) as temporary:
        save_model_reproducibly(result.model, temporary)
    write_json(arguments.summary, train_summary(result, params.train))
    # Only a saved model makes the checkpoint redundant.
    remove_checkpoint(arguments.checkpoints)


if __name__ == "__main__":
    run_stage(main)
