from __future__ import annotations

import numpy as np
import pytest

from mnistflow.data.normalization import Normalization
from mnistflow.data.prepared import load_prepared, prepare, save_prepared, split_indices
from mnistflow.errors import PipelineInputError
from mnistflow.params import PrepareParams, parse_params
from mnistflow.training.input_shapes import input_shape_for


@pytest.fixture(scope="module")
def raw(mnist_slice):
    return mnist_slice.as_npz_dict()


def test_image_layout_scaled_and_one_hot(raw):
    data, normalization = prepare(raw, PrepareParams(validation_fraction=0.2, seed=1), (28, 28, 1))
    assert normalization == Normalization(kind="scale", offset=0.0, scale=255.0)
    assert data.train.x.shape == (2400, 28, 28, 1)
    assert data.validation.x.shape == (600, 28, 28, 1)
    assert data.test.x.shape == (1000, 28, 28, 1)
    for split in (data.train, data.validation, data.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.float32
        assert split.x.min() == 0.0 and split.x.max() == 1.0
        assert split.y.shape[1] == 10
        np.testing.assert_array_equal(split.y.sum(axis=1), 1.0)
    np.testing.assert_array_equal(data.test.y.argmax(axis=1), raw["y_test"])
    np.testing.assert_allclose(data.test.x[..., 0] * 255, raw["x_test"], atol=1e-4)


def test_each_model_gets_the_input_shape_it_declares(raw):
    assert input_shape_for("mlp") == (784,)
    assert input_shape_for("softmax") == (784,)
    assert input_shape_for("cnn") == (28, 28, 1)
    data, _ = prepare(raw, PrepareParams(), input_shape_for("mlp"))
    assert data.train.x.shape[1:] == (784,)


def _rows(images):
    return {row.tobytes() for row in images.reshape(len(images), -1)}


def test_split_is_seeded_disjoint_and_complete(raw):
    params = PrepareParams(validation_fraction=0.1, seed=7)
    (first, _), (again, _) = prepare(raw, params, (784,)), prepare(raw, params, (784,))
    np.testing.assert_array_equal(first.validation.x, again.validation.x)
    other_seed, _ = prepare(raw, PrepareParams(validation_fraction=0.1, seed=8), (784,))
    assert not np.array_equal(first.validation.x, other_seed.validation.x)
    train_rows, validation_rows = _rows(first.train.x), _rows(first.validation.x)
    assert not train_rows & validation_rows
    assert len(first.train.x) + len(first.validation.x) == len(raw["x_train"])


def test_caps_for_quick_runs(raw):
    data, _ = prepare(raw, PrepareParams(max_train_images=500, max_test_images=100), (28, 28, 1))
    assert len(data.train.x) + len(data.validation.x) == 500
    assert len(data.test.x) == 100


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_bad_validation_fraction(fraction):
    with pytest.raises(PipelineInputError, match="prepare.validation_fraction"):
        parse_params({"prepare": {"validation_fraction": fraction}})


def test_a_split_left_empty_is_named(raw):
    with pytest.raises(PipelineInputError, match="empty training or validation split"):
        prepare(raw, PrepareParams(max_train_images=3, validation_fraction=0.1), (784,))


def test_unknown_model_is_named():
    with pytest.raises(PipelineInputError, match="model.name.*'resnet'"):
        parse_params({"model": {"name": "resnet"}})


def test_save_and_load_round_trip_byte_identical(raw, tmp_path):
    data, _ = prepare(raw, PrepareParams(max_train_images=300, max_test_images=50), (28, 28, 1))
    save_prepared(data, tmp_path / "a")
    save_prepared(data, tmp_path / "b")
    for name in ("train.npz", "validation.npz", "test.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    loaded = load_prepared(tmp_path / "a")
    np.testing.assert_array_equal(loaded.validation.y, data.validation.y)
    # Replacing an existing output leaves no temporary folders behind.
    save_prepared(data, tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_standardize_is_fitted_on_the_training_split_only(raw, tmp_path):
    params = PrepareParams(normalization="standardize", validation_fraction=0.2, seed=3)
    data, normalization = prepare(raw, params, (784,))
    assert normalization.kind == "standardize"
    # Fitted on the training split's pixels, not on validation or test images.
    train_index, _ = split_indices(len(raw["x_train"]), params)
    assert normalization.offset == pytest.approx(raw["x_train"][train_index].mean())
    assert normalization.scale == pytest.approx(raw["x_train"][train_index].std())
    assert abs(float(data.train.x.mean())) < 1e-4
    assert abs(float(data.train.x.std()) - 1.0) < 1e-3
    # The same object inverts it, for pictures of the data.
    np.testing.assert_allclose(
        normalization.invert(data.test.x[:5]), raw["x_test"][:5].reshape(5, 784), atol=1e-3
    )
    normalization.save(tmp_path / "normalization.json")
    assert Normalization.load(tmp_path / "normalization.json") == normalization


def test_a_broken_normalization_file_is_named(tmp_path):
    path = tmp_path / "normalization.json"
    for content, message in [
        ('{"kind": "scale", "offset": 0.0}', "expected a JSON object with kind, offset and scale"),
        ('{"kind": "minmax", "offset": 0, "scale": 1}', "kind 'minmax'; expected scale or"),
        ('{"kind": "scale", "offset": 0, "scale": "x"}', "scale 'x'; expected a number"),
        ('{"kind": "scale", "offset": 0, "scale": 0}', "scale 0; expected > 0"),
    ]:
        path.write_text(content)
        with pytest.raises(PipelineInputError, match=f"{path}: {message}"):
            Normalization.load(path)
