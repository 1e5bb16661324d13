"""The tutorials' model zoo — softmax regression, MLPs, the small CNN — built from params."""

from __future__ import annotations

from mnistflow.constants import INPUT_NAME, OUTPUT_NAME
from mnistflow.params import CnnParams, MlpParams, ModelParams
from mnistflow.training.input_shapes import input_shape_for


def cnn_features(inputs, params: CnnParams):
    """The Keras mnist_cnn example's feature extractor: convolutions, pooling, one Dense."""
    from keras import layers

    features = inputs
    for filters in params.conv_filters:
        features = layers.Conv2D(filters, params.kernel_size, activation="relu")(features)
    features = layers.MaxPooling2D(pool_size=params.pool_size)(features)
    features = layers.Dropout(params.conv_dropout_rate)(features)
    features = layers.Flatten()(features)
    features = layers.Dense(params.dense_units, activation="relu")(features)
    return layers.Dropout(params.dense_dropout_rate)(features)


def mlp_features(inputs, params: MlpParams):
    """Hidden Dense layers, each with its own activation (the params schema pairs them)."""
    from keras import layers

    features = inputs
    for units, activation in zip(params.hidden_units, params.hidden_activations, strict=True):
        features = layers.Dense(units, activation=activation)(features)
        if params.dropout_rate > 0:
            features = layers.Dropout(params.dropout_rate)(features)
    return features


def build_model(input_shape: tuple[int, ...], num_classes: int, params: ModelParams):
    """Return an uncompiled keras.Model for `params.name`."""
    # Imported here so that reading params does not load TensorFlow.
    import keras
    from keras import layers

    expected = input_shape_for(params.name)
    if tuple(input_shape) != expected:
        raise ValueError(
            f"model {params.name!r} takes inputs shaped {expected}, got {tuple(input_shape)}; "
            "re-run the prepare stage for this model"
        )
    # Named so exported graphs have a stable, documented input name.
    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    if params.name == "cnn":
        features = cnn_features(inputs, params.cnn)
    elif params.name == "mlp":
        features = mlp_features(inputs, params.mlp)
    else:
        # softmax: the pixels go straight into the output layer (multinomial logistic regression).
        features = inputs
    # float32 output keeps softmax and the loss stable under a mixed-precision policy.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(
        features
    )
    return keras.Model(inputs, outputs, name=f"mnist_{params.name}")
