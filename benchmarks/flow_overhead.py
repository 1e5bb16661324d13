"""Orchestration overhead: `mnistflow run` (Prefect flow) vs plain `dvc repro`, side by side.

On an up-to-date pipeline both only check stages, so the difference is what Prefect costs.
`mnistflow run` keeps one Prefect server for the project between runs
(mnistflow/orchestration/kept_server.py): measured warm (the server up, as for every run after
the first), against plain `dvc repro` in alternating fresh processes; then the first run of a
session (it starts the kept server), and a run that keeps none (MNISTFLOW_KEEP_SERVER_SECONDS=0:
Prefect's temporary server started and stopped in the run, the behaviour before). Medians of
repeats. Target: warm within 3 s of `dvc repro`. Writes benchmarks/results/flow_overhead.{json,md}.
Needs an up-to-date pipeline (make run).

    python benchmarks/flow_overhead.py [--repeats 5]
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
TARGET_SECONDS = 3.0


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
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.update(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MNISTFLOW_KEEP_SERVER_SECONDS="900",
    )
    temporary = {**environment, "MNISTFLOW_KEEP_SERVER_SECONDS": "0"}
    dvc_repro = [str(BIN / "dvc"), "repro"]
    flow_run = [str(BIN / "mnistflow"), "run"]
    stop_server = [str(BIN / "mnistflow"), "server", "stop"]
    status = json.loads(
        subprocess.run(
            [str(BIN / "dvc"), "status", "--json"],
            cwd=ROOT, env=environment, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    # The compute stage is always_changed by design (it re-reads the host every run).
    if any(changes != ["always changed"] for changes in status.values()):
        raise SystemExit(f"the pipeline is not up to date ({sorted(status)}): make run first")

    subprocess.run(stop_server, cwd=ROOT, env=environment, check=True, capture_output=True)
    timings: dict[str, list[float]] = {
        "mnistflow run, first of a session (starts the kept server)": [
            seconds(flow_run, environment)
        ],
        "dvc repro": [],
        "mnistflow run (kept server)": [],
    }
    for repeat in range(arguments.repeats):
        order = ("dvc repro", "mnistflow run (kept server)")
        for name in order if repeat % 2 == 0 else reversed(order):
            timings[name].append(seconds(dvc_repro if name == "dvc repro" else flow_run,
                                         environment))  # fmt: skip
    subprocess.run(stop_server, cwd=ROOT, env=environment, check=True, capture_output=True)
    timings["mnistflow run, no server kept (temporary server)"] = [
        seconds(flow_run, temporary) for _ in range(max(1, arguments.repeats // 2))
    ]
    medians = {name: round(statistics.median(values), 2) for name, values in timings.items()}
    overhead = medians["mnistflow run (kept server)"] - medians["dvc repro"]
    figures = {
        "seconds": {name: [round(v, 2) for v in values] for name, values in timings.items()},
        "medians": medians,
        "overhead_seconds": round(overhead, 2),
        "target_overhead_seconds": TARGET_SECONDS,
        "import_prefect_seconds": round(import_seconds(environment), 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flow_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        "| command (up-to-date pipeline) | seconds (median) | runs |",
        "|---|---|---|",
        *(f"| `{name}` | {value} | {len(timings[name])} |" for name, value in medians.items()),
        "",
        f"Overhead of `mnistflow run` over `dvc repro` with the project's kept server: "
        f"{overhead:.2f} s (target <= {TARGET_SECONDS:g} s); importing prefect alone takes "
        f"{figures['import_prefect_seconds']} s. The first run of a session pays the server's "
        "start once; with no server kept every run pays Prefect's temporary server. "
        f"{arguments.repeats} repeats, alternating.",
    ]
    (RESULTS / "flow_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
