"""Evaluate stage: test-set metrics, the confusion matrix, and pictures of what went wrong."""

from __future__ import annotations

import argparse
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.atomic import atomic_file, write_json, write_text
from stages.errors import PipelineInputError, run_stage
from stages.figures import first_layer_kernel, first_layer_weights_grid, misclassified_grid
from stages.mnist_sources import NUM_CLASSES
from stages.params import load_section
from stages.prepared_data import PreparedSplit, load_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 1024


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (actual, predicted), 1)
    return matrix


def classification_metrics(
    actual: np.ndarray, predicted: np.ndarray, num_classes: int
) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall, F1 (a class never predicted scores 0)."""
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
    return {
        "accuracy": float(true_positives.sum() / matrix.sum()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows(zip(actual.tolist(), predicted.tolist(), strict=True))
    return buffer.getvalue()


def save_png(target: Path, image) -> None:
    with atomic_file(target) as temporary:
        image.save(temporary, format="PNG", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    parser.add_argument("--predictions", type=Path, default=Path("reports/test_predictions.csv"))
    parser.add_argument("--misclassified", type=Path, default=Path("reports/misclassified.png"))
    parser.add_argument("--weights-image", type=Path, default=Path("reports/first_layer.png"))
    arguments = parser.parse_args()
    import keras

    params = load_section(EvaluateParams, "evaluate", arguments.params)
    if not arguments.model.is_file():
        raise PipelineInputError(f"{arguments.model}: model file not found; run train first")
    model = keras.models.load_model(arguments.model)
    test = load_split(arguments.data, "test")
    metrics, predicted = evaluate(model, test, params)
    write_json(arguments.metrics, metrics)
    actual = test.y.argmax(axis=1)
    write_text(arguments.predictions, predictions_csv(actual, predicted))
    save_png(arguments.misclassified, misclassified_grid(test.x, actual, predicted))
    save_png(arguments.weights_image, first_layer_weights_grid(first_layer_kernel(model)))
    logger.info("test metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_stage(main)
