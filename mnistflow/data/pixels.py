"""The two scales images travel in outside the model, and the one conversion between them.

uint8 pixels 0..255 are what is stored and what the exported model takes; floats in 0..1 are
what users often hand in. The prediction reader and the data checks both convert with these.
"""

from __future__ import annotations

import numpy as np

from mnistflow.constants import PIXEL_MAX


def pixel_units(images: np.ndarray) -> np.ndarray:
    """Images in pixel units 0..255: uint8 as is, floats (taken as 0..1) times 255."""
    if images.dtype == np.uint8:
        return images
    return np.asarray(images, np.float64) * PIXEL_MAX


def uint8_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 0..255, as the exported model takes them: floats (0..1) are scaled and rounded."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(pixel_units(images)), 0, PIXEL_MAX).astype(np.uint8)


def unit_floats(images: np.ndarray) -> np.ndarray:
    """float32 in 0..1: uint8 divided by 255, floats taken as already in 0..1."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(PIXEL_MAX)
    return images.astype(np.float32)
