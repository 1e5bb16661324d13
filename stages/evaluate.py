"""Evaluate stage: test-set metrics, the confusion matrix, and pictures of what went wrong."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistflow.compute.cpu_kernels import apply_cpu_kernels
from mnistflow.compute.keras_loading import load_keras
from mnistflow.constants import PIXEL_MAX
from mnistflow.core.atomic import write_json, write_text
from mnistflow.data.normalization import Normalization
from mnistflow.data.prepared import load_split
from mnistflow.errors import require_file
from mnistflow.evaluation.figures import (
    first_layer_kernel,
    first_layer_weights_grid,
    misclassified_grid,
    save_png,
)
from mnistflow.evaluation.metrics import evaluate, predictions_csv
from mnistflow.orchestration.entrypoints import run_stage
from mnistflow.params import load_params

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--normalization", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--misclassified", type=Path, required=True)
    parser.add_argument("--weights-image", type=Path, required=True)
    arguments = parser.parse_args()
    params = load_params(arguments.params)
    # Before TensorFlow loads: which kernels run is a declared input
    # (mnistflow/compute/cpu_kernels.py).
    apply_cpu_kernels(params)
    require_file(arguments.model)
    keras = load_keras()

    model = keras.models.load_model(arguments.model)
    test = load_split(arguments.data, "test")
    metrics, predicted = evaluate(model, test, params.evaluate)
    write_json(arguments.metrics, metrics)
    actual = test.y.argmax(axis=1)
    write_text(arguments.predictions, predictions_csv(actual, predicted))
    # Pictures show the digits in 0..1, whatever the normalization the model saw.
    shown = Normalization.load(arguments.normalization).invert(test.x) / PIXEL_MAX
    save_png(arguments.misclassified, misclassified_grid(shown, actual, predicted))
    save_png(arguments.weights_image, first_layer_weights_grid(first_layer_kernel(model)))
    logger.info("test metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_stage(main)
