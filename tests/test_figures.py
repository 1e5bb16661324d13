from __future__ import annotations

import io

import numpy as np
import pytest

from mnistflow.evaluation.figures import (
    first_layer_kernel,
    first_layer_weights_grid,
    misclassified_grid,
)
from mnistflow.params import ModelParams
from mnistflow.training.models import build_model


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_misclassified_grid_shows_only_the_mistakes(mnist_slice):
    images = mnist_slice.x_test[:100].astype(np.float32) / 255
    actual = mnist_slice.y_test[:100].astype(np.int64)
    predicted = actual.copy()
    predicted[[3, 10, 42]] = (actual[[3, 10, 42]] + 1) % 10
    grid = misclassified_grid(images, actual, predicted, columns=8)
    # Three cells in one row: 3 × (28 × 3 + 4) wide of an 8-column grid.
    assert grid.size[0] == 8 * (28 * 3 + 4)
    assert grid.size[1] == 28 * 3 + 14 + 4
    pixels = np.asarray(grid)
    # Drawn cells hold dark ink; the unused cells of the row stay blank.
    assert pixels[:, : 3 * 88].min() == 0
    assert pixels[:, 3 * 88 :].min() == 255
    assert png_bytes(grid) == png_bytes(misclassified_grid(images, actual, predicted, columns=8))


def test_misclassified_grid_caps_the_count(mnist_slice):
    images = mnist_slice.x_test[:200].astype(np.float32) / 255
    actual = np.zeros(200, dtype=np.int64)
    predicted = np.ones(200, dtype=np.int64)
    grid = misclassified_grid(images, actual, predicted, max_images=16, columns=8)
    assert grid.size[1] == 2 * (28 * 3 + 14 + 4)


def test_first_layer_weights_of_an_mlp_are_28_by_28_pictures():
    model = build_model((784,), 10, ModelParams(name="mlp"))
    kernel = first_layer_kernel(model)
    assert kernel.shape == (784, 100)
    grid = first_layer_weights_grid(kernel)
    assert grid.size == (10 * (28 * 3 + 4), 10 * (28 * 3 + 14 + 4))


def test_first_layer_weights_of_the_cnn_are_its_kernels():
    kernel = first_layer_kernel(build_model((28, 28, 1), 10, ModelParams()))
    assert kernel.shape == (3, 3, 1, 32)
    grid = first_layer_weights_grid(kernel)
    assert grid.size == (8 * (3 * 12 + 4), 4 * (3 * 12 + 14 + 4))


def test_weights_grid_refuses_an_unknown_layer_shape():
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        first_layer_weights_grid(np.zeros((5, 5)))
