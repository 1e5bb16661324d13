"""Validate stage: the data checks on the raw dataset; bad data stops the pipeline.

Reads data/raw/mnist.npz as it is (no dtype or shape coercion, so the checks see what is
really there) and the accepted reference (reference/: profile and label model), writes
reports/validation.json (every check with its observed value and bound, drift distances,
estimated label-error rates, near-duplicates, the bounds applied, and the md5 of the data it
read: prepare refuses a report for other data), and exits 1 with one line per failed check
when any fails, so `dvc repro` stops before prepare.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mnistflow.core.atomic import write_json
from mnistflow.core.hashing import md5_of_file
from mnistflow.data.sources import read_npz_arrays
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params
from mnistflow.reference.folder import load_reference
from mnistflow.validation.suite import failure_message, validate_dataset

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the accepted reference folder; without it, no drift or label checks and "
        "MNIST's built-in bounds for what params.yaml leaves null",
    )
    parser.add_argument("--report", type=Path, required=True)
    arguments = parser.parse_args()
    params = load_params(arguments.params).checks
    reference = load_reference(arguments.reference) if arguments.reference else None
    # As stored, unchecked: the expectations must see what is really there.
    arrays = read_npz_arrays(arguments.raw)
    data_md5 = md5_of_file(arguments.raw)
    report = validate_dataset(arrays, params, reference)
    write_json(
        arguments.report,
        {"data": {"path": arguments.raw.as_posix(), "md5": data_md5}, **report.as_json()},
    )
    if not report.success:
        print(f"error: {failure_message(report, arguments.raw, reference)}", file=sys.stderr)
        sys.exit(1)
    logger.info("all %d data checks passed", len(report.results))


if __name__ == "__main__":
    run_stage(main)
