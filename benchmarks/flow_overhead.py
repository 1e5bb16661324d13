"""Orchestration overhead: `mnistflow run` (Prefect flow) vs plain `dvc repro`, side by side.

On an up-to-date pipeline both only check stages, so the difference is what Prefect costs:
importing it, starting its temporary local server when PREFECT_API_URL is unset, and the
API calls of one flow run with six task runs. Alternating fresh processes, medians of
repeats; also `mnistflow run` against an already running server (no temporary server).
Writes benchmarks/results/flow_overhead.{json,md}. Needs an up-to-date pipeline (make run).

    python benchmarks/flow_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent


def seconds(command: list[str], environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True)
    return time.perf_counter() - started


def import_seconds(environment: dict[str, str]) -> float:
    probe = "import time; t = time.perf_counter(); import prefect; print(time.perf_counter() - t)"
    output = subprocess.run(
        [sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True
    )
    return float(output.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.update(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    dvc_repro = [str(BIN / "dvc"), "repro"]
    flow_run = [str(BIN / "mnistflow"), "run"]
    if (
        "up to date"
        not in subprocess.run(
            [str(BIN / "dvc"), "status"], cwd=ROOT, env=environment, capture_output=True, text=True
        ).stdout
    ):
        raise SystemExit("the pipeline is not up to date: run `make run` first")

    timings: dict[str, list[float]] = {"dvc repro": [], "mnistflow run": []}
    for repeat in range(arguments.repeats):
        order = (
            ("dvc repro", "mnistflow run") if repeat % 2 == 0 else ("mnistflow run", "dvc repro")
        )
        for name in order:
            timings[name].append(
                seconds(dvc_repro if name == "dvc repro" else flow_run, environment)
            )

    # The same flow against a server that is already up: what the temporary server costs.
    from mnistflow.orchestration.local_server import local_prefect_server

    with local_prefect_server(ROOT / ".prefect" / "benchmark", port=4399) as url:
        with_server = {**environment, "PREFECT_API_URL": url}
        timings["mnistflow run (server already up)"] = [
            seconds(flow_run, with_server) for _ in range(arguments.repeats)
        ]
    medians = {name: round(statistics.median(values), 2) for name, values in timings.items()}
    overhead = medians["mnistflow run"] - medians["dvc repro"]
    figures = {
        "seconds": {name: [round(v, 2) for v in values] for name, values in timings.items()},
        "medians": medians,
        "overhead_seconds": round(overhead, 2),
        "target_overhead_seconds": 12,
        "import_prefect_seconds": round(import_seconds(environment), 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flow_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        "| command (up-to-date pipeline) | seconds (median) |",
        "|---|---|",
        *(f"| `{name}` | {value} |" for name, value in medians.items()),
        "",
        f"Overhead of `mnistflow run` over `dvc repro`: {overhead:.1f} s (target <= 12 s); "
        f"importing prefect alone takes {figures['import_prefect_seconds']} s; the rest is the "
        "temporary server's start (compare the row with a server already up) and the API calls "
        f"of one flow run and six task runs. {arguments.repeats} repeats, alternating.",
    ]
    (RESULTS / "flow_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
