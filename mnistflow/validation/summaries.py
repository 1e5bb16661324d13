"""Per-image summaries: the narrow tables the data checks run on, and their bounds.

GX is slow on wide tables (one column per pixel takes ~100 s for MNIST), so numpy first reduces
each image to a few numbers (mean intensity, ink fraction, max pixel, shape, dtype, label, hash
flags). The bounds are defined once here: GX validates them (`mnistflow.validation.checks`),
and batch prediction flags rows with them without a GX run per chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.hashing import image_digests
from mnistflow.data.pixels import pixel_units
from mnistflow.params import ValidateParams
from mnistflow.validation.bounds import image_bounds

CLASSES = tuple(range(NUM_CLASSES))


def image_hashes(images: np.ndarray) -> np.ndarray:
    """A 128-bit hex digest per image: exact duplicates within and across splits."""
    return np.array([digest.hex() for digest in image_digests(images, 16)])


def summarize_images(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image numbers in pixel units, vectorised; works on any dtype and any image shape."""
    count = len(images)
    flat = np.asarray(images).reshape(count, -1) if count else np.zeros((0, 0))
    height = images.shape[1] if images.ndim >= 2 else 1
    width = images.shape[2] if images.ndim >= 3 else 1
    return {
        "mean_intensity": flat.mean(axis=1, dtype=np.float64) if flat.size else np.zeros(count),
        "ink_fraction": (flat > 0).mean(axis=1) if flat.size else np.zeros(count),
        "max_pixel": flat.max(axis=1).astype(np.float64) if flat.size else np.zeros(count),
        "height": np.full(count, height),
        "width": np.full(count, width),
        "channels": np.full(count, int(np.prod(images.shape[3:])) if images.ndim > 3 else 1),
        "dtype": np.full(count, str(images.dtype)),
    }


def dataset_tables(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The tables GX validates for a labelled dataset: per-image summaries and class shares."""
    import pandas as pd

    hashes = {split: image_hashes(arrays[f"x_{split}"]) for split in ("train", "test")}
    labels = {split: np.asarray(arrays[f"y_{split}"]) for split in ("train", "test")}
    # An image (by content) seen with more than one label, in either split.
    pairs = pd.DataFrame(
        {
            "hash": np.concatenate([hashes["train"], hashes["test"]]),
            "label": np.concatenate([labels["train"], labels["test"]]),
        }
    )
    labels_per_hash = pairs.groupby("hash")["label"].nunique()
    conflicting = set(labels_per_hash.index[labels_per_hash > 1])

    tables: dict[str, Any] = {}
    for split in ("train", "test"):
        frame = pd.DataFrame(summarize_images(arrays[f"x_{split}"]))
        frame["label"] = labels[split] if len(labels[split]) == len(frame) else np.nan
        frame["label_conflict"] = np.isin(hashes[split], list(conflicting))
        if split == "test":
            frame["in_train"] = np.isin(hashes["test"], hashes["train"])
        tables[f"{split}_images"] = frame
        label_values = labels[split]
        counts = pd.Series(label_values).value_counts()
        tables[f"{split}_classes"] = pd.DataFrame(
            {
                "label": list(CLASSES),
                "share": [counts.get(c, 0) / max(len(label_values), 1) for c in CLASSES],
            }
        )
    return tables


def flag_images(images: np.ndarray, params: ValidateParams) -> list[str]:
    """Per image, the names of the image-level checks it fails, joined by ';' ('' if none)."""
    summary = summarize_images(pixel_units(images))
    failing = [
        (name, (summary[column] < low) | (summary[column] > high))
        for name, column, low, high in image_bounds(params)
    ]
    return [";".join(name for name, mask in failing if mask[row]) for row in range(len(images))]


def prediction_input_table(images: np.ndarray):
    """Per-image summary of a prediction batch, in pixel units 0..255 whatever its dtype."""
    import pandas as pd

    return pd.DataFrame(summarize_images(pixel_units(images)))
