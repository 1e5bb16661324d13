"""Image files → 28×28 uint8 digits, the way MNIST's were made.

Grey, light digit on dark background (inverted when the background is light), the digit fitted
into a 20×20 box keeping its aspect ratio, then centred by centre of mass in a 28×28 frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnistflow.constants import IMAGE_SHAPE, IMAGE_SIZE, PIXEL_MAX
from mnistflow.errors import PipelineInputError

# MNIST's digits were fitted into a 20×20 box, then placed by centre of mass at the frame's
# centre (measured on MNIST: 13.99, 14.00).
DIGIT_BOX = 20
CENTRE = IMAGE_SIZE / 2


def mnist_style(image) -> np.ndarray:
    """A PIL image → 28×28 uint8 the way MNIST digits were made."""
    from PIL import Image

    grey = np.asarray(image.convert("L"), dtype=np.float64)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:  # light background: MNIST digits are light on dark
        grey = PIXEL_MAX - grey
    grey = np.where(grey > 0.1 * grey.max(), grey, 0.0) if grey.max() > 0 else grey
    rows, cols = np.nonzero(grey)
    if len(rows) == 0:
        return np.zeros(IMAGE_SHAPE, dtype=np.uint8)
    digit = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = DIGIT_BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    resized = np.asarray(
        Image.fromarray(digit.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    frame = np.zeros(IMAGE_SHAPE)
    top, left = (IMAGE_SIZE - resized.shape[0]) // 2, (IMAGE_SIZE - resized.shape[1]) // 2
    frame[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    # Shift the centre of mass to the frame's centre, where it sits in MNIST.
    total = frame.sum()
    if total > 0:
        ys, xs = np.indices(frame.shape)
        shift_y = round(CENTRE - (ys * frame).sum() / total)
        shift_x = round(CENTRE - (xs * frame).sum() / total)
        frame = np.roll(frame, (shift_y, shift_x), axis=(0, 1))
    return np.clip(np.rint(frame), 0, PIXEL_MAX).astype(np.uint8)


def read_image_file(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return mnist_style(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise PipelineInputError(f"{path}: not a readable image ({error})") from None
