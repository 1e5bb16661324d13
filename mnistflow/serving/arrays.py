"""Array inputs — .npy files, .npz members, IDX files (gzipped or not) — read a block at a time.

Every reader checks the header before it reads data: layout (N×28×28, N×28×28×1 or N×784),
dtype (uint8 or float), C order, and a count below `MAX_IMAGES_PER_FILE`. Data is then read a
block of images at a time into fresh memory, never mapped and never inflated whole, so memory
stays flat whatever a file holds or a compressed stream inflates to.

A stream is verified before any of its images is delivered: a plain file's size must be exactly
what its header promises; a compressed stream is read once to its end (a pass that keeps
nothing; gzip and zip check their CRCs on the way) and must inflate to exactly that size. A
truncated, corrupt or over-long file is refused whole, never delivered in part.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistflow.constants import IMAGE_SHAPE, IMAGE_SIZE, PIXELS_PER_IMAGE
from mnistflow.data.idx import IDX_IMAGES_MAGIC, read_idx_header
from mnistflow.errors import PipelineInputError

ARRAY_SHAPES_ACCEPTED = (
    f"(N, {IMAGE_SIZE}, {IMAGE_SIZE}), (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1) "
    f"or (N, {PIXELS_PER_IMAGE})"
)
# Any header may announce any count (an IDX dimension is a uint32): more is refused before
# reading, and a batch that large belongs in several files.
MAX_IMAGES_PER_FILE = 10_000_000
# How much of a compressed stream the verifying pass inflates at a time.
VERIFY_BLOCK_BYTES = 1 << 20
# Members of an .npz that hold the images, in order of preference (else its only member).
NPZ_IMAGE_KEYS = ("x", "images", "x_test")
GZIP_MAGIC = b"\x1f\x8b"


def display_name(path: Path | str) -> str:
    """A path as text that any output can hold, one text per path: bytes of a name that are not
    valid UTF-8 are shown as \\x escapes, and a backslash of the name itself as two, so
    `x\\xff.png` named so and a name holding the byte 0xff never read alike."""
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Layout:
    """What a header announces: how many images, of which dtype."""

    count: int
    dtype: np.dtype

    @property
    def image_bytes(self) -> int:
        return PIXELS_PER_IMAGE * self.dtype.itemsize


def checked_layout(shape: tuple[int, ...], dtype: np.dtype, origin: str) -> Layout:
    """The layout of an array header, or PipelineInputError naming `origin` and what was
    expected."""
    if dtype.hasobject or (dtype != np.uint8 and not np.issubdtype(dtype, np.floating)):
        raise PipelineInputError(
            f"{origin}: dtype {dtype}; expected uint8 pixels 0..255 or float pixels 0..1"
        )
    if len(shape) < 1 or tuple(shape[1:]) not in (
        (PIXELS_PER_IMAGE,),
        (*IMAGE_SHAPE, 1),
        IMAGE_SHAPE,
    ):
        raise PipelineInputError(
            f"{origin}: array of shape {tuple(shape)}; expected {ARRAY_SHAPES_ACCEPTED}"
        )
    if shape[0] > MAX_IMAGES_PER_FILE:
        raise PipelineInputError(
            f"{origin}: header announces {shape[0]:,} images; more than "
            f"{MAX_IMAGES_PER_FILE:,} in one file are refused (split the file)"
        )
    return Layout(int(shape[0]), np.dtype(dtype))


def read_npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) of the .npy stream at `handle`, which is left at the
    data. numpy's own header parser: it evaluates nothing and unpickles nothing."""
    version = np.lib.format.read_magic(handle)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    return read_header(handle)


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill `buffer` from `stream`; the number of bytes there were (short only at the end)."""
    filled = 0
    while filled < len(buffer):
        read = stream.readinto(buffer[filled:])
        if not read:
            break
        filled += read
    return filled


class StreamedImages:
    """The images of one array stream, delivered a block at a time by `blocks`.

    `open_stream` opens the stream positioned anywhere; its first `header_bytes` bytes are the
    header. `verify` (run at construction) refuses a stream that does not hold exactly the
    announced images.
    """

    def __init__(
        self,
        name: str,
        open_stream: Callable[[], AbstractContextManager[BinaryIO]],
        header_bytes: int,
        layout: Layout,
        plain_file: Path | None = None,
    ) -> None:
        self.name = name
        self._open_stream = open_stream
        self._header_bytes = header_bytes
        self.layout = layout
        self._verify(plain_file)

    def __len__(self) -> int:
        return self.layout.count

    def _verify(self, plain_file: Path | None) -> None:
        promised = self._header_bytes + self.layout.count * self.layout.image_bytes
        if plain_file is not None:
            found = plain_file.stat().st_size
        else:
            found = 0
            block = memoryview(bytearray(VERIFY_BLOCK_BYTES))
            with self._open_stream() as stream:
                # Stop one block past the promise: an over-long stream is refused without
                # inflating whatever else it holds.
                while found <= promised and (read := _read_into(stream, block)):
                    found += read
        if found != promised:
            what = "holds more than that" if found > promised else f"holds {found:,} bytes"
            raise PipelineInputError(
                f"{self.name}: header announces {self.layout.count:,} images "
                f"({promised:,} bytes with the header) but the data {what}; it is truncated, "
                "corrupt or forged"
            )

    def blocks(self, block_images: int) -> Iterator[np.ndarray]:
        """(n, 28, 28) arrays of at most `block_images` images each, in order."""
        with self._open_stream() as stream:
            stream.read(self._header_bytes)
            for start in range(0, self.layout.count, block_images):
                count = min(block_images, self.layout.count - start)
                images = np.empty((count, *IMAGE_SHAPE), dtype=self.layout.dtype)
                if _read_into(stream, memoryview(images).cast("B")) != images.nbytes:
                    raise PipelineInputError(
                        f"{self.name}: ended before image {start + count - 1}; it changed while "
                        "it was read"
                    )
                yield images


def _npy_images(path: Path, name: str) -> StreamedImages:
    with open(path, "rb") as handle:
        try:
            shape, fortran_order, dtype = read_npy_header(handle)
        except Exception:  # noqa: BLE001 - numpy's parser raises several kinds, and quotes
            # the file's first bytes: say what is wrong, not what is there.
            raise PipelineInputError(f"{name}: not an .npy file (no valid numpy header)") from None
        header_bytes = handle.tell()
    if fortran_order:
        raise PipelineInputError(f"{name}: Fortran-ordered array; expected C order")
    layout = checked_layout(shape, dtype, name)
    return StreamedImages(name, lambda: open(path, "rb"), header_bytes, layout, plain_file=path)


def _npz_member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The member holding the images: the first of NPZ_IMAGE_KEYS, else the only member."""
    members = archive.infolist()
    names = [member.filename for member in members]
    if len(set(names)) != len(names):
        raise PipelineInputError(f"{name}: the archive names a member twice; it is ambiguous")
    by_key = {member.filename[: -len(".npy")]: member for member in members}
    for key in NPZ_IMAGE_KEYS:
        if f"{key}.npy" in names:
            return by_key[key]
    if len(members) == 1 and names[0].endswith(".npy"):
        return members[0]
    # Names shown short: a member name is the file's own text and may be 64 KB long.
    shown = ", ".join(repr(display_name(entry)[:40]) for entry in names[:5])
    raise PipelineInputError(
        f"{name}: members {shown}{'…' if len(names) > 5 else ''}; expected one named "
        f"{', '.join(f'{key}.npy' for key in NPZ_IMAGE_KEYS)}, or a single .npy member"
    )


# Members inflated a block at a time: zipfile bounds what one read of a deflated member
# inflates, but hands bzip2 and LZMA data to their codecs whole (a 1 KB bzip2 member inflated
# to 3 GB in one call), so only these two methods are read.
STREAMED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def _npz_images(path: Path, name: str) -> StreamedImages:
    with zipfile.ZipFile(path) as archive:
        member = _npz_member(archive, name)
        origin = f"{name}[{display_name(member.filename[: -len('.npy')])}]"
        if member.compress_type not in STREAMED_COMPRESSION:
            raise PipelineInputError(
                f"{origin}: compression method {member.compress_type}; expected a stored or "
                "deflated member (what numpy's savez and savez_compressed write)"
            )
        with archive.open(member) as handle:
            try:
                shape, fortran_order, dtype = read_npy_header(handle)
            except Exception:  # noqa: BLE001 - as for .npy: never quote the header
                raise PipelineInputError(
                    f"{origin}: not an .npy member (no valid numpy header)"
                ) from None
            header_bytes = handle.tell()
    if fortran_order:
        raise PipelineInputError(f"{origin}: Fortran-ordered array; expected C order")
    layout = checked_layout(shape, dtype, origin)

    class _Member:
        # The archive stays open exactly as long as its member is read.
        def __enter__(self) -> BinaryIO:
            self.archive = zipfile.ZipFile(path)
            return self.archive.open(member)

        def __exit__(self, *exc_info) -> None:
            self.archive.close()

    return StreamedImages(origin, _Member, header_bytes, layout)


def _idx_images(path: Path, name: str) -> StreamedImages:
    dims = read_idx_header(path, IDX_IMAGES_MAGIC)
    if dims[1:] != IMAGE_SHAPE:
        raise PipelineInputError(
            f"{name}: IDX images of {dims[1]}×{dims[2]}; expected {IMAGE_SIZE}×{IMAGE_SIZE}"
        )
    layout = checked_layout(dims, np.dtype(np.uint8), name)
    header_bytes = 4 + 4 * len(dims)
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    if gzipped:
        return StreamedImages(name, lambda: gzip.open(path, "rb"), header_bytes, layout)
    return StreamedImages(name, lambda: open(path, "rb"), header_bytes, layout, plain_file=path)


def array_images(path: Path) -> StreamedImages:
    """The images of an .npy, an .npz (its `x`, `images`, `x_test` or only member) or an IDX
    file, verified; PipelineInputError naming the file for anything else."""
    name = display_name(path)
    try:
        if path.name.endswith(".npy"):
            return _npy_images(path, name)
        if path.name.endswith(".npz"):
            return _npz_images(path, name)
        return _idx_images(path, name)
    except PipelineInputError as error:
        # The IDX reader names the path as it is; an undecodable name must not break the
        # writer of the error column.
        raise PipelineInputError(
            str(error).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        # The readers' own messages quote what they found (header text, names from the
        # archive): the reason names the kind of failure, never the file's bytes.
        raise PipelineInputError(
            f"{name}: cannot read ({type(error).__name__}); the file is truncated or corrupt"
        ) from None
