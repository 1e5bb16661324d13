"""Ingest stage: obtain MNIST and write data/raw/mnist.npz in Keras' own layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistflow.data.ingest import ingest, trusted_pickles
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    arguments = parser.parse_args()
    # Which pickles may be loaded is decided by the committed params, not the working copy.
    trusted = trusted_pickles(arguments.params)
    ingest(load_params(arguments.params).data, arguments.output, trusted)


if __name__ == "__main__":
    run_stage(main)
