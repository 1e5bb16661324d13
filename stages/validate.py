"""Validate stage: Great Expectations checks on the raw dataset; bad data stops the pipeline.

Reads data/raw/mnist.npz as it is (no dtype or shape coercion, so the checks see what is
really there), writes reports/validation.json and Data Docs, and exits 1 with one line per
failed expectation when any fails, so `dvc repro` stops before prepare.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from stages.atomic import atomic_directory, write_json
from stages.data_checks import (
    ValidateParams,
    ValidationReport,
    dataset_expectations,
    dataset_tables,
    run_checks,
)
from stages.errors import run_stage
from stages.mnist_sources import read_npz_arrays
from stages.params import load_section

logger = logging.getLogger(__name__)


def validate_dataset(
    arrays: dict[str, np.ndarray], params: ValidateParams, data_docs_dir: Path | None = None
) -> ValidationReport:
    return run_checks(dataset_tables(arrays), dataset_expectations(params), data_docs_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw/mnist.npz"))
    parser.add_argument("--report", type=Path, default=Path("reports/validation.json"))
    parser.add_argument("--data-docs", type=Path, default=Path("reports/data_docs"))
    arguments = parser.parse_args()
    params = load_section(ValidateParams, "validate", arguments.params)
    # As stored, unchecked: the expectations must see what is really there.
    arrays = read_npz_arrays(arguments.raw)
    with atomic_directory(arguments.data_docs) as docs:
        report = validate_dataset(arrays, params, docs)
    write_json(arguments.report, report.as_json())
    logger.info("Data Docs: %s", (arguments.data_docs / "index.html").resolve())
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
