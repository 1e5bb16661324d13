"""A dataset's reference profile: what accepted data looks like, per split and per class.

Computed by `build_profile` from the raw arrays (validate builds one for the data it checks
and compares it with the accepted reference's; see `mnistflow.reference.drift`). Per scope ("train",
"test", "train/3", ...): the mean image and its spread, histograms of pixel intensity, ink
fraction and ink-box aspect, and the mean centre of mass. Per split: its size, image shape,
class shares, the range of each per-image summary (bounds are inferred from them, see
`mnistflow.validation.bounds`) and the perceptual hashes with the near-duplicates among them.

Stored as two files, neither of them a pickle: `profile.npz` (the arrays, np.savez, read with
allow_pickle=False) and `profile.json` (the numbers); both byte-identical for the same data.
The per-image hashes are not stored: validate searches near-duplicates within the data it
checks, and from the reference needs only its counts (in `splits`), so a stored copy would be
2.2 MB of data nothing reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.atomic import atomic_file, write_json
from mnistflow.data.pixels import pixel_units
from mnistflow.errors import PipelineInputError
from mnistflow.reference.image_features import box_aspects, centres_of_mass
from mnistflow.reference.near_duplicates import close_pairs, perceptual_hashes
from mnistflow.validation.summaries import summarize_images

PROFILED_SPLITS = ("train", "test")
# Fixed bin edges, so histograms of any two datasets compare bin by bin.
INTENSITY_EDGES = np.linspace(0.0, 256.0, 33)  # 32 bins of 8 grey levels, in pixel units
INK_EDGES = np.linspace(0.0, 1.0, 21)
# log2(height / width) of the ink box, clipped to +-3: MNIST's digits are fitted into 20x20
# keeping their aspect, so most are 20 high and narrower; a transposed digit is wider.
ASPECT_EDGES = np.linspace(-3.0, 3.0, 25)
HISTOGRAMS = {"intensity": INTENSITY_EDGES, "ink": INK_EDGES, "aspect": ASPECT_EDGES}
# The per-image summaries whose observed range the inferred bounds start from.
RANGED_SUMMARIES = ("mean_intensity", "ink_fraction", "max_pixel")


@dataclass
class ScopeProfile:
    count: int
    mean_image: np.ndarray  # float32, pixel units
    std_image: np.ndarray
    histograms: dict[str, np.ndarray]  # counts per bin (int64)
    centre: np.ndarray  # mean (row, column) of the centres of mass


@dataclass
class Profile:
    scopes: dict[str, ScopeProfile]
    # Per split: size, image shape, class shares, per-image summary ranges, near-duplicates.
    splits: dict[str, dict[str, Any]]
    hashes: dict[str, np.ndarray] = field(default_factory=dict)  # per split, (N, 32) uint8


def build_profile(arrays: dict[str, np.ndarray], near_duplicate_bits: int):
    """The profile of a labelled dataset in Keras' mnist.npz layout (x_train, y_train, ...)."""
    scopes: dict[str, ScopeProfile] = {}
    splits: dict[str, dict[str, Any]] = {}
    hashes: dict[str, np.ndarray] = {}
    for split in PROFILED_SPLITS:
        images = pixel_units(np.asarray(arrays[f"x_{split}"]))
        labels = np.asarray(arrays[f"y_{split}"]).reshape(-1)
        features = _image_features(images)
        scopes[split] = _scope(images, features, np.ones(len(images), bool))
        for label in range(NUM_CLASSES):
            chosen = labels == label if len(labels) == len(images) else np.zeros(len(images), bool)
            scopes[f"{split}/{label}"] = _scope(images, features, chosen)
        hashes[split] = perceptual_hashes(images)
        summaries = summarize_images(images)
        splits[split] = {
            "size": int(len(images)),
            "image_shape": [int(side) for side in images.shape[1:]],
            "class_shares": _class_shares(labels),
            "ranges": {name: _value_range(summaries[name]) for name in RANGED_SUMMARIES},
        }
    splits["train"]["near_duplicates"] = len(close_pairs(hashes["train"], near_duplicate_bits))
    splits["test"]["near_duplicates_of_train"] = int(
        cross_near_duplicates(hashes["train"], hashes["test"], near_duplicate_bits).sum()
    )
    return Profile(scopes=scopes, splits=splits, hashes=hashes)


def batch_profile(images: np.ndarray) -> ScopeProfile:
    """One scope's profile for an unlabelled batch (prediction inputs)."""
    images = pixel_units(np.asarray(images))
    return _scope(images, _image_features(images), np.ones(len(images), bool))


def cross_near_duplicates(reference: np.ndarray, queries: np.ndarray, bits: int) -> np.ndarray:
    """Per query hash: True when some reference hash lies within `bits` of it."""
    pairs = close_pairs(np.concatenate([reference, queries]), bits)
    crossing = (pairs[:, 0] < len(reference)) & (pairs[:, 1] >= len(reference))
    found = np.zeros(len(queries), bool)
    found[pairs[crossing, 1] - len(reference)] = True
    return found


def _image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    summaries = summarize_images(images)
    aspects = np.log2(np.clip(box_aspects(images), 2.0**-3, 2.0**3))
    return {
        "intensity": None,  # whole images, binned in _scope
        "ink": summaries["ink_fraction"],
        "aspect": aspects,
        "centre": centres_of_mass(images),
    }


def _scope(images: np.ndarray, features: dict[str, np.ndarray], chosen: np.ndarray):
    subset = images[chosen].astype(np.float32) if chosen.any() else np.zeros((0, *images.shape[1:]))
    histograms = {
        "intensity": _intensity_histogram(images[chosen]),
        "ink": np.histogram(features["ink"][chosen], INK_EDGES)[0].astype(np.int64),
        "aspect": np.histogram(features["aspect"][chosen], ASPECT_EDGES)[0].astype(np.int64),
    }
    empty = np.zeros(images.shape[1:], np.float32)
    return ScopeProfile(
        count=int(chosen.sum()),
        mean_image=subset.mean(axis=0, dtype=np.float64).astype(np.float32)
        if len(subset)
        else empty,
        std_image=subset.std(axis=0, dtype=np.float64).astype(np.float32) if len(subset) else empty,
        histograms=histograms,
        centre=features["centre"][chosen].mean(axis=0) if chosen.any() else np.zeros(2),
    )


def _intensity_histogram(images: np.ndarray) -> np.ndarray:
    """Counts of pixel values in INTENSITY_EDGES' bins (bincount: far faster than histogram)."""
    if images.dtype == np.uint8:
        levels = np.bincount(images.reshape(-1), minlength=256)
        return levels.reshape(32, 8).sum(axis=1).astype(np.int64)
    return np.histogram(np.clip(images, 0, 255.999), INTENSITY_EDGES)[0].astype(np.int64)


def _class_shares(labels: np.ndarray) -> list[float]:
    if len(labels) == 0 or labels.dtype.kind not in "iu":
        return [0.0] * NUM_CLASSES
    counts = np.bincount(labels[(labels >= 0) & (labels < NUM_CLASSES)], minlength=NUM_CLASSES)
    return [round(float(count) / len(labels), 6) for count in counts[:NUM_CLASSES]]


def _value_range(values: np.ndarray) -> list[float]:
    if len(values) == 0:
        return [0.0, 0.0]
    return [round(float(np.min(values)), 6), round(float(np.max(values)), 6)]


def save_profile(profile: Profile, folder: Path) -> None:
    """profile.npz and profile.json in `folder`, each written atomically."""
    arrays: dict[str, np.ndarray] = {}
    numbers: dict[str, Any] = {"splits": profile.splits, "scopes": {}}
    for name, scope in profile.scopes.items():
        arrays[f"{name}/mean_image"] = scope.mean_image
        arrays[f"{name}/std_image"] = scope.std_image
        arrays[f"{name}/centre"] = scope.centre.astype(np.float64)
        for histogram, counts in scope.histograms.items():
            arrays[f"{name}/hist_{histogram}"] = counts
        numbers["scopes"][name] = {"count": scope.count}
    folder = Path(folder)
    with atomic_file(folder / "profile.npz") as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    write_json(folder / "profile.json", numbers)


def load_profile(folder: Path) -> Profile:
    folder = Path(folder)
    try:
        numbers = json.loads((folder / "profile.json").read_text(encoding="utf-8"))
        with np.load(folder / "profile.npz", allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        scopes = {
            name: ScopeProfile(
                count=int(values["count"]),
                mean_image=arrays[f"{name}/mean_image"],
                std_image=arrays[f"{name}/std_image"],
                histograms={key: arrays[f"{name}/hist_{key}"] for key in HISTOGRAMS},
                centre=arrays[f"{name}/centre"],
            )
            for name, values in numbers["scopes"].items()
        }
        return Profile(scopes=scopes, splits=numbers["splits"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineInputError(
            f"{folder}: not a readable reference profile ({type(error).__name__}: {error}); "
            "build one with `mnistflow reference accept`"
        ) from None
