"""MNIST's bounds as once written by hand: what applies where no reference profile is known
(a prediction batch outside any project, a model exported before bounds were inferred)."""

from __future__ import annotations

from mnistflow.constants import IMAGE_SIZE

BUILT_IN = {
    "train_size": 60000,
    "test_size": 10000,
    "image_height": IMAGE_SIZE,
    "image_width": IMAGE_SIZE,
    "min_mean_intensity": 3.0,
    "max_mean_intensity": 140.0,
    "min_ink_fraction": 0.02,
    "max_ink_fraction": 0.6,
    "min_max_pixel": 128,
    "min_class_share": 0.05,
    "max_class_share": 0.15,
}
BUILT_IN_DUPLICATES = {"max_in_train": 60, "max_test_in_train": 0}


def bound(params, key: str):
    """params' value for `key`, or the built-in one where params leaves it null."""
    value = getattr(params, key)
    return BUILT_IN[key] if value is None else value
