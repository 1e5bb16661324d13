"""Validate stage: Great Expectations checks on the raw dataset; bad data stops the pipeline.

Reads data/raw/mnist.npz as it is (no dtype or shape coercion, so the checks see what is
really there), writes reports/validation.json (every expectation with its observed value and
bound; the offline report shows them), and exits 1 with one line per
failed expectation when any fails, so `dvc repro` stops before prepare.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mnistflow.atomic import write_json
from mnistflow.data.checks import validate_dataset
from mnistflow.data.sources import read_npz_arrays
from mnistflow.entrypoints import run_stage
from mnistflow.params import load_params

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw/mnist.npz"))
    parser.add_argument("--report", type=Path, default=Path("reports/validation.json"))
    arguments = parser.parse_args()
    params = load_params(arguments.params).checks
    # As stored, unchecked: the expectations must see what is really there.
    arrays = read_npz_arrays(arguments.raw)
    report = validate_dataset(arrays, params)
    write_json(arguments.report, report.as_json())
    if not report.success:
        lines = "\n".join(f"  - {failure.line()}" for failure in report.failures)
        print(
            f"error: {arguments.raw} failed {len(report.failures)} of {len(report.results)} "
            f"data expectations:\n{lines}",
            file=sys.stderr,
        )
        sys.exit(1)
    logger.info("all %d data expectations passed", len(report.results))


if __name__ == "__main__":
    run_stage(main)
