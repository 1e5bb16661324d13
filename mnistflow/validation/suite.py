"""Validating a labelled dataset: the GX checks with resolved bounds, then what needs a profile
(near-duplicates) and a reference (drift, label quality). One report for the validate stage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mnistflow.params import ValidateParams
from mnistflow.reference.drift import batch_distances
from mnistflow.reference.folder import ACCEPT_HINT, Reference
from mnistflow.reference.profile import build_profile
from mnistflow.validation.bounds import resolve_bounds
from mnistflow.validation.checks import (
    CheckResult,
    ValidationReport,
    gx_dataset_checks,
    validate_images,
)
from mnistflow.validation.content_checks import (
    THRESHOLD_OF,
    drift_checks,
    duplicate_checks,
    label_checks,
)

logger = logging.getLogger(__name__)


def validate_dataset(
    arrays: dict[str, np.ndarray],
    params: ValidateParams,
    reference: Reference | None = None,
) -> ValidationReport:
    """Every check on a dataset in Keras' mnist.npz layout. Without a reference, the bounds
    are params' or MNIST's built-in ones and drift and label quality are not assessed."""
    profile = reference.profile if reference else None
    resolved, origins = resolve_bounds(
        params, profile, reference.label_error_rate if reference else 0.0
    )
    gx_report = gx_dataset_checks(arrays, resolved)
    results = list(gx_report.results)
    current = build_profile(arrays, resolved.duplicates.max_distance)
    duplicate_results, duplicates = duplicate_checks(current, resolved)
    results += duplicate_results
    metrics: dict[str, Any] = {
        "near_duplicates": {
            "train_pairs": duplicates["train_pairs"],
            "test_in_train": duplicates["test_in_train"],
        }
    }
    details: dict[str, Any] = {"near_duplicate_details": duplicates}
    if reference is not None:
        drift_results, drift = drift_checks(current, reference, resolved)
        label_results, labels = label_checks(arrays, reference, resolved)
        results += drift_results + label_results
        metrics["drift"] = drift["largest"]
        metrics["label_error_rate"] = {
            split: values["estimated_error_rate"]
            for split, values in labels.get("splits", {}).items()
            if values.get("assessed")
        }
        details["reference"] = {
            "data_md5": reference.data_md5,
            "source": reference.info.get("data", {}).get("source"),
            "label_model": reference.label_model_kind(),
        }
        details["drift_scopes"] = drift["scopes"]
        details["label_quality"] = labels
    details["bounds"] = [
        {"key": key, "value": _plain(getattr_path(resolved, key)), "from": origin}
        for key, origin in origins.items()
    ]
    return ValidationReport(results=results, metrics=metrics, details=details)


def validate_batch(
    images: np.ndarray, params: ValidateParams, reference: Reference | None = None
) -> ValidationReport:
    """The checks that apply to an unlabelled prediction batch: each image against the bounds
    (resolved from the reference where params leaves them null), and the batch as a whole
    against the reference's training split for drift (from MIN_DRIFT_IMAGES images on)."""
    resolved, _ = resolve_bounds(params, reference.profile if reference else None)
    results = list(validate_images(images, resolved).results)
    metrics: dict[str, Any] = {}
    distances = batch_distances(images, reference.profile.scopes["train"]) if reference else None
    if distances is not None:
        metrics["drift"] = distances
        for measure, value in distances.items():
            threshold = getattr(resolved.drift, THRESHOLD_OF[measure])
            results.append(
                CheckResult(
                    name=f"drift_{measure}",
                    table="batch",
                    column=None,
                    success=value <= threshold,
                    observed=value,
                    bound=f"at most {threshold} (against the reference's train split)",
                )
            )
    return ValidationReport(results=results, metrics=metrics)


def getattr_path(params: ValidateParams, key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# Checks that compare the data with the accepted reference: failing one may mean the data is
# a new dataset rather than a broken one, so the error says how to accept it.
REFERENCE_TABLES = ("drift",)
REFERENCE_CHECKS = ("split_size", "image_height", "image_width", "mean_intensity",
                    "ink_fraction", "max_pixel", "class_share")  # fmt: skip


def failure_message(report, data: Path, reference) -> str:
    """What failed, a line per check, and how to accept the data where it may be a new
    dataset rather than a broken one."""
    lines = "\n".join(f"  - {failure.line()}" for failure in report.failures)
    hint = ""
    if reference is not None and any(
        failure.table in REFERENCE_TABLES or failure.name in REFERENCE_CHECKS
        for failure in report.failures
    ):
        hint = (
            f"\nThe data differs from the reference accepted from data md5 "
            f"{reference.data_md5}; {ACCEPT_HINT}."
        )
    return (
        f"{data} failed {len(report.failures)} of {len(report.results)} data checks:\n{lines}{hint}"
    )
