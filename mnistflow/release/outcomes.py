"""A model's outcome on every test image: which it got wrong, what it predicted, how sure it was.

The export stage writes them (reports/test_outcomes.json, git-tracked beside every record) from
the float32 ONNX model on the raw test split. They are what makes the quality gate paired (a
later candidate is compared image by image with the baseline's misclassified indices), and
what serving statistics are compared with (the predicted-class distribution and confidence the
model showed on the test set).

The test set is named by the sha256 of its images and labels: a comparison with outcomes on
other images is never taken for a paired one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.json_files import json_object
from mnistflow.errors import PipelineInputError

# The low percentile of confidence reported beside its mean: how sure the least sure 5 % are.
LOW_CONFIDENCE_PERCENTILE = 5
# More test images than any test set here (MNIST's 10,000; EMNIST's 40,000): a recorded count
# above it is no test set's, and a list of that many indices is refused before it is built.
MAX_TEST_IMAGES = 10_000_000
DIGITS = 6


def digest_of_test_set(images: np.ndarray, labels: np.ndarray) -> str:
    """The test set's identity: its uint8 images and integer labels, shapes included."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(images, np.uint8), np.ascontiguousarray(labels, np.int64)):
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PredictionProfile:
    """How a model's predictions are spread: per-class shares and confidence."""

    images: int
    class_shares: tuple[float, ...]
    confidence_mean: float
    confidence_low: float  # the LOW_CONFIDENCE_PERCENTILE-th percentile

    def as_json(self) -> dict:
        return {
            "images": self.images,
            "predicted_class_shares": [round(share, DIGITS) for share in self.class_shares],
            "confidence_mean": round(self.confidence_mean, DIGITS),
            f"confidence_p{LOW_CONFIDENCE_PERCENTILE:02d}": round(self.confidence_low, DIGITS),
        }


def prediction_profile(probabilities: np.ndarray) -> PredictionProfile:
    """The profile of (N, 10) class probabilities; zeros for no images."""
    images = len(probabilities)
    if not images:
        return PredictionProfile(0, (0.0,) * NUM_CLASSES, 0.0, 0.0)
    counts = np.bincount(probabilities.argmax(axis=1), minlength=NUM_CLASSES)
    confidence = probabilities.max(axis=1).astype(np.float64)
    return PredictionProfile(
        images,
        tuple(float(count) / images for count in counts),
        float(confidence.mean()),
        float(np.percentile(confidence, LOW_CONFIDENCE_PERCENTILE)),
    )


@dataclass(frozen=True)
class Outcomes:
    test_set_sha256: str
    images: int
    misclassified: np.ndarray  # sorted test indices the model got wrong
    profile: PredictionProfile

    @property
    def correct(self) -> int:
        return self.images - len(self.misclassified)

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0

    def as_json(self) -> dict:
        return {
            "test_set_sha256": self.test_set_sha256,
            "images": self.images,
            "misclassified": self.misclassified.tolist(),
            **{k: v for k, v in self.profile.as_json().items() if k != "images"},
        }


def outcomes_of(probabilities: np.ndarray, images: np.ndarray, labels: np.ndarray) -> Outcomes:
    """The outcomes of (N, 10) `probabilities` predicted for the test `images` and `labels`."""
    labels = np.asarray(labels).astype(np.int64)
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    return Outcomes(
        digest_of_test_set(images, labels), len(labels), wrong, prediction_profile(probabilities)
    )


def parse_misclassified(value: object, images: int, where: str) -> np.ndarray:
    """Recorded misclassified indices, checked: distinct integers in 0 .. images-1."""
    if not isinstance(value, list) or len(value) > images:
        raise PipelineInputError(
            f"{where}: misclassified: expected a list of at most {images} test indices"
        )
    # Checked as Python integers first: numpy would fail on a 30-digit one with a bare
    # OverflowError.
    if not all(
        isinstance(index, int) and not isinstance(index, bool) and 0 <= index < images
        for index in value
    ):
        raise PipelineInputError(
            f"{where}: misclassified: expected distinct test indices in 0..{images - 1}"
        )
    indices = np.asarray(value, np.int64)
    if len(np.unique(indices)) != len(indices):
        raise PipelineInputError(
            f"{where}: misclassified: expected distinct test indices in 0..{images - 1}"
        )
    return np.sort(indices)


def parse_test_images(value: object, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TEST_IMAGES:
        raise PipelineInputError(
            f"{where}: {field} {value!r}; expected a count from 1 to {MAX_TEST_IMAGES}"
        )
    return value


def parse_digest(value: object, where: str) -> str:
    if not isinstance(value, str) or re.fullmatch(r"[0-9a-f]{64}", value) is None:
        raise PipelineInputError(f"{where}: test_set_sha256: expected a sha256 in lowercase hex")
    return value


def parse_outcomes(text: str, where: str) -> Outcomes:
    """Outcomes as the export stage recorded them (a record's reports/test_outcomes.json)."""
    content = json_object(text, where)
    images = parse_test_images(content.get("images"), where, "images")
    digest = parse_digest(content.get("test_set_sha256"), where)
    shares = content.get("predicted_class_shares")
    if not isinstance(shares, list) or len(shares) != NUM_CLASSES:
        raise PipelineInputError(f"{where}: predicted_class_shares: expected {NUM_CLASSES} shares")
    profile = PredictionProfile(
        images,
        tuple(_fraction(share, where, "predicted_class_shares") for share in shares),
        _fraction(content.get("confidence_mean"), where, "confidence_mean"),
        _fraction(
            content.get(f"confidence_p{LOW_CONFIDENCE_PERCENTILE:02d}"), where, "confidence_p05"
        ),
    )
    return Outcomes(
        digest, images, parse_misclassified(content.get("misclassified"), images, where), profile
    )


def _fraction(value: object, where: str, field: str) -> float:
    # NaN fails the range check too (every comparison with it is false).
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise PipelineInputError(f"{where}: {field} {value!r}; expected a number in 0..1")
    return float(value)
