"""What loading Keras costs a stage process: plain `import keras` against
mnistflow.compute.keras_loading.load_keras() (Keras without its scikit-learn and pandas
integrations), side by side.

Each sample is a fresh Python process that loads Keras one way and reports its own CPU
seconds (resource usage of the process, so a busy machine changes them less than wall time);
the two ways alternate and the first one rotates between repeats. Writes
benchmarks/results/keras_import.{json,md}.

    python benchmarks/keras_import.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from mnistflow.compute.cpu_features import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
REPORT_CPU = (
    "import json, resource, sys; usage = resource.getrusage(resource.RUSAGE_SELF); "
    "print(json.dumps([usage.ru_utime + usage.ru_stime, "
    "sorted(set(sys.modules) & {'sklearn', 'pandas'})]))"
)
WAYS = {
    "import keras": "import keras; ",
    "load_keras()": "from mnistflow.compute.keras_loading import load_keras; load_keras(); ",
}


def sample(code: str) -> tuple[float, list[str]]:
    """(CPU seconds, which of scikit-learn and pandas got loaded) of one fresh process."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    output = subprocess.run(
        [sys.executable, "-c", code + REPORT_CPU],
        env=environment, cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    seconds, loaded = json.loads(output)
    return float(seconds), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=8)
    arguments = parser.parse_args()
    names = list(WAYS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    loaded: dict[str, list[str]] = {}
    for repeat in range(arguments.repeats):
        for name in names[repeat % 2 :] + names[: repeat % 2]:
            cpu, loaded[name] = sample(WAYS[name])
            seconds[name].append(round(cpu, 3))
            print(f"{name}: {cpu:.2f} CPU-s", flush=True)
    medians = {name: round(statistics.median(values), 3) for name, values in seconds.items()}
    result = {
        "what": "CPU seconds of a fresh process that loads Keras (TensorFlow backend)",
        "repeats": arguments.repeats,
        "cpu_seconds": seconds,
        "cpu_seconds_median": medians,
        "also_loaded": loaded,
        "saved_cpu_seconds_median": round(medians["import keras"] - medians["load_keras()"], 3),
        "cpu": cpu_model(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "keras_import.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Loading Keras in a stage process",
        "",
        f"Fresh processes, medians of {arguments.repeats} alternating samples on {result['cpu']}.",
        "",
        "| way | CPU s (median) | also loads |",
        "|---|---|---|",
        *(
            f"| `{name}` | {medians[name]} | {', '.join(loaded[name]) or 'neither'} |"
            for name in names
        ),
        "",
        f"Saved per process: {result['saved_cpu_seconds_median']} CPU-s.",
        "",
    ]
    (RESULTS / "keras_import.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
