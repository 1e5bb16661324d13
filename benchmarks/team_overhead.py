"""Orchestration overhead on the team's stack: the no-op nightly (a `nightly` deployment run on
an up-to-date clone, through the stack's Prefect server and a process worker) against plain
`dvc repro` in the same clone, side by side.

A stack is brought up in a temporary folder (`mnistflow.stack`), the project (small params, as
the end-to-end tests use) pushed to its git remote and cloned as the publishing machine A with
its own Prefect home; one nightly run trains and publishes (not timed); then, alternating,
`dvc repro` and a deployment run of `nightly` (triggered with `prefect deployment run`, timed
to its end as the server reports it, and by the server's own start/end of the run).
Everything started here is stopped by its pid. Writes benchmarks/results/team_overhead.{json,md}.

    python benchmarks/team_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # the test helpers that set machines up (tests/team_machines.py)

from mnistflow.stack import team  # noqa: E402
from mnistflow.stack.layout import StackLayout  # noqa: E402
from tests.team_machines import (  # noqa: E402
    NIGHTLY,
    Machine,
    base_environment,
    join_machine,
    run,
    run_seconds,
    start_worker,
    stop_worker,
    trigger_and_wait,
)
from tests.test_pipeline_end_to_end import copy_project  # noqa: E402

RUN_TIMEOUT = 900


def nightly_seconds(machine: Machine) -> tuple[float, float]:
    """(trigger to end, the run's own start to end) of one `nightly` deployment run."""
    flow_run, seconds = trigger_and_wait(machine, NIGHTLY, RUN_TIMEOUT)
    if flow_run["state_type"] != "COMPLETED":
        raise SystemExit(f"the nightly run ended {flow_run['state_type']}: {flow_run['state']}")
    return seconds, run_seconds(flow_run)


def dvc_repro_seconds(machine: Machine) -> float:
    started = time.perf_counter()
    machine.dvc("repro")
    return time.perf_counter() - started


def measure(machine: Machine, repeats: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"dvc repro": [], "nightly, trigger to end": [],
                                       "nightly, the run itself": []}  # fmt: skip
    for repeat in range(repeats):
        # Alternating which goes first, so neither always meets a warm file cache.
        for name in ("dvc", "nightly") if repeat % 2 == 0 else ("nightly", "dvc"):
            if name == "dvc":
                timings["dvc repro"].append(dvc_repro_seconds(machine))
            else:
                total, own = nightly_seconds(machine)
                timings["nightly, trigger to end"].append(total)
                timings["nightly, the run itself"].append(own)
    return timings


def write_results(timings: dict[str, list[float]], repeats: int) -> None:
    medians = {name: round(statistics.median(values), 2) for name, values in timings.items()}
    runs = {name: [round(value, 2) for value in values] for name, values in timings.items()}
    figures = {"repeats": repeats, "medians_seconds": medians, "runs_seconds": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "team_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        "| up-to-date pipeline, same clone, team stack | seconds (median) |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in medians.items()),
        "",
        f"The no-op nightly costs {medians['nightly, trigger to end'] - medians['dvc repro']:.1f}"
        f" s more than `dvc repro` from trigger to end (the worker's polling, every 2 s here, "
        f"and the flow run process's start included); the run itself "
        f"{medians['nightly, the run itself']} s. {repeats} repeats, alternating.",
    ]
    (RESULTS / "team_overhead.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="mnistflow-team-bench-"))
    scratch = Path(tempfile.mkdtemp(prefix="mnistflow-team-bench-machines-"))
    worker = None
    try:
        state = team.up(directory)
        layout = StackLayout.of(directory)
        seed = copy_project(scratch / "seed")
        machine = join_machine_after_push(layout, scratch, seed)
        machine.prefect("work-pool", "create", "mnistflow", "--type", "process",
                        "--base-job-template", "prefect-work-pool.json")  # fmt: skip
        machine.prefect("--no-prompt", "deploy", "--name", "nightly")
        worker = start_worker(machine, "default", scratch / "worker.log")
        nightly_seconds(machine)  # trains and publishes: the clone is up to date afterwards
        timings = measure(machine, arguments.repeats)
        write_results(timings, arguments.repeats)
        print(f"stack up in {state.startup_seconds} s; {RESULTS / 'team_overhead.md'}")
    finally:
        if worker:
            stop_worker(worker)
        team.down(directory)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def join_machine_after_push(layout: StackLayout, scratch: Path, seed: Path) -> Machine:
    """The project pushed to the stack's git remote, cloned as the publishing machine."""
    run(["git", "push", "--quiet", str(layout.git_remote), "main"], seed, base_environment(scratch))
    return join_machine(layout, scratch, "machine-a", publishes=True)


if __name__ == "__main__":
    main()
