from __future__ import annotations

import numpy as np
import pytest

from mnistflow.data.prepared import prepare
from mnistflow.errors import PipelineInputError
from mnistflow.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    evaluate,
    predictions_csv,
)
from mnistflow.params import EvaluateParams, ModelParams, PrepareParams, TrainParams
from mnistflow.training.loop import train


def test_metrics_by_hand():
    actual = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    assert confusion_matrix(actual, predicted, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    metrics = classification_metrics(actual, predicted, 3)
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert metrics["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert metrics["f1_macro"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_evaluate_agrees_with_keras(mnist_slice):
    small = PrepareParams(max_train_images=1200, max_test_images=400)
    data, _ = prepare(mnist_slice.as_npz_dict(), small, (28, 28, 1))
    model = train(data, ModelParams(), TrainParams(epochs=1, batch_size=64, device="cpu")).model
    metrics, predicted = evaluate(model, data.test, EvaluateParams(batch_size=128))
    assert set(metrics) == {"accuracy", "loss", "precision_macro", "recall_macro", "f1_macro"}
    keras_results = model.evaluate(data.test.x, data.test.y, verbose=0, return_dict=True)
    assert metrics["accuracy"] == pytest.approx(keras_results["accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(keras_results["loss"], rel=1e-4)
    assert predicted.shape == (400,)
    csv_lines = predictions_csv(data.test.y.argmax(axis=1), predicted).splitlines()
    assert csv_lines[0] == "actual,predicted" and len(csv_lines) == 401

    flat, _ = prepare(mnist_slice.as_npz_dict(), PrepareParams(max_test_images=10), (784,))
    with pytest.raises(PipelineInputError, match="re-run prepare"):
        evaluate(model, flat.test, EvaluateParams())
