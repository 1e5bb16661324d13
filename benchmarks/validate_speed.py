"""Validate-stage speed on the full MNIST (70,000 images), where the time goes, and the figures
the default thresholds were set from.

1. The real stage (`python -m stages.validate`) in fresh processes, side by side in one run:
   without a reference (GX checks and near-duplicates only) and with the project's reference
   (drift and label quality too). Target: <= 30 s with the reference.
2. Its parts, timed in one process.
3. Calibration: drift distances between MNIST's own halves (the noise a clean new version of
   the data shows) and for each corruption family; perceptual-hash distances of distinct
   digits, shifted copies and JPEG re-encodes.

Writes benchmarks/results/validate_speed.{json,md}.

    python benchmarks/validate_speed.py [--repeats 3]   (needs `dvc repro ingest` first)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RAW = ROOT / "data" / "raw" / "mnist.npz"
REFERENCE = ROOT / "reference"
TARGET_SECONDS = 30


def stage_seconds(scratch: Path, with_reference: bool) -> float:
    command = [sys.executable, "-m", "stages.validate", "--raw", str(RAW)]
    command += ["--report", str(scratch / "validation.json")]
    if with_reference:
        command += ["--reference", str(REFERENCE)]
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
    from mnistflow.data.sources import read_npz_arrays
    from mnistflow.params import ValidateParams
    from mnistflow.reference.folder import load_reference
    from mnistflow.reference.label_quality import assess_labels
    from mnistflow.reference.near_duplicates import perceptual_hashes
    from mnistflow.reference.profile import build_profile
    from mnistflow.validation.bounds import resolve_bounds
    from mnistflow.validation.checks import gx_dataset_checks
    from mnistflow.validation.content_checks import drift_checks, duplicate_checks

    arrays = timed("read mnist.npz", lambda: read_npz_arrays(RAW))
    reference = timed("load the reference", lambda: load_reference(REFERENCE))
    params, _ = resolve_bounds(ValidateParams(), reference.profile)
    timed("GX checks (summaries + validation)", lambda: gx_dataset_checks(arrays, params))
    images = np.concatenate([arrays["x_train"], arrays["x_test"]])
    timed("  of which: perceptual hashes", lambda: perceptual_hashes(images))
    profile = timed("profile (features, histograms, hashes)", lambda: build_profile(arrays))
    timed("near-duplicate search", lambda: duplicate_checks(profile, params))
    timed("drift distances", lambda: drift_checks(profile, reference, params))
    model = timed("load the label model", reference.label_model)
    probabilities = timed(
        "label model over 70,000 images",
        lambda: {split: model.probabilities(arrays[f"x_{split}"]) for split in ("train", "test")},
    )
    timed(
        "confident learning (cleanlab)",
        lambda: [
            assess_labels(split, arrays[f"y_{split}"], probabilities[split])
            for split in ("train", "test")
        ],
    )
    return timings


def _halves(arrays):
    first = {k: v[: len(v) // 2] for k, v in arrays.items()}
    second = {k: v[len(v) // 2 :].copy() for k, v in arrays.items()}
    return first, second


def calibration(arrays) -> dict[str, dict[str, float]]:
    """Largest distance per measure over splits and classes: MNIST's second half against a
    profile of its first half, clean and corrupted."""
    from mnistflow.reference.drift import MEASURES, profile_distances
    from mnistflow.reference.profile import build_profile

    first, second = _halves(arrays)
    accepted = build_profile(first)

    def set_train(transform):
        def corrupt(data):
            data["x_train"] = np.ascontiguousarray(transform(data["x_train"]))

        return corrupt

    corruptions = {
        "clean (the other half)": lambda data: None,
        "transposed": set_train(lambda x: x.transpose(0, 2, 1)),
        "rotated 90": set_train(lambda x: np.rot90(x, 1, axes=(1, 2))),
        "mirrored": set_train(lambda x: x[:, :, ::-1]),
        "faded (x0.7)": set_train(lambda x: (x * 0.7).astype(np.uint8)),
        "lower contrast": set_train(lambda x: np.where(x > 0, 60 + x * 0.6, 0).astype(np.uint8)),
        "brightness +20": set_train(
            lambda x: np.clip(x.astype(np.int16) + 20, 0, 255).astype(np.uint8)
        ),
        "shifted 2 px": set_train(lambda x: np.roll(x, 2, axis=2)),
    }
    table = {}
    for name, corrupt in corruptions.items():
        data = {k: v.copy() for k, v in second.items()}
        corrupt(data)
        distances = profile_distances(build_profile(data), accepted)
        table[name] = {
            measure: max(d.value for d in distances if d.measure == measure) for measure in MEASURES
        }
    return table


def hash_separation(arrays) -> dict[str, object]:
    from PIL import Image

    from mnistflow.reference.near_duplicates import hamming_distances, perceptual_hashes

    test, train = arrays["x_test"][:2000], arrays["x_train"]
    test_hashes, train_hashes = perceptual_hashes(test), perceptual_hashes(train)
    nearest = np.full(len(test), 256)
    for start in range(0, len(train_hashes), 5000):
        block = train_hashes[start : start + 5000]
        counts = np.bitwise_count(test_hashes[:, None, :] ^ block[None]).sum(-1)
        nearest = np.minimum(nearest, counts.min(axis=1))

    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=75)
        return np.array(Image.open(io.BytesIO(buffer.getvalue())))

    shifted = hamming_distances(perceptual_hashes(np.roll(test, 1, axis=2)), test_hashes)
    recoded = hamming_distances(perceptual_hashes(np.stack([jpeg(x) for x in test])), test_hashes)
    return {
        "distinct: nearest training image, min bits": int(nearest.min()),
        "distinct: nearest training image, 1st percentile": float(np.percentile(nearest, 1)),
        "shifted 1 px: max bits": int(shifted.max()),
        "JPEG q75: median bits": float(np.median(recoded)),
        "JPEG q75: share within 12 bits": round(float((recoded <= 12).mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    if not RAW.is_file():
        raise SystemExit(f"{RAW} is missing: run `dvc repro ingest` first")
    runs: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(arguments.repeats):
            for with_reference in (False, True):  # interleaved, so drift in load hits both
                runs[with_reference].append(stage_seconds(Path(scratch), with_reference))
    breakdown = parts()
    from mnistflow.data.sources import read_npz_arrays

    arrays = read_npz_arrays(RAW)
    drift = calibration(arrays)
    hashes = hash_separation(arrays)
    medians = {key: round(statistics.median(values), 2) for key, values in runs.items()}
    figures = {
        "images": 70000,
        "stage_seconds_without_reference": [round(r, 2) for r in runs[False]],
        "stage_seconds_with_reference": [round(r, 2) for r in runs[True]],
        "median_without_reference": medians[False],
        "median_with_reference": medians[True],
        "target_seconds": TARGET_SECONDS,
        "breakdown_seconds": breakdown,
        "drift_calibration": drift,
        "hash_separation": hashes,
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validate_speed.json").write_text(json.dumps(figures, indent=2) + "\n")
    measures = list(next(iter(drift.values())))
    lines = [
        f"validate stage on 70,000 MNIST images, {os.cpu_count()} CPUs, median of "
        f"{arguments.repeats} fresh processes each, interleaved: **{medians[True]} s with the "
        f"reference** (drift, label quality; target <= {TARGET_SECONDS} s), {medians[False]} s "
        "without it (GX checks and near-duplicates only)",
        "",
        "| part (one process) | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds} |" for name, seconds in breakdown.items()),
        "",
        "Drift calibration: largest distance over splits and classes, MNIST's second half "
        "against a profile of its first half (writers differ between the halves)",
        "",
        "| data | " + " | ".join(measures) + " |",
        "|---|" + "---|" * len(measures),
        *(
            f"| {name} | " + " | ".join(f"{values[m]:.3f}" for m in measures) + " |"
            for name, values in drift.items()
        ),
        "",
        "Perceptual hash (centred, 256 bits), 2,000 test images:",
        "",
        *(f"- {name}: {value}" for name, value in hashes.items()),
    ]
    (RESULTS / "validate_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
