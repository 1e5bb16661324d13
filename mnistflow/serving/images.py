"""Image files → 28×28 uint8 digits, the way MNIST's were made.

Grey, light digit on dark background (inverted when the background is light), the digit fitted
into a 20×20 box keeping its aspect ratio, then centred by centre of mass in a 28×28 frame.

Before that, what a file means is honoured and what it could cost is capped: size limits are
checked from the header, before any pixel is decoded; EXIF orientation is applied; transparency
is composited onto a background that contrasts with the ink (a black digit on a transparent
background stays a digit); 16-bit and float images are scaled, not clipped; files holding
several frames are refused rather than silently reduced to their first.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mnistflow.constants import IMAGE_SHAPE, IMAGE_SIZE, PIXEL_MAX
from mnistflow.errors import PipelineInputError

# MNIST's digits were fitted into a 20×20 box, then placed by centre of mass at the frame's
# centre (measured on MNIST: 13.99, 14.00).
DIGIT_BOX = 20
CENTRE = IMAGE_SIZE / 2


# An image file larger than this is refused before decoding: a digit needs a few hundred
# pixels, and a 12,000×12,000 PNG would take 144 M pixels (~0.5 GB) of memory per worker.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_BYTES = 32 * 1024 * 1024
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def grey_levels(image) -> np.ndarray:
    """A PIL image as grey levels 0..255 (float64): 16-bit and float images scaled, not
    clipped; transparency composited onto a background that contrasts with the ink."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        return values * (PIXEL_MAX / 65535.0) if values.max() > PIXEL_MAX else values
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("non-finite pixel values")
        return np.clip(values * PIXEL_MAX if values.max() <= 1.0 else values, 0, PIXEL_MAX)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float64)
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / PIXEL_MAX
    grey = np.asarray(rgba.convert("L"), dtype=np.float64)
    opaque = alpha > 0.5
    # Dark ink on transparency goes onto white, light ink onto black: the digit stays visible.
    ink_is_dark = opaque.any() and grey[opaque].mean() < 128
    background = float(PIXEL_MAX) if ink_is_dark else 0.0
    return grey * alpha + background * (1.0 - alpha)


def mnist_style(image) -> np.ndarray:
    """A PIL image → 28×28 uint8 the way MNIST digits were made."""
    from PIL import Image

    grey = grey_levels(image)
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


def read_image_file(path: Path, name: str | None = None) -> np.ndarray:
    """One image file as a 28×28 digit; PipelineInputError (naming `name`) when it cannot be
    read, is too large, or holds several frames."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = name or str(path)
    size = Path(path).stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise PipelineInputError(
            f"{name}: {size:,} bytes; image files above {MAX_IMAGE_BYTES:,} bytes are refused"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns on large sizes; the cap below refuses them with a clear reason.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise PipelineInputError(
                    f"{name}: {width}×{height} pixels; images above {MAX_IMAGE_PIXELS:,} pixels "
                    "are refused before decoding"
                )
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise PipelineInputError(
                    f"{name}: {frames} frames; expected a single image (save each frame as "
                    "its own file)"
                )
            image.load()
            return mnist_style(ImageOps.exif_transpose(image))
    except PipelineInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise PipelineInputError(f"{name}: not a readable image ({error})") from None
    except Image.DecompressionBombError as error:
        raise PipelineInputError(f"{name}: refused ({error})") from None
