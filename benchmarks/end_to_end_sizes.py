"""What the end-to-end tests' training size costs: train, evaluate and export of the small
test project (tests/test_pipeline_end_to_end.py's SMALL_PARAMS) at the earlier size (2,700
training and 1,000 test images) and at the current one (1,350 and 500), side by side.

Each size gets its own throwaway copy of the project, reproduced once; then
`dvc repro --force --downstream train` (train, evaluate, export, and compute, which runs on
every repro) runs in fresh processes, the sizes alternating and the first size rotating
between repeats. CPU seconds are the stage processes' own (resource usage of the children),
so a busy machine changes them less than wall time. Writes
benchmarks/results/end_to_end_sizes.{json,md}.

    python benchmarks/end_to_end_sizes.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package: the project copy the tests make

from mnistflow.compute.cpu_features import cpu_model  # noqa: E402
from tests.test_pipeline_end_to_end import copy_project, environment, set_params  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SIZES = {
    "earlier (2,700 / 1,000)": {"max_train_images": 3000, "max_test_images": 1000},
    "current (1,350 / 500)": {"max_train_images": 1500, "max_test_images": 500},
}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_repro(workspace: Path, *arguments: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of DVC and every stage process it waited for)."""
    cpu, started = children_cpu_seconds(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *arguments],
        cwd=workspace, env=environment(), check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - started, children_cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="end-to-end-sizes-") as scratch:
        workspaces = {}
        for index, (name, prepare) in enumerate(SIZES.items()):
            workspace = copy_project(Path(scratch) / f"size-{index}")
            set_params(workspace, {"prepare": prepare})
            timed_repro(workspace)  # ingest and validate once; the same for both sizes
            workspaces[name] = workspace
        measured: dict[str, list[tuple[float, float]]] = {name: [] for name in SIZES}
        names = list(SIZES)
        for repeat in range(arguments.repeats):
            for name in names[repeat % 2 :] + names[: repeat % 2]:
                measured[name].append(
                    timed_repro(workspaces[name], "--force", "--downstream", "train")
                )
                print(f"{name}: {measured[name][-1][1]:.1f} CPU-s", flush=True)
        accuracy = {
            name: json.loads((workspaces[name] / "reports" / "metrics.json").read_text())[
                "accuracy"
            ]
            for name in SIZES
        }
    rows = {
        name: {
            "wall_seconds_median": round(statistics.median(w for w, _ in runs), 2),
            "cpu_seconds_median": round(statistics.median(c for _, c in runs), 2),
            "cpu_seconds": [round(c, 2) for _, c in runs],
            "test_accuracy": accuracy[name],
        }
        for name, runs in measured.items()
    }
    earlier, current = (rows[name]["cpu_seconds_median"] for name in SIZES)
    result = {
        "what": "dvc repro --force --downstream train of the end-to-end test project",
        "repeats": arguments.repeats,
        "sizes": rows,
        "cpu_ratio_current_to_earlier": round(current / earlier, 3),
        "cpu": cpu_model(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "end_to_end_sizes.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# End-to-end test project: train, evaluate and export at two training sizes",
        "",
        f"`dvc repro --force --downstream train`, medians of {arguments.repeats} alternating "
        f"runs on {result['cpu']}.",
        "",
        "| size (training / test images) | CPU s | wall s | test accuracy |",
        "|---|---|---|---|",
        *(
            f"| {name} | {row['cpu_seconds_median']} | {row['wall_seconds_median']} | "
            f"{row['test_accuracy']:.3f} |"
            for name, row in rows.items()
        ),
        "",
        f"Current / earlier CPU: {result['cpu_ratio_current_to_earlier']}.",
        "",
    ]
    (RESULTS / "end_to_end_sizes.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
