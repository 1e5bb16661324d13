from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnistflow.errors import PipelineInputError
from mnistflow.serving.images import mnist_style
from mnistflow.serving.inputs import read_inputs
from tests.test_mnist_sources import write_idx


def test_arrays_in_every_accepted_layout(tmp_path, mnist_slice):
    images = mnist_slice.x_test[:10]
    np.save(tmp_path / "flat.npy", images.reshape(10, 784))
    np.save(tmp_path / "channel.npy", images[..., np.newaxis])
    np.savez(tmp_path / "batch.npz", x=images)
    write_idx(tmp_path / "images-idx3-ubyte.gz", images, compress=True)
    batch = read_inputs(
        [
            tmp_path / name
            for name in ("flat.npy", "channel.npy", "batch.npz", "images-idx3-ubyte.gz")
        ]
    )
    assert batch.images.shape == (40, 28, 28)
    for part in range(4):
        np.testing.assert_array_equal(batch.images[part * 10 : part * 10 + 10], images)
    assert batch.sources[0] == f"{tmp_path / 'flat.npy'}[0]"
    assert batch.errors == []


def test_wrong_shape_is_quarantined_naming_file_and_shapes(tmp_path, mnist_slice):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((5, 32, 32), dtype=np.uint8))
    np.save(tmp_path / "good.npy", mnist_slice.x_test[:3])
    batch = read_inputs([path, tmp_path / "good.npy"])
    assert len(batch.images) == 3
    [(source, message)] = batch.errors
    assert source == str(path)
    assert str(path) in message and "(5, 32, 32)" in message and "(N, 784)" in message


def test_a_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(PipelineInputError, match="no such file or folder"):
        read_inputs([tmp_path / "absent.npy"])


def test_images_converted_the_mnist_way(tmp_path, mnist_slice):
    digit = mnist_slice.x_test[0]
    # Dark ink on a light, larger, colour canvas, as a photo or scan would be.
    canvas = np.full((90, 70), 255, dtype=np.uint8)
    canvas[10:66, 5:61] = 255 - np.kron(digit, np.ones((2, 2), dtype=np.uint8))
    Image.fromarray(canvas).convert("RGB").save(tmp_path / "digit.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    batch = read_inputs([tmp_path])
    assert batch.images.shape == (1, 28, 28) and batch.images.dtype == np.uint8
    assert sorted(source.rsplit("/", 1)[-1] for source, _ in batch.errors) == [
        "broken.png",
        "empty.jpg",
    ]
    converted = batch.images[0].astype(np.float64)
    # Light digit on dark background, fitted to 20 pixels, centred by mass.
    assert converted[0].sum() == 0 and converted[:, 0].sum() == 0
    rows, cols = np.nonzero(converted)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21
    ys, xs = np.indices(converted.shape)
    centre = ((ys * converted).sum() / converted.sum(), (xs * converted).sum() / converted.sum())
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5
    # Close to the original MNIST digit it was made from.
    correlation = np.corrcoef(converted.ravel(), digit.astype(np.float64).ravel())[0, 1]
    assert correlation > 0.8


def test_blank_image_stays_blank():
    assert mnist_style(Image.new("L", (40, 40), color=255)).max() == 0


def test_a_large_frame_is_reduced_before_float_work_and_reads_as_the_same_digit(
    tmp_path, mnist_slice
):
    digit = mnist_slice.x_test[0]
    small = tmp_path / "small.png"
    Image.fromarray(np.kron(digit, np.ones((10, 10), dtype=np.uint8))).save(small)
    large = tmp_path / "large.png"
    # 3,360×3,360: over WORKING_SIDE, so box-reduced by 4 before any float copy; rotated and
    # tagged with EXIF orientation 6, which must be undone on the reduced frame.
    canvas = Image.fromarray(np.kron(digit, np.ones((120, 120), dtype=np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6
    canvas.transpose(Image.Transpose.ROTATE_90).save(large, exif=exif)
    batch = read_inputs([small, large])
    assert batch.errors == []
    difference = np.abs(batch.images[0].astype(int) - batch.images[1].astype(int))
    assert difference.mean() < 4, difference.mean()
    assert np.corrcoef(batch.images[1].ravel(), digit.ravel())[0, 1] > 0.9
