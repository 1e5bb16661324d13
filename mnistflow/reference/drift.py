"""Drift of a dataset's profile against the accepted reference profile.

Per scope (a split, or one class of a split) and per measure:
- `intensity_js`, `ink_js`, `aspect_js`: Jensen-Shannon distance (base 2, 0 = same, 1 =
  disjoint) between the histograms of pixel intensity, per-image ink fraction and ink-box
  aspect. Faded ink, lower contrast and a brightness offset move the first; a transposed or
  rotated digit moves the aspect.
- `mean_image`: root-mean-square difference of the mean images, as a fraction of the full
  pixel scale. Per class, it sees a mirrored, rotated or transposed digit and two classes
  whose labels were swapped (class 3's mean image then looks like the reference's 5).
- `centre_shift`: distance in pixels between the mean centres of mass (a shifted crop).

Each measure's largest value over the scopes is checked against its threshold in params
(`validate.drift`); the report lists every scope over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon

from mnistflow.constants import PIXEL_MAX
from mnistflow.reference.profile import Profile, ScopeProfile

# Below this many images a batch's histograms are too noisy to judge drift by (1,000 clean
# MNIST test images lie within the thresholds; 100 do not always): `mnistflow validate` and
# predict's chunks (the model's input_profile carries it) judge only from here on.
MIN_DRIFT_IMAGES = 500

MEASURES = ("intensity_js", "ink_js", "aspect_js", "mean_image", "centre_shift")


@dataclass(frozen=True)
class Distance:
    measure: str
    scope: str
    value: float


def scope_distances(current: ScopeProfile, reference: ScopeProfile) -> dict[str, float]:
    """Every measure between one scope of the current profile and the same of the reference."""
    values = {
        f"{name}_js": _js_distance(current.histograms[name], reference.histograms[name])
        for name in ("intensity", "ink", "aspect")
    }
    if current.mean_image.shape == reference.mean_image.shape:
        difference = current.mean_image.astype(np.float64) - reference.mean_image
        values["mean_image"] = float(np.sqrt(np.mean(difference**2)) / PIXEL_MAX)
    else:
        values["mean_image"] = 1.0  # another image shape: as far apart as images get
    values["centre_shift"] = float(np.linalg.norm(current.centre - reference.centre))
    return {name: round(value, 6) for name, value in values.items()}


def profile_distances(current: Profile, reference: Profile) -> list[Distance]:
    """Distances for every scope present (non-empty) in both profiles."""
    distances = []
    for scope, profile in current.scopes.items():
        accepted = reference.scopes.get(scope)
        if accepted is None or profile.count == 0 or accepted.count == 0:
            continue
        for measure, value in scope_distances(profile, accepted).items():
            distances.append(Distance(measure, scope, value))
    return distances


def batch_distances(
    images: np.ndarray, accepted: ScopeProfile, min_images: int = MIN_DRIFT_IMAGES
) -> dict[str, float] | None:
    """A batch's drift distances against an accepted scope; None when the batch is too small
    to judge or its images have another shape."""
    from mnistflow.reference.profile import batch_profile

    shape = tuple(np.asarray(images).shape[1:3])
    if len(images) < min_images or shape != tuple(accepted.mean_image.shape):
        return None
    return scope_distances(batch_profile(images), accepted)


def batch_drift(images: np.ndarray, input_profile: dict) -> list[str] | None:
    """The drift measures over their threshold for a batch of prediction inputs, against the
    profile an exported model carries (`mnistflow.reference.input_profile`); None when the batch
    is too small to judge or its images have another shape."""
    mean_image = np.asarray(input_profile["mean_image"], np.float32)
    accepted = ScopeProfile(
        count=1,
        mean_image=mean_image,
        std_image=np.zeros_like(mean_image),
        histograms={k: np.asarray(v, np.int64) for k, v in input_profile["histograms"].items()},
        centre=np.asarray(input_profile["centre"], np.float64),
    )
    distances = batch_distances(images, accepted, input_profile["min_images"])
    if distances is None:
        return None
    thresholds = input_profile["thresholds"]
    return [name for name, value in distances.items() if value > thresholds[f"max_{name}"]]


def _js_distance(first: np.ndarray, second: np.ndarray) -> float:
    if first.sum() == 0 or second.sum() == 0 or first.shape != second.shape:
        return 1.0
    value = jensenshannon(first.astype(np.float64), second.astype(np.float64), base=2)
    return float(np.nan_to_num(value))
