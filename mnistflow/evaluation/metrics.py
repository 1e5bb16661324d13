"""Test-set metrics: accuracy, macro precision/recall/F1, the confusion matrix, predictions."""

from __future__ import annotations

import csv
import io

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.data.prepared import PreparedSplit
from mnistflow.errors import PipelineInputError
from mnistflow.params import EvaluateParams


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (actual, predicted), 1)
    return matrix


def per_class_metrics(
    actual: np.ndarray, predicted: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Support, precision, recall and F1 of each class (a class never predicted scores 0)."""
    matrix = confusion_matrix(actual, predicted, num_classes)
    true_positives = np.diag(matrix).astype(np.float64)
    predicted_counts = matrix.sum(axis=0)
    actual_counts = matrix.sum(axis=1)
    precision = np.divide(
        true_positives, predicted_counts, out=np.zeros(num_classes), where=predicted_counts > 0
    )
    recall = np.divide(
        true_positives, actual_counts, out=np.zeros(num_classes), where=actual_counts > 0
    )
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0
    )
    return {"support": actual_counts, "precision": precision, "recall": recall, "f1": f1}


def classification_metrics(
    actual: np.ndarray, predicted: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall, F1."""
    per_class = per_class_metrics(actual, predicted, num_classes)
    return {
        "accuracy": float(np.mean(np.asarray(actual) == np.asarray(predicted))),
        "precision_macro": float(per_class["precision"].mean()),
        "recall_macro": float(per_class["recall"].mean()),
        "f1_macro": float(per_class["f1"].mean()),
    }


def evaluate(model, test: PreparedSplit, params: EvaluateParams) -> tuple[dict, np.ndarray]:
    """Return (metrics, predicted classes) on the test split."""
    import keras

    if tuple(model.input_shape[1:]) != test.x.shape[1:]:
        raise PipelineInputError(
            f"test images have shape {test.x.shape[1:]} but the model expects "
            f"{tuple(model.input_shape[1:])}; re-run prepare for this architecture"
        )
    probabilities = model.predict(test.x, batch_size=params.batch_size, verbose=0)
    loss = keras.ops.mean(keras.losses.categorical_crossentropy(test.y, probabilities))
    actual = test.y.argmax(axis=1)
    predicted = probabilities.argmax(axis=1)
    metrics = {"loss": float(loss), **classification_metrics(actual, predicted, NUM_CLASSES)}
    return metrics, predicted


def predictions_csv(actual: np.ndarray, predicted: np.ndarray) -> str:
    """actual,predicted per test image: what `dvc plots` draws the confusion matrix from."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows(zip(actual.tolist(), predicted.tolist(), strict=True))
    return buffer.getvalue()
