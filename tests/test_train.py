from __future__ import annotations

import numpy as np
import pytest

from mnistflow.data.prepared import prepare
from mnistflow.errors import PipelineInputError
from mnistflow.params import (
    EarlyStoppingParams,
    LearningRateScheduleParams,
    ModelParams,
    PrepareParams,
    TrainParams,
    parse_params,
)
from mnistflow.training.callbacks import TrainingProgress
from mnistflow.training.checkpoints import TrainingState
from mnistflow.training.dataset import steps_per_epoch, training_dataset
from mnistflow.training.input_shapes import input_shape_for
from mnistflow.training.loop import train
from mnistflow.training.models import build_model
from mnistflow.training.optimization import learning_rate_at, make_optimizer
from mnistflow.training.saving import save_model_reproducibly

QUICK = TrainParams(epochs=1, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def small_data(mnist_slice):
    params = PrepareParams(max_train_images=1200, max_test_images=300)
    return prepare(mnist_slice.as_npz_dict(), params, input_shape_for("cnn"))[0]


@pytest.fixture(scope="module")
def small_flat_data(mnist_slice):
    params = PrepareParams(max_train_images=3000, max_test_images=300)
    return prepare(mnist_slice.as_npz_dict(), params, input_shape_for("mlp"))[0]


def test_train_learns_and_reports(small_data):
    result = train(small_data, ModelParams(), TrainParams(epochs=2, batch_size=64, device="cpu"))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert set(result.history[0]) >= {
        "loss", "accuracy", "precision", "recall",
        "val_loss", "val_accuracy", "val_precision", "val_recall",
    }  # fmt: skip
    assert result.best_epoch in (1, 2)
    assert result.plan.device == "cpu" and result.global_batch_size == 64
    assert result.images_per_second > 0 and result.resumed_from_epoch == 0
    # Even 1,080 images and two epochs beat chance (10 %) by far.
    assert result.history[-1]["val_accuracy"] > 0.6


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("softmax", {"optimizer": "sgd", "learning_rate": 0.5}),
        ("softmax", {"optimizer": "adam", "learning_rate": 0.01, "loss": "mse"}),
        ("mlp", {"optimizer": "sgd", "learning_rate": 0.5, "momentum": 0.9}),
        ("mlp", {"optimizer": "rmsprop", "learning_rate": 0.001}),
        ("mlp", {"optimizer": "adadelta", "learning_rate": 1.0}),
    ],
)
def test_every_optimizer_and_loss_trains_the_dense_models(small_flat_data, name, overrides):
    params = QUICK.model_copy(update={"epochs": 2, **overrides})
    result = train(small_flat_data, ModelParams(name=name), params)
    assert result.history[-1]["val_accuracy"] > 0.7, result.history


def test_optimizer_settings_come_from_params():
    sgd = make_optimizer(TrainParams(optimizer="sgd", learning_rate=0.05, momentum=0.9))
    assert sgd.__class__.__name__ == "SGD"
    assert float(sgd.learning_rate) == pytest.approx(0.05) and sgd.momentum == 0.9
    adadelta = make_optimizer(TrainParams(optimizer="adadelta", learning_rate=1.0))
    assert float(adadelta.learning_rate) == 1.0


def test_bad_train_params_are_named():
    with pytest.raises(PipelineInputError, match="train: momentum 0.9 applies to sgd.*adam"):
        parse_params({"train": {"optimizer": "adam", "momentum": 0.9}})
    with pytest.raises(PipelineInputError, match="train.learning_rate: expected greater than 0"):
        parse_params({"train": {"learning_rate": 0.0}})
    with pytest.raises(PipelineInputError, match=r"train\.loss.*'hinge'"):
        parse_params({"train": {"loss": "hinge"}})
    with pytest.raises(PipelineInputError, match=r"train\.lr_schedule\.name.*'warmup'"):
        parse_params({"train": {"lr_schedule": {"name": "warmup"}}})
    with pytest.raises(PipelineInputError, match="train: monitor val_accuracy needs 'accuracy'"):
        parse_params({"train": {"metrics": ["precision"]}})


def test_learning_rate_schedules():
    def rates(**schedule):
        params = TrainParams(
            learning_rate=1.0, epochs=5, lr_schedule=LearningRateScheduleParams(**schedule)
        )
        return [learning_rate_at(epoch, params) for epoch in range(5)]

    assert rates() == [1.0] * 5
    assert rates(name="step", decay_rate=0.1, step_epochs=2) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01]
    )
    assert rates(name="exponential", decay_rate=0.5) == pytest.approx([1, 0.5, 0.25, 0.125, 1 / 16])
    cosine = rates(name="cosine", min_learning_rate=0.1)
    assert cosine[0] == 1.0 and cosine[-1] == pytest.approx(0.1) and cosine == sorted(cosine)[::-1]
    one_cycle = rates(name="one_cycle", warmup_epochs=2, min_learning_rate=0.01)
    assert one_cycle[:3] == pytest.approx([0.1, 0.55, 1.0])
    assert one_cycle[2:] == sorted(one_cycle[2:])[::-1] and one_cycle[-1] == pytest.approx(0.01)


def test_schedule_reaches_the_optimizer(small_data):
    params = QUICK.model_copy(
        update={
            "epochs": 2,
            "lr_schedule": LearningRateScheduleParams(name="exponential", decay_rate=0.1),
        }
    )
    result = train(small_data, ModelParams(), params)
    assert [row["learning_rate"] for row in result.history] == pytest.approx([1e-3, 1e-4])


def test_early_stopping_stops_and_restores_the_best_epoch():
    model = build_model((784,), 10, ModelParams(name="softmax"))
    state = TrainingState(fingerprint="test")
    progress = TrainingProgress(
        state, None, monitor="val_accuracy", min_delta=0.0, patience=2, restore_best_weights=True
    )
    progress.set_model(model)
    snapshots = []
    for epoch, val_accuracy in enumerate([0.80, 0.95, 0.90, 0.93]):
        model.set_weights([np.full_like(w, epoch + 1.0) for w in model.get_weights()])
        snapshots.append(model.get_weights())
        progress.on_epoch_end(epoch, {"val_accuracy": val_accuracy, "loss": 1.0})
        if getattr(model, "stop_training", False):
            break
    assert state.stopped_early and state.epochs_done == 4 and state.best_epoch == 2
    progress.on_train_end()
    for restored, expected in zip(model.get_weights(), snapshots[1], strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_early_stopping_from_params_ends_the_run(small_data):
    params = QUICK.model_copy(
        update={
            "epochs": 6,
            "monitor": "val_loss",
            # No improvement can be that large: the run stops after patience + 1 epochs.
            "early_stopping": EarlyStoppingParams(enabled=True, patience=1, min_delta=100.0),
        }
    )
    result = train(small_data, ModelParams(), params)
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1


def test_epoch_order_depends_on_seed_and_epoch_only(small_data):
    x, y = small_data.train.x[:200], small_data.train.y[:200]

    def labels_by_epoch(first_epoch, epochs):
        batches = list(training_dataset(x, y, 50, seed=5, first_epoch=first_epoch, epochs=epochs))
        per_epoch = steps_per_epoch(len(x), 50)
        return [
            np.concatenate([batch[1].numpy() for batch in batches[i : i + per_epoch]])
            for i in range(0, len(batches), per_epoch)
        ]

    from_start = labels_by_epoch(0, 3)
    resumed = labels_by_epoch(1, 3)
    assert len(from_start) == 3 and len(resumed) == 2
    for whole, again in zip(from_start[1:], resumed, strict=True):
        np.testing.assert_array_equal(whole, again)
    # Each epoch is a permutation of all the data, and epochs differ in order.
    assert sorted(map(bytes, from_start[0])) == sorted(map(bytes, y))
    assert not np.array_equal(from_start[0], from_start[1])


def test_augmentation_is_stateless_per_batch_and_keeps_labels(small_data):
    from mnistflow.params import AugmentationParams

    x, y = small_data.train.x[:200], small_data.train.y[:200]
    shifts = AugmentationParams(enabled=True, max_shift=2.0, max_rotation=10.0)

    def batches(first_epoch, augmentation):
        return list(training_dataset(x, y, 50, 5, first_epoch, 3, augmentation))

    plain, moved, resumed = batches(0, None), batches(0, shifts), batches(1, shifts)
    for (plain_x, plain_y), (moved_x, moved_y) in zip(plain, moved, strict=True):
        np.testing.assert_array_equal(plain_y.numpy(), moved_y.numpy())
        difference = np.abs(plain_x.numpy() - moved_x.numpy())
        assert difference.max() > 0.3  # the digits moved ...
        # ... but stayed digits: about as much ink, still on a dark background.
        assert abs(moved_x.numpy().mean() - plain_x.numpy().mean()) < 0.02
        assert moved_x.numpy()[:, 0, 0].max() < 0.05
    # A resumed run sees the very batches, augmentation included, of an uninterrupted one.
    per_epoch = steps_per_epoch(len(x), 50)
    for whole, again in zip(moved[per_epoch:], resumed, strict=True):
        np.testing.assert_array_equal(whole[0].numpy(), again[0].numpy())
    again = batches(0, shifts)
    np.testing.assert_array_equal(again[0][0].numpy(), moved[0][0].numpy())
    # Every batch draws its own transforms: one image repeated moves differently in each.
    repeated = np.repeat(x[:1], 100, axis=0)
    twice = list(training_dataset(repeated, y[:100], 50, 5, 0, 1, shifts))
    assert not np.array_equal(twice[0][0].numpy()[0], twice[1][0].numpy()[0])


def test_the_batch_norm_cnn_trains_and_saves_in_float32(small_data, tmp_path):
    import keras

    from mnistflow.params import AugmentationParams

    params = QUICK.model_copy(
        update={
            "epochs": 3,
            "batch_size": 32,
            "mixed_precision": "bf16",
            "augmentation": AugmentationParams(enabled=True),
        }
    )
    result = train(small_data, ModelParams(name="cnn_bn"), params)
    assert result.plan.precision_policy == "mixed_bfloat16"
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in result.model.layers)
    assert {layer.dtype_policy.name for layer in result.model.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # put back after training
    assert result.history[-1]["val_accuracy"] > 0.8  # 3 epochs on 1,080 images
    save_model_reproducibly(result.model, tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    # Compiled as trained (loss, metrics, optimizer state), ready for evaluate().
    assert loaded.compiled and len(loaded.optimizer.variables) > 1
    scores = loaded.evaluate(small_data.test.x[:50], small_data.test.y[:50], verbose=0)
    assert np.isfinite(scores).all()
    probabilities = loaded.predict(small_data.test.x[:50], verbose=0)
    np.testing.assert_allclose(
        probabilities, result.model.predict(small_data.test.x[:50], verbose=0), atol=1e-6
    )


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
