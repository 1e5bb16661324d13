"""Validate-stage speed on the full MNIST (70,000 images): wall time and where it goes.

Runs the real stage (`python -m stages.validate`) on data/raw/mnist.npz a few times in fresh
processes, then times its parts in one process. Writes benchmarks/results/validate_speed.{json,md}.
Target: the whole stage within 15 s on the 2-core development machine.

    python benchmarks/validate_speed.py [--repeats 3]   (needs `dvc repro ingest` first)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RAW = ROOT / "data" / "raw" / "mnist.npz"


def stage_seconds(scratch: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "stages.validate",
        "--raw",
        str(RAW),
        "--report",
        str(scratch / "validation.json"),
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def parts() -> dict[str, float]:
    timings: dict[str, float] = {}

    def timed(name, function):
        started = time.perf_counter()
        value = function()
        timings[name] = round(time.perf_counter() - started, 3)
        return value

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    timed("import great_expectations", lambda: __import__("great_expectations"))
    from mnistflow.data.checks import dataset_expectations, dataset_tables, run_checks
    from mnistflow.data.sources import read_npz_arrays
    from mnistflow.params import ValidateParams

    arrays = timed("read mnist.npz", lambda: read_npz_arrays(RAW))
    tables = timed("per-image summary (numpy)", lambda: dataset_tables(arrays))
    expectations = dataset_expectations(ValidateParams())
    timed("GX validation", lambda: run_checks(tables, expectations))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    if not RAW.is_file():
        raise SystemExit(f"{RAW} is missing: run `dvc repro ingest` first")
    with tempfile.TemporaryDirectory() as scratch:
        runs = [stage_seconds(Path(scratch)) for _ in range(arguments.repeats)]
        breakdown = parts()
    median = statistics.median(runs)
    figures = {
        "images": 70000,
        "stage_seconds": [round(run, 2) for run in runs],
        "stage_seconds_median": round(median, 2),
        "target_seconds": 15,
        "breakdown_seconds": breakdown,
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validate_speed.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        f"validate stage on 70,000 MNIST images: median {median:.2f} s of {arguments.repeats} "
        f"runs (target <= 15 s), {os.cpu_count()} CPUs",
        "",
        "| part (one process) | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds} |" for name, seconds in breakdown.items()),
    ]
    (RESULTS / "validate_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
