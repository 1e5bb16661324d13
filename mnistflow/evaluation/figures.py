"""Pictures for a person: misclassified test digits, and a model's first-layer weights.

The tutorials drew these with matplotlib (`show_imgs`, `neuron_images.png`); Pillow is already
a dependency and writes the same PNG bytes for the same input, so DVC sees no change when
nothing changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnistflow.constants import IMAGE_SHAPE, PIXELS_PER_IMAGE
from mnistflow.core.atomic import atomic_file

CELL_SCALE = 3
CAPTION_HEIGHT = 14
BACKGROUND = 255


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _tile(pixels: np.ndarray, scale: int) -> Image.Image:
    """A 0..1 array as a greyscale tile, enlarged `scale` times without smoothing."""
    grey = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    tile = Image.fromarray(grey, mode="L")
    return tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)


def image_grid(
    tiles: list[np.ndarray], captions: list[str], columns: int, scale: int = CELL_SCALE
) -> Image.Image:
    """Tiles (2-D arrays in 0..1) in rows of `columns`, each with its caption below."""
    if not tiles:
        blank = Image.new("L", (200, 30), BACKGROUND)
        ImageDraw.Draw(blank).text((4, 8), "nothing to show", fill=0, font=_font())
        return blank
    height, width = tiles[0].shape
    cell_width, cell_height = width * scale + 4, height * scale + CAPTION_HEIGHT + 4
    rows = math.ceil(len(tiles) / columns)
    canvas = Image.new("L", (columns * cell_width, rows * cell_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for index, (pixels, caption) in enumerate(zip(tiles, captions, strict=True)):
        left, top = (index % columns) * cell_width + 2, (index // columns) * cell_height + 2
        canvas.paste(_tile(pixels, scale), (left, top))
        draw.text((left, top + height * scale + 1), caption, fill=0, font=font)
    return canvas


def misclassified_grid(
    images: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    max_images: int = 64,
    columns: int = 8,
) -> Image.Image:
    """The first `max_images` test images the model got wrong, captioned "true 4 pred 9".

    Digits are drawn dark on light, as on paper.
    """
    wrong = np.flatnonzero(actual != predicted)[:max_images]
    tiles = [1.0 - images[index].reshape(IMAGE_SHAPE) for index in wrong]
    captions = [f"true {actual[index]} pred {predicted[index]}" for index in wrong]
    return image_grid(tiles, captions, columns)


def first_layer_weights_grid(kernel: np.ndarray, max_units: int = 100) -> Image.Image:
    """Each unit's incoming weights as an image: for Dense on 784 pixels a 28×28 picture of
    what excites the unit (the tutorials' neuron_images.png); for Conv2D each filter.

    Scaled per unit so that 0 is mid-grey; bright pixels excite, dark ones inhibit.
    """
    if kernel.ndim == 2 and kernel.shape[0] == PIXELS_PER_IMAGE:  # Dense: (784, units)
        units = [kernel[:, unit].reshape(IMAGE_SHAPE) for unit in range(kernel.shape[1])]
        scale, columns = CELL_SCALE, 10
    elif kernel.ndim == 4:  # Conv2D: (height, width, channels_in, filters); first channel
        units = [kernel[:, :, 0, unit] for unit in range(kernel.shape[3])]
        scale, columns = 12, 8
    else:
        raise ValueError(f"no picture for a first layer with a kernel shaped {kernel.shape}")
    units = units[:max_units]
    tiles = [0.5 + 0.5 * unit / max(float(np.abs(unit).max()), 1e-12) for unit in units]
    return image_grid(tiles, [f"unit {index}" for index in range(len(tiles))], columns, scale)


def first_layer_kernel(model) -> np.ndarray:
    """The kernel of the model's first layer that has one (Dense or Conv2D)."""
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            return np.asarray(layer.kernel)
    raise ValueError(f"model {model.name} has no layer with weights")


def save_png(target: Path, image: Image.Image) -> None:
    with atomic_file(target) as temporary:
        image.save(temporary, format="PNG", optimize=True)
