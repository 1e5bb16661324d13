"""Image files → 28×28 uint8 digits, the way MNIST's were made.

Grey, light digit on dark background (inverted when the background is light), the digit fitted
into a 20×20 box keeping its aspect ratio, then centred by centre of mass in a 28×28 frame.

Before that, what a file means is honoured and what it could cost is capped: size limits are
checked from the header, before any pixel is decoded; only the decoder of the format the
suffix names is tried; a large frame is box-reduced to at most WORKING_SIDE pixels a side
before any float copy is made; EXIF orientation is applied; transparency is composited onto a
background that contrasts with the ink (a black digit on a transparent background stays a
digit); 16-bit and float images are scaled, not clipped; files holding several frames are
refused rather than silently reduced to their first.
"""

from __future__ import annotations

import math
import struct
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
# A frame is box-reduced by a whole factor to at most this many pixels a side before the float
# work: the digit ends in a 20×20 box, and each float64 copy of a 16-Mpx frame costs 128 MiB.
WORKING_SIDE = 1024
# The one decoder each suffix may use: a file whose bytes are another format is refused, so a
# name cannot route bytes to a decoder nobody meant to expose.
FORMAT_BY_SUFFIX = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
IMAGE_SUFFIXES = frozenset(FORMAT_BY_SUFFIX)
# Pillow decodes WebP through libwebp's animation decoder, which holds about four RGBA copies
# of the frame (measured: +256 MiB for 4096×4096), so WebP gets a quarter of the pixels.
MAX_PIXELS_BY_FORMAT = {"WEBP": 2048 * 2048}
EXIF_ORIENTATION = 0x0112


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


def _working_frame(image):
    """The decoded frame in a mode Pillow can reduce, box-reduced to at most WORKING_SIDE a
    side. Palette and bilevel images become grey (or RGBA when they carry transparency, which
    averaging would otherwise lose), 16-bit ones 32-bit."""
    if "transparency" in image.info and image.mode not in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
    elif image.mode in ("1", "P"):
        image = image.convert("L")
    elif image.mode in SIXTEEN_BIT_MODES:
        image = image.convert("I")
    factor = math.ceil(max(image.size) / WORKING_SIDE)
    return image.reduce(factor) if factor > 1 else image


def _oriented(image, orientation: int):
    """`image` turned the way its EXIF orientation says (the mapping ImageOps.exif_transpose
    uses, applied here to the reduced frame instead of the full one)."""
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation if isinstance(orientation, int) else None)
    return image.transpose(method) if method is not None else image


# TIFF tags of a tiled image's tile size (TIFF 6.0, section 15).
TILE_WIDTH_TAG, TILE_LENGTH_TAG = 322, 323
# Bytes per value of each TIFF field type (TIFF 6.0 section 2; 16-18 are BigTIFF's 8-byte
# integers); an unknown type counts as 8, the largest.
TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                   13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip


def _tiff_tag_bytes(path: Path) -> int:
    """The bytes the first TIFF directory's tags say they hold, read from the directory's
    entries only (classic and BigTIFF layouts): what libtiff will read when it decodes."""
    with open(path, "rb") as handle:
        header = handle.read(16)
        order = "<" if header[:2] == b"II" else ">"
        big = struct.unpack(f"{order}H", header[2:4])[0] == 43
        offset = struct.unpack(f"{order}Q", header[8:16])[0] if big else struct.unpack(
            f"{order}I", header[4:8])[0]  # fmt: skip
        handle.seek(offset)
        count_format, entry_format = (f"{order}Q", f"{order}HHQQ") if big else (
            f"{order}H", f"{order}HHII")  # fmt: skip
        count = struct.unpack(count_format, handle.read(struct.calcsize(count_format)))[0]
        entry_size = struct.calcsize(entry_format)
        entries = handle.read(entry_size * min(count, 65536))
    total = 0
    for start in range(0, len(entries) - entry_size + 1, entry_size):
        _, kind, values, _ = struct.unpack(entry_format, entries[start : start + entry_size])
        total += values * TIFF_TYPE_BYTES.get(kind, 8)
    return total


def _check_tiff_tags(path: Path, image_format: str, name: str) -> None:
    """Refuse a TIFF whose tags claim more bytes than the whole file holds: a real file stores
    each tag's data once, but tags may all point at one block, and libtiff reads every one of
    them when it decodes (a 974 KB file took 2 GB that way)."""
    if image_format != "TIFF":
        return
    claimed, size = _tiff_tag_bytes(path), Path(path).stat().st_size
    if claimed > size:
        raise PipelineInputError(
            f"{name}: TIFF tags claim {claimed:,} bytes in a {size:,}-byte file; tags sharing "
            "their data are refused before decoding"
        )


def _check_tiles(image, image_format: str, name: str) -> None:
    """Refuse a TIFF whose tiles are larger than the image: libtiff allocates and inflates
    whole tiles, so a 64×64 image with 16384×16384 tiles would cost gigabytes the pixel cap
    never sees. Tiles are multiples of 16 (the specification), hence the rounding."""
    if image_format != "TIFF":
        return
    width, height = image.size
    tags = getattr(image, "tag_v2", {})
    for tag, side, limit in ((TILE_WIDTH_TAG, "width", width), (TILE_LENGTH_TAG, "length", height)):
        tile = tags.get(tag)
        if tile is not None and (not isinstance(tile, int) or tile > -(-limit // 16) * 16):
            raise PipelineInputError(
                f"{name}: TIFF tile {side} {tile} for an image {limit} pixels that way; "
                "tiles larger than the image are refused before decoding"
            )


def _image_format(path: Path, name: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise PipelineInputError(
            f"{name}: suffix {suffix!r}; expected one of {', '.join(sorted(FORMAT_BY_SUFFIX))}"
        )
    return FORMAT_BY_SUFFIX[suffix]


def read_image_file(path: Path, name: str | None = None) -> np.ndarray:
    """One image file as a 28×28 digit; PipelineInputError (naming `name`) when it cannot be
    read, is not the format its suffix names, is too large, or holds several frames.

    Pillow's warnings are silenced: they repeat per tag or chunk of a crafted file (thousands
    of lines), and whatever they warn of is refused here with one clear reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_image_file(path, name)


def _read_image_file(path: Path, name: str | None = None) -> np.ndarray:
    """One image file as a 28×28 digit; PipelineInputError (naming `name`) when it cannot be
    read, is not the format its suffix names, is too large, or holds several frames."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    name = name or str(path)
    image_format = _image_format(path, name)
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise PipelineInputError(
            f"{name}: {size:,} bytes; image files above {MAX_IMAGE_BYTES:,} bytes are refused"
        )
    try:
        image = Image.open(path, formats=[image_format])
    except UnidentifiedImageError:
        raise PipelineInputError(
            f"{name}: not a readable {image_format} image (the only format its suffix "
            f"{path.suffix!r} may hold)"
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise PipelineInputError(f"{name}: not a readable image ({error})") from None
    except Image.DecompressionBombError as error:
        raise PipelineInputError(f"{name}: refused ({error})") from None
    with image:
        width, height = image.size  # from the header: nothing decoded yet
        max_pixels = MAX_PIXELS_BY_FORMAT.get(image_format, MAX_IMAGE_PIXELS)
        if width * height > max_pixels:
            raise PipelineInputError(
                f"{name}: {width}×{height} pixels; {image_format} images above {max_pixels:,} "
                "pixels are refused before decoding"
            )
        _check_tiles(image, image_format, name)
        try:
            _check_tiff_tags(path, image_format, name)
        except (OSError, struct.error) as error:
            raise PipelineInputError(
                f"{name}: not a readable TIFF directory ({type(error).__name__})"
            ) from None
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise PipelineInputError(
                f"{name}: {frames} frames; expected a single image (save each frame as its own "
                "file)"
            )
        try:
            if max(image.size) > WORKING_SIDE:
                # JPEG decodes at a reduced DCT scale: the full frame is never in memory.
                image.draft(None, (WORKING_SIDE, WORKING_SIDE))
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            image.load()
            frame = _oriented(_working_frame(image), orientation)
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise PipelineInputError(f"{name}: not a readable image ({error})") from None
        # Inside the block: `frame` may be `image` itself, unusable once closed.
        return mnist_style(frame)
