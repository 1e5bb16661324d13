"""Prepare stage: normalize, shape for the model, one-hot labels, split off validation.

Writes the prepared splits and, beside them, the normalization they were made with (export
builds the serving graph's preprocessing from that same file).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistflow.data.prepared import prepare, save_prepared
from mnistflow.data.sources import load_npz
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params
from mnistflow.training.input_shapes import input_shape_for
from mnistflow.validation.gate import require_passed_validation

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--normalization", type=Path, required=True)
    arguments = parser.parse_args()
    params = load_params(arguments.params)
    require_passed_validation(arguments.validation, arguments.raw)
    input_shape = input_shape_for(params.model.name)
    raw = load_npz(arguments.raw).as_npz_dict()
    data, normalization = prepare(raw, params.prepare, input_shape)
    save_prepared(data, arguments.output)
    normalization.save(arguments.normalization)
    logger.info(
        "prepared images shaped %s (%s normalization): %d train, %d validation, %d test -> %s",
        input_shape,
        normalization.kind,
        len(data.train.x),
        len(data.validation.x),
        len(data.test.x),
        arguments.output,
    )


if __name__ == "__main__":
    run_stage(main)
