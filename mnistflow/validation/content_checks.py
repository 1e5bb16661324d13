"""Checks on what the images and labels mean, beyond per-image summaries: drift against the
reference profile, label quality, near-duplicates. Each gives `CheckResult`s like the GX
checks, and a section of details for reports/validation.json and the run report.

These are numpy checks on numbers computed here (distances, estimated error counts, pair
counts), each compared with one threshold; routing them through GX would mean building a
one-row table per number, so they are judged here and reported in the same form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.params import ValidateParams
from mnistflow.reference.drift import MEASURES, profile_distances
from mnistflow.reference.folder import Reference
from mnistflow.reference.label_quality import assess_labels
from mnistflow.reference.near_duplicates import close_pairs
from mnistflow.reference.profile import PROFILED_SPLITS, Profile, cross_near_duplicates
from mnistflow.validation.checks import CheckResult

THRESHOLD_OF = {
    "intensity_js": "max_intensity_js",
    "ink_js": "max_ink_js",
    "aspect_js": "max_aspect_js",
    "mean_image": "max_mean_image",
    "centre_shift": "max_centre_shift",
}


def drift_checks(
    current: Profile, reference: Reference, params: ValidateParams
) -> tuple[list[CheckResult], dict[str, Any]]:
    distances = profile_distances(current, reference.profile)
    results = []
    largest: dict[str, float] = {}
    for measure in MEASURES:
        threshold = getattr(params.drift, THRESHOLD_OF[measure])
        values = [d for d in distances if d.measure == measure]
        if not values:
            continue
        worst = max(values, key=lambda d: d.value)
        over = [d.scope for d in values if d.value > threshold]
        largest[measure] = worst.value
        results.append(
            CheckResult(
                name=f"drift_{measure}",
                table="drift",
                column=None,
                success=not over,
                observed={"max": worst.value, "scope": worst.scope, "over": over[:10]},
                bound=f"at most {threshold} in every split and class",
                unexpected_count=len(over),
            )
        )
    details = {
        "largest": largest,
        "scopes": [{"scope": d.scope, "measure": d.measure, "value": d.value} for d in distances],
    }
    return results, details


def label_checks(
    arrays: dict[str, np.ndarray], reference: Reference, params: ValidateParams
) -> tuple[list[CheckResult], dict[str, Any]]:
    model = reference.label_model()
    kind = reference.label_model_kind()
    if model is None:
        return [], {"model": None, "note": "the reference holds no label model"}
    results = []
    splits: dict[str, Any] = {}
    for split in PROFILED_SPLITS:
        images, labels = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
        why_not = _why_labels_cannot_be_assessed(images, labels, reference)
        if why_not:
            splits[split] = {"assessed": False, "note": why_not}
            continue
        quality = assess_labels(split, labels.reshape(-1), model.probabilities(images))
        splits[split] = {"assessed": True, **quality.as_json()}
        threshold = params.labels.max_error_rate
        results.append(
            CheckResult(
                name="label_error_rate",
                table=f"{split}_labels",
                column=None,
                success=quality.error_rate <= threshold,
                observed={
                    "estimated_error_rate": quality.error_rate,
                    "estimated_errors": quality.estimated_errors,
                    "worst_class": int(np.argmax(quality.per_class)),
                },
                bound=f"at most {threshold} (confident learning, {kind})",
                unexpected_count=quality.estimated_errors,
            )
        )
    return results, {"model": kind, "splits": splits}


def _why_labels_cannot_be_assessed(images, labels, reference: Reference) -> str | None:
    if len(labels) != len(images) or len(images) == 0:
        return "labels and images differ in number"
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        return f"labels are not all classes 0..{NUM_CLASSES - 1}"
    if len(np.unique(labels)) < NUM_CLASSES:
        return "not every class is present"
    expected = reference.profile.splits["train"]["image_shape"]
    if list(images.shape[1:]) != list(expected):
        return f"images are {list(images.shape[1:])}, the label model takes {expected}"
    return None


def duplicate_checks(
    current: Profile, params: ValidateParams
) -> tuple[list[CheckResult], dict[str, Any]]:
    """Near-duplicates within the training split and of training images in the test split."""
    bits = params.duplicates.max_distance
    pairs = close_pairs(current.hashes["train"], bits)
    in_train = int(len(pairs))
    test_in_train = cross_near_duplicates(current.hashes["train"], current.hashes["test"], bits)
    limits = params.duplicates
    results = [
        CheckResult(
            name="near_duplicates",
            table="train_images",
            column=None,
            success=in_train <= limits.max_in_train,
            observed={"pairs": in_train, "examples": pairs[:5, :2].tolist()},
            bound=f"at most {limits.max_in_train} pairs within {bits} bits",
            unexpected_count=in_train,
        ),
        CheckResult(
            name="near_duplicates_of_train",
            table="test_images",
            column=None,
            success=int(test_in_train.sum()) <= limits.max_test_in_train,
            observed={
                "images": int(test_in_train.sum()),
                "examples": np.flatnonzero(test_in_train)[:5].tolist(),
            },
            bound=f"at most {limits.max_test_in_train} within {bits} bits of a training image",
            unexpected_count=int(test_in_train.sum()),
        ),
    ]
    details = {
        "max_distance": bits,
        "train_pairs": in_train,
        "test_in_train": int(test_in_train.sum()),
        "train_pair_examples": pairs[:16].tolist(),
    }
    return results, details
