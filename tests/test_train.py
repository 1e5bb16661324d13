from __future__ import annotations

import numpy as np
import pytest

from stages.keras_io import save_model_reproducibly
from stages.model import ModelParams, build_model
from stages.prepare import PrepareParams, prepare
from stages.train import TrainParams, history_csv, make_keep_best_callback, train

QUICK = TrainParams(epochs=1, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def small_data(mnist_slice):
    params = PrepareParams(max_train_images=1200, max_test_images=300)
    return prepare(mnist_slice.as_npz_dict(), params, "image")


def test_train_learns_and_reports(small_data):
    result = train(small_data, ModelParams(), TrainParams(epochs=2, batch_size=64, device="cpu"))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert set(result.history[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.best_epoch in (1, 2)
    assert result.plan.device == "cpu"
    assert result.images_per_second > 0
    # Even 1,080 images and two epochs beat chance (10 %) by far.
    assert result.history[-1]["val_accuracy"] > 0.6
    lines = history_csv(result.history).splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy" and len(lines) == 3


def test_same_seed_same_weights(small_data):
    first = train(small_data, ModelParams(), QUICK).model.get_weights()
    second = train(small_data, ModelParams(), QUICK).model.get_weights()
    for left, right in zip(first, second, strict=True):
        np.testing.assert_array_equal(left, right)
    other = train(small_data, ModelParams(), TrainParams(epochs=1, batch_size=64, seed=3))
    assert not np.array_equal(first[0], other.model.get_weights()[0])


def test_best_epoch_weights_are_restored():
    model = build_model((784,), 10, ModelParams(architecture="softmax"))
    keep_best = make_keep_best_callback()
    keep_best.set_model(model)
    snapshots = []
    for epoch, val_accuracy in enumerate([0.80, 0.95, 0.90]):
        model.set_weights([np.full_like(w, epoch + 1.0) for w in model.get_weights()])
        snapshots.append(model.get_weights())
        keep_best.on_epoch_end(epoch, {"val_accuracy": val_accuracy})
    keep_best.on_train_end()
    assert keep_best.best_epoch == 2
    for restored, expected in zip(model.get_weights(), snapshots[1], strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_saved_model_is_byte_reproducible_and_loads(small_data, tmp_path):
    import keras

    model = train(small_data, ModelParams(), QUICK).model
    save_model_reproducibly(model, tmp_path / "a.keras")
    save_model_reproducibly(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.models.load_model(tmp_path / "a.keras")
    np.testing.assert_allclose(
        loaded.predict(small_data.test.x, verbose=0),
        model.predict(small_data.test.x, verbose=0),
        atol=1e-6,
    )
