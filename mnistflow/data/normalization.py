"""Pixels → model inputs, defined once, as data.

Prepare fits a `Normalization` on the training split and writes it beside the prepared data;
training reads data normalized with it, export builds the serving graph's preprocessing from
the same file, so train and serve cannot drift apart through two copies of a formula.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import numpy as np

from mnistflow.constants import PIXEL_MAX
from mnistflow.core.atomic import write_json
from mnistflow.errors import PipelineInputError, read_json_object
from mnistflow.params import NormalizationKind


@dataclass(frozen=True)
class Normalization:
    """model input = (pixel - offset) / scale, for pixels in 0..255, computed in float32."""

    kind: NormalizationKind
    offset: float
    scale: float

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """float32 model inputs for pixel-valued images (uint8, or floats in pixel units)."""
        values = np.asarray(pixels, dtype=np.float32)
        return (values - np.float32(self.offset)) / np.float32(self.scale)

    def invert(self, inputs: np.ndarray) -> np.ndarray:
        """Pixel values (float64, 0..255) back from model inputs: for pictures of the data."""
        return np.asarray(inputs, dtype=np.float64) * self.scale + self.offset

    def apply_tensor(self, pixels):
        """The same, as TensorFlow ops: the preprocessing inside the exported graph."""
        import tensorflow as tf

        return (tf.cast(pixels, tf.float32) - self.offset) / self.scale

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> Normalization:
        content = read_json_object(path, "the normalization the prepare stage writes")
        if set(content) != {"kind", "offset", "scale"}:
            raise PipelineInputError(
                f"{path}: expected a JSON object with kind, offset and scale, found {content!r}"
            )
        kind, offset, scale = content["kind"], content["offset"], content["scale"]
        if kind not in get_args(NormalizationKind):
            raise PipelineInputError(f"{path}: kind {kind!r}; expected scale or standardize")
        for name, value in (("offset", offset), ("scale", scale)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PipelineInputError(f"{path}: {name} {value!r}; expected a number")
        if not scale > 0:
            raise PipelineInputError(f"{path}: scale {scale}; expected > 0")
        return cls(kind=kind, offset=float(offset), scale=float(scale))


def fit_normalization(kind: NormalizationKind, train_pixels: np.ndarray) -> Normalization:
    """`scale`: pixels / 255, as the tutorials do. `standardize`: zero mean and unit spread
    over the training split's pixels (fitted on training images only, never on test ones)."""
    if kind == "scale":
        return Normalization(kind="scale", offset=0.0, scale=float(PIXEL_MAX))
    values = np.asarray(train_pixels, dtype=np.float64)
    return Normalization(kind="standardize", offset=float(values.mean()), scale=float(values.std()))
