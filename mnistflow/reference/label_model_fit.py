"""The cross-validated label model of a reference: K small MLPs, each trained without a fold.

Fitted when a reference is accepted and no released model of that data exists
(`mnistflow.reference.acceptance`); validate then scores each accepted training image with the MLP
that never saw it (`mnistflow.reference.label_quality.FoldModels`). An MLP, not the CNN: a few
seconds per fold here, about 97.5 % accurate on MNIST, and its forward pass is two numpy matmuls, so
validate needs neither TensorFlow nor an exported graph. Kept outside mnistflow/training/, which the
train stage depends on as a whole: accepting a reference must not re-run training.
"""

from __future__ import annotations

import logging

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.data.pixels import unit_floats
from mnistflow.reference.label_quality import FoldModels, exact_hashes

logger = logging.getLogger(__name__)


def fit_fold_models(
    images: np.ndarray,
    labels: np.ndarray,
    folds: int = 3,
    hidden_units: int = 128,
    epochs: int = 5,
    seed: int = 0,
) -> FoldModels:
    """K MLPs, fold k trained on every image not in fold k (folds drawn with `seed`)."""
    import keras

    from mnistflow.training.optimization import seed_everything

    seed_everything(seed)
    inputs = unit_floats(images).reshape(len(images), -1)
    targets = np.asarray(labels).astype(np.int64)
    assignment = np.random.default_rng(seed).permutation(len(images)) % folds
    fitted = []
    for fold in range(folds):
        train = assignment != fold
        model = keras.Sequential(
            [
                keras.Input((inputs.shape[1],)),
                keras.layers.Dense(hidden_units, activation="relu"),
                keras.layers.Dense(NUM_CLASSES, activation="softmax"),
            ]
        )
        model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        history = model.fit(
            inputs[train],
            targets[train],
            batch_size=128,
            epochs=epochs,
            shuffle=True,
            verbose=0,
            validation_data=(inputs[~train], targets[~train]),
        )
        logger.info(
            "label model fold %d of %d: held-out accuracy %.4f",
            fold + 1,
            folds,
            history.history["val_accuracy"][-1],
        )
        fitted.append(
            [
                (layer.kernel.numpy().astype(np.float32), layer.bias.numpy().astype(np.float32))
                for layer in model.layers
            ]
        )
    hashes = exact_hashes(images)
    order = np.argsort(hashes, kind="stable")
    return FoldModels(fitted, hashes[order], assignment[order].astype(np.int8))
