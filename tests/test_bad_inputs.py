"""No input sinks or fools a batch: each bad kind is skipped with its reason, the rest delivered.

Every case runs the real `mnistflow predict` (Typer's runner) on real files with a real
onnxruntime session, and checks the exit code, the reason in the output's `error` column and
the rows delivered for the good files.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistflow.cli import app
from mnistflow.serving.images import read_image_file
from tests.project_root import PROJECT_ROOT
from tests.test_mnist_sources import write_idx

PARAMS = str(PROJECT_ROOT / "params.yaml")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def predict(model: Path, inputs: list[Path], output: Path, *extra: str):
    options = ["--model", str(model), "--params", PARAMS, "--no-progress", *extra]
    return CliRunner().invoke(app, ["predict", *map(str, inputs), "-o", str(output), *options])


def good_and_bad(rows: list[dict[str, str]]) -> tuple[list[dict], list[dict]]:
    return [r for r in rows if not r["error"]], [r for r in rows if r["error"]]


# Each bad kind: a writer making the file in `folder` from real digits, and the reason text.
def _nan_pixels(folder: Path, digits: np.ndarray) -> Path:
    images = digits[:4].astype(np.float32) / 255
    images[1, 10:14, 10:14] = np.nan  # where the ink is
    np.save(folder / "nan.npy", images)
    return folder / "nan.npy"


def _floats_in_pixel_units(folder: Path, digits: np.ndarray) -> Path:
    np.save(folder / "float255.npy", digits[:2].astype(np.float32))
    return folder / "float255.npy"


def _truncated_npz(folder: Path, digits: np.ndarray) -> Path:
    np.savez_compressed(folder / "cut.npz", x=digits[:50])
    content = (folder / "cut.npz").read_bytes()
    (folder / "cut.npz").write_bytes(content[: len(content) // 2])
    return folder / "cut.npz"


def _npz_header_promises_a_billion(folder: Path, digits: np.ndarray) -> Path:
    """A 1 KB archive whose member's header claims 10^9 images (730 GiB)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)}
    )
    member = b"\x93NUMPY" + bytes([1, 0]) + header.getvalue()[8:] + digits[:1].tobytes()
    with zipfile.ZipFile(folder / "forged.npz", "w") as archive:
        archive.writestr("x.npy", member)
    return folder / "forged.npz"


def _npy_header_promises_more(folder: Path, digits: np.ndarray) -> Path:
    np.save(folder / "short.npy", digits[:10])
    content = (folder / "short.npy").read_bytes()
    (folder / "short.npy").write_bytes(content[: len(content) - 7 * 784])
    return folder / "short.npy"


def _gzipped_idx_inflates_past_its_header(folder: Path, digits: np.ndarray) -> Path:
    """A 100 KB gzip whose header announces 2 images and whose data inflates to 100 MB."""
    import gzip

    header = (0x0803).to_bytes(4, "big") + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(folder / "bomb-idx3-ubyte.gz", "wb") as stream:
        stream.write(header + digits[:2].tobytes())
        for _ in range(100):
            stream.write(bytes(1 << 20))
    return folder / "bomb-idx3-ubyte.gz"


def _gzipped_idx_cut_short(folder: Path, digits: np.ndarray) -> Path:
    write_idx(folder / "cut-idx3-ubyte.gz", digits[:20], compress=True)
    content = (folder / "cut-idx3-ubyte.gz").read_bytes()
    (folder / "cut-idx3-ubyte.gz").write_bytes(content[: len(content) // 2])
    return folder / "cut-idx3-ubyte.gz"


def _npz_members_named_otherwise(folder: Path, digits: np.ndarray) -> Path:
    import zipfile

    np.save(folder / "member.npy", digits[:3])
    with zipfile.ZipFile(folder / "renamed.npz", "w") as archive:
        archive.write(folder / "member.npy", "../../x")
        archive.write(folder / "member.npy", "y.npy")
    (folder / "member.npy").unlink()
    return folder / "renamed.npz"


def _png_bytes_named_jpg(folder: Path, digits: np.ndarray) -> Path:
    Image.fromarray(digits[0]).save(folder / "png-inside.jpg", format="PNG")
    return folder / "png-inside.jpg"


def _tiff_named_png(folder: Path, digits: np.ndarray) -> Path:
    Image.fromarray(digits[0]).save(folder / "tiff-inside.png", format="TIFF")
    return folder / "tiff-inside.png"


def _npz_member_in_bzip2(folder: Path, digits: np.ndarray) -> Path:
    """bzip2 and LZMA members are inflated whole by zipfile (1 KB became 3 GB): refused."""
    import zipfile

    np.save(folder / "member.npy", digits[:3])
    with zipfile.ZipFile(folder / "bzip2.npz", "w", zipfile.ZIP_BZIP2) as archive:
        archive.write(folder / "member.npy", "x.npy")
    (folder / "member.npy").unlink()
    return folder / "bzip2.npz"


def _tiff_tiles_larger_than_the_image(folder: Path, digits: np.ndarray) -> Path:
    """A 64×64 grey TIFF whose one deflated tile is 16384×16384: libtiff would inflate 256 MB
    for it (the helper's variants reached gigabytes)."""
    import struct
    import zlib

    tile = zlib.compress(bytes(16384 * 16384), 9)
    entries = [(256, 4, 64), (257, 4, 64), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
               (322, 4, 16384), (323, 4, 16384), (324, 4, 8), (325, 4, len(tile))]  # fmt: skip
    ifd = 8 + len(tile)
    body = b"II*\x00" + struct.pack("<I", ifd) + tile + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<H" if kind == 3 else "<I", value).ljust(4, b"\0")
        body += struct.pack("<HHI", tag, kind, 1) + packed
    (folder / "tiles.tif").write_bytes(body + struct.pack("<I", 0))
    return folder / "tiles.tif"


def _tiff_tags_sharing_one_block(folder: Path, digits: np.ndarray) -> Path:
    """200 tags all pointing at one 20 KB block: libtiff would read 4 MB for them (a second
    review reached 2 GB from a 974 KB file this way)."""
    import struct
    import zlib

    strip = zlib.compress(bytes(64 * 64), 9)
    block = 20_000
    base = [(256, 4, 64), (257, 4, 64), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
            (278, 4, 64), (279, 4, len(strip))]  # fmt: skip
    count = len(base) + 1 + 200
    blob_at = 8 + 2 + count * 12 + 4
    strip_at = blob_at + block
    entries = sorted([*base, (273, 4, strip_at)])
    body = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", count)
    for tag, kind, value in entries:
        packed = struct.pack("<H" if kind == 3 else "<I", value).ljust(4, b"\0")
        body += struct.pack("<HHI", tag, kind, 1) + packed
    for tag in range(60000, 60200):
        body += struct.pack("<HHII", tag, 7, block, blob_at)
    body += struct.pack("<I", 0) + b"Z" * block + strip
    (folder / "tagbomb.tif").write_bytes(body)
    return folder / "tagbomb.tif"


def _npz_whose_header_is_a_secret(folder: Path, digits: np.ndarray) -> Path:
    """numpy's and zipfile's messages would quote the member's header text."""
    import zipfile

    with zipfile.ZipFile(folder / "leak.npz", "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00\x40\x00{'descr': 'remote secret', "
                         b"'fortran_order': False, 'shape': (1,), }      \n")  # fmt: skip
    return folder / "leak.npz"


def _npy_that_is_not_npy(folder: Path, digits: np.ndarray) -> Path:
    """numpy's own message would quote the file's first bytes (a secret, through a link)."""
    (folder / "secret.npy").write_bytes(b"['remote \"team\"']\n url = s3://x\n")
    return folder / "secret.npy"


def _idx_not_28x28(folder: Path, digits: np.ndarray) -> Path:
    write_idx(folder / "small-idx3-ubyte", digits[:3, :20, :20], compress=False)
    return folder / "small-idx3-ubyte"


def _idx_header_overflows(folder: Path, digits: np.ndarray) -> Path:
    header = (0x0803).to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big")
    header += (28).to_bytes(4, "big") * 2
    (folder / "huge-idx3-ubyte").write_bytes(header + digits[:2].tobytes())
    return folder / "huge-idx3-ubyte"


def _huge_png(folder: Path, digits: np.ndarray) -> Path:
    Image.new("L", (12_000, 12_000)).save(folder / "huge.png", optimize=False)
    return folder / "huge.png"


def _multi_frame_gif(folder: Path, digits: np.ndarray) -> Path:
    frames = [Image.fromarray(255 - digit) for digit in digits[:2]]
    frames[0].save(folder / "two-frames.gif", save_all=True, append_images=frames[1:])
    return folder / "two-frames.gif"


def _wrong_shape(folder: Path, digits: np.ndarray) -> Path:
    np.save(folder / "shape.npy", np.zeros((3, 32, 32), dtype=np.uint8))
    return folder / "shape.npy"


def _corrupt_png(folder: Path, digits: np.ndarray) -> Path:
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return folder / "corrupt.png"


BAD_KINDS = [
    (_nan_pixels, "non-finite pixel values", 1),
    (_floats_in_pixel_units, "expected floats in 0..1", 2),
    (_truncated_npz, "truncated or corrupt", 1),
    (_npy_header_promises_more, "header announces 10 images", 1),
    (_npz_header_promises_a_billion, "header announces 1,000,000,000 images", 1),
    (_gzipped_idx_inflates_past_its_header, "holds more than that", 1),
    (_gzipped_idx_cut_short, "truncated or corrupt", 1),
    (_npz_members_named_otherwise, "expected one named x.npy", 1),
    (_png_bytes_named_jpg, "not a readable JPEG image", 1),
    (_tiff_named_png, "not a readable PNG image", 1),
    (_npz_member_in_bzip2, "expected a stored or deflated member", 1),
    (_tiff_tiles_larger_than_the_image, "tiles larger than the image are refused", 1),
    (_npy_that_is_not_npy, "no valid numpy header", 1),
    (_tiff_tags_sharing_one_block, "tags sharing their data are refused", 1),
    (_npz_whose_header_is_a_secret, "no valid numpy header", 1),
    (_idx_not_28x28, "expected 28×28", 1),
    (_idx_header_overflows, "4,294,967,295 images", 1),
    (_huge_png, "refused before decoding", 1),
    (_multi_frame_gif, "2 frames", 1),
    (_wrong_shape, "(3, 32, 32)", 1),
    (_corrupt_png, "not a readable", 1),
]


@pytest.mark.parametrize(
    ("make_bad", "reason", "bad_rows"), BAD_KINDS, ids=[kind[0].__name__[1:] for kind in BAD_KINDS]
)
def test_each_bad_input_is_skipped_with_its_reason(
    small_onnx_model, mnist_slice, tmp_path, make_bad, reason, bad_rows
):
    digits = mnist_slice.x_test
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    bad = make_bad(inbox, digits)
    np.save(inbox / "good.npy", digits[:5])
    output = tmp_path / "out.csv"
    result = predict(small_onnx_model, [inbox], output)
    assert result.exit_code == 1, result.output
    good, skipped = good_and_bad(read_rows(output))
    assert len(skipped) == bad_rows, skipped
    assert all(reason in row["error"] and row["predicted"] == "" for row in skipped)
    # A reason says what is wrong, never what a file holds.
    assert not any("remote" in row["error"] for row in skipped)
    assert all(row["source"].startswith(str(bad)) for row in skipped)
    delivered = [row for row in good if row["source"].startswith(str(inbox / "good.npy"))]
    assert len(delivered) == 5
    assert reason in result.output  # also told on the terminal
    if make_bad is _nan_pixels:  # the other three images of that file are delivered
        assert sorted(r["source"] for r in good if "nan.npy" in r["source"]) == [
            f"{bad}[0]",
            f"{bad}[2]",
            f"{bad}[3]",
        ]


def test_a_folder_mixing_500_good_images_with_every_bad_kind_delivers_500_rows(
    small_onnx_model, mnist, tmp_path
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index, digit in enumerate(mnist.x_test[:500]):
        Image.fromarray(digit).save(inbox / f"digit-{index:03d}.png")
    bad_files = [make_bad(inbox, mnist.x_test[500:560]) for make_bad, _, _ in BAD_KINDS]
    output = tmp_path / "out.csv"
    result = predict(small_onnx_model, [inbox], output)
    assert result.exit_code == 1, result.output
    good, skipped = good_and_bad(read_rows(output))
    pngs = [row for row in good if row["source"].endswith(".png")]
    assert len(pngs) == 500
    assert {Path(row["source"].split("[")[0]) for row in skipped} == set(bad_files)
    accuracy = np.mean(
        [int(row["predicted"]) == mnist.y_test[int(Path(row["source"]).stem[6:])] for row in pngs]
    )
    assert accuracy > 0.8  # the small test model's level: the good images were read right


def test_a_name_that_is_not_utf8_is_predicted_with_an_escaped_name(
    small_onnx_model, mnist_slice, tmp_path
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    name = os.fsdecode(b"digit-\xff\xfe.png")
    Image.fromarray(mnist_slice.x_test[0]).save(inbox / name)
    Image.fromarray(mnist_slice.x_test[1]).save(inbox / "plain.png")
    output = tmp_path / "out.csv"
    result = predict(small_onnx_model, [inbox], output)
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    assert len(rows) == 2 and all(row["error"] == "" for row in rows)
    assert any(row["source"].endswith("digit-\\xff\\xfe.png") for row in rows)


def test_a_formula_in_a_file_name_is_quoted_in_the_csv(small_onnx_model, mnist_slice, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    np.save(inbox / "=HYPERLINK(1).npy", mnist_slice.x_test[:1])
    output = tmp_path / "out.csv"
    assert predict(small_onnx_model, [inbox / "=HYPERLINK(1).npy"], output).exit_code == 0
    # Through a relative path the cell would start with "=": run from inside the inbox.
    previous = Path.cwd()
    os.chdir(inbox)
    try:
        assert predict(small_onnx_model, [Path("=HYPERLINK(1).npy")], output).exit_code == 0
    finally:
        os.chdir(previous)
    [row] = read_rows(output)
    assert row["source"] == "'=HYPERLINK(1).npy[0]"


def test_a_formula_in_the_models_own_metadata_is_quoted_in_the_csv(
    small_onnx_model, mnist_slice, tmp_path
):
    """A crafted model's version string would otherwise be a live formula on every row."""
    import onnx

    model = onnx.load(str(small_onnx_model))
    entry = model.metadata_props.add()
    entry.key, entry.value = "model_version", '=HYPERLINK("http://x","v1")'
    crafted = tmp_path / "crafted.onnx"
    onnx.save(model, str(crafted))
    np.save(tmp_path / "batch.npy", mnist_slice.x_test[:2])
    output = tmp_path / "out.csv"
    assert predict(crafted, [tmp_path / "batch.npy"], output).exit_code == 0
    rows = read_rows(output)
    assert rows and all(row["model_version"].startswith("'=") for row in rows)


@pytest.mark.parametrize("chunk_size", ["0", "-1"])
def test_a_chunk_size_below_one_is_a_usage_error(
    small_onnx_model, mnist_slice, tmp_path, chunk_size
):
    np.save(tmp_path / "batch.npy", mnist_slice.x_test[:3])
    output = tmp_path / "out.csv"
    result = predict(small_onnx_model, [tmp_path / "batch.npy"], output, "--chunk-size", chunk_size)
    assert result.exit_code == 2
    assert "chunk-size" in result.output
    assert not output.exists()


def test_the_output_may_not_be_an_input_or_a_folder(small_onnx_model, mnist_slice, tmp_path):
    batch = tmp_path / "ok.npy"
    np.save(batch, mnist_slice.x_test[:3])
    before = batch.read_bytes()
    result = predict(small_onnx_model, [batch], batch)
    assert result.exit_code == 2 and "unknown output kind" in result.output
    assert batch.read_bytes() == before
    as_csv = tmp_path / "inputs.csv"
    as_csv.write_text("not an input kind mnistflow reads\n")
    result = predict(small_onnx_model, [batch, as_csv], as_csv)
    assert result.exit_code == 2 and "is one of the inputs" in result.output
    folder = tmp_path / "existing"
    folder.mkdir()
    result = predict(small_onnx_model, [batch], folder)
    assert result.exit_code == 2 and "is a folder" in result.output


def _converted(tmp_path: Path, name: str, image: Image.Image, **save_options) -> np.ndarray:
    path = tmp_path / name
    image.save(path, **save_options)
    return read_image_file(path)


def test_a_dark_digit_on_transparency_reads_as_that_digit(mnist_slice, tmp_path):
    digit = mnist_slice.x_test[0]
    black_on_white = _converted(tmp_path, "plain.png", Image.fromarray(255 - digit))
    rgba = np.zeros((*digit.shape, 4), dtype=np.uint8)
    rgba[..., 3] = digit  # black ink, opaque where the digit is, transparent elsewhere
    on_transparency = _converted(tmp_path, "alpha.png", Image.fromarray(rgba, "RGBA"))
    assert on_transparency.max() > 0
    assert np.abs(on_transparency.astype(int) - black_on_white.astype(int)).max() <= 1


def test_exif_orientation_is_applied(mnist_slice, tmp_path):
    upright = Image.fromarray(255 - mnist_slice.x_test[0]).resize((56, 56))
    expected = _converted(tmp_path, "upright.png", upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    assert not np.array_equal(_converted(tmp_path, "raw.png", stored), expected)
    np.testing.assert_array_equal(_converted(tmp_path, "rotated.png", stored, exif=exif), expected)


def test_sixteen_bit_images_are_scaled_not_clipped(mnist_slice, tmp_path):
    digit = mnist_slice.x_test[0]
    eight_bit = _converted(tmp_path, "eight.png", Image.fromarray(digit))
    sixteen = Image.fromarray(digit.astype(np.uint16) * 257)
    np.testing.assert_array_equal(_converted(tmp_path, "sixteen.png", sixteen), eight_bit)
