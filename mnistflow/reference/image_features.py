"""Per-image geometry and intensity features, vectorised over a whole split.

The reference profile and the drift checks describe images by what these return: where the
ink's centre of mass lies, the box around the ink and its aspect, how much of the image is
ink, and how bright. Unlike the summary columns of `summaries` (all rotation-invariant), the
box aspect and the per-class mean images see a transposed, rotated or mirrored digit.
"""

from __future__ import annotations

import numpy as np

from mnistflow.data.pixels import pixel_units


def centres_of_mass(images: np.ndarray) -> np.ndarray:
    """(N, 2) row and column of each image's intensity-weighted centre, in pixels; a blank
    image's centre is the geometric one."""
    pixels = pixel_units(images).astype(np.float32, copy=False)
    height, width = pixels.shape[1:3]
    rows = pixels.sum(axis=2, dtype=np.float64)
    columns = pixels.sum(axis=1, dtype=np.float64)
    total = rows.sum(axis=1)
    blank = total == 0
    safe_total = np.where(blank, 1.0, total)
    centre_row = rows @ np.arange(height) / safe_total
    centre_column = columns @ np.arange(width) / safe_total
    centre_row[blank] = (height - 1) / 2
    centre_column[blank] = (width - 1) / 2
    return np.stack([centre_row, centre_column], axis=1)


def ink_boxes(images: np.ndarray) -> np.ndarray:
    """(N, 2) height and width of the smallest box holding every non-zero pixel (0 if blank)."""
    ink = pixel_units(images) > 0
    return np.stack([_extent(ink.any(axis=2)), _extent(ink.any(axis=1))], axis=1)


def _extent(occupied: np.ndarray) -> np.ndarray:
    """Per row of a (N, L) boolean array: last True index - first True index + 1, 0 if none."""
    length = occupied.shape[1]
    any_set = occupied.any(axis=1)
    first = occupied.argmax(axis=1)
    last = length - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(any_set, last - first + 1, 0)


def box_aspects(images: np.ndarray) -> np.ndarray:
    """Height over width of each ink box; a blank image counts as 1."""
    boxes = ink_boxes(images).astype(np.float64)
    return np.where(boxes[:, 1] > 0, boxes[:, 0] / np.maximum(boxes[:, 1], 1.0), 1.0)
