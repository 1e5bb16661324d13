"""The three tutorial models — softmax regression, one-hidden-layer MLP, small CNN — from params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Named so exported graphs (ONNX) have a stable, documented input name.
INPUT_NAME = "image"


@dataclass(frozen=True)
class ModelParams:
    architecture: Literal["cnn", "mlp", "softmax"] = "cnn"
    conv_filters: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    pool_size: int = 2
    conv_dropout_rate: float = 0.25
    dense_units: int = 128
    dense_dropout_rate: float = 0.5


def build_model(input_shape: tuple[int, ...], num_classes: int, params: ModelParams):
    """Return an uncompiled keras.Model for `params.architecture`."""
    # Imported here so that reading params does not load TensorFlow.
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    features = inputs
    if params.architecture == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"the CNN needs (28, 28, 1) images, got input shape {input_shape}")
        for filters in params.conv_filters:
            features = layers.Conv2D(filters, params.kernel_size, activation="relu")(features)
        features = layers.MaxPooling2D(pool_size=params.pool_size)(features)
        features = layers.Dropout(params.conv_dropout_rate)(features)
        features = layers.Flatten()(features)
        features = layers.Dense(params.dense_units, activation="relu")(features)
        features = layers.Dropout(params.dense_dropout_rate)(features)
    elif params.architecture == "mlp":
        features = layers.Flatten()(features)
        features = layers.Dense(params.dense_units, activation="relu")(features)
        features = layers.Dropout(params.dense_dropout_rate)(features)
    elif params.architecture == "softmax":
        features = layers.Flatten()(features)
    else:
        raise ValueError(f"unknown architecture {params.architecture!r}")
    # float32 output keeps softmax and the loss stable under a mixed-precision policy.
    outputs = layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(features)
    return keras.Model(inputs, outputs, name=f"mnist_{params.architecture}")
