"""The tutorials' model zoo — softmax regression, MLPs, the small CNN — built from params."""

from __future__ import annotations

from mnistflow.constants import INPUT_NAME, OUTPUT_NAME
from mnistflow.params import CnnBnParams, CnnParams, MlpParams, ModelParams
from mnistflow.training.input_shapes import input_shape_for

BATCH_NORM_MOMENTUM = 0.9


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


def cnn_bn_features(inputs, params: CnnBnParams):
    """Conv-BN-ReLU blocks with pooling, then Dense-BN-ReLU-Dropout. Convolutions before a
    BatchNormalization carry no bias (its offset takes that role)."""
    from keras import layers

    def normalized(features):
        # Momentum 0.9 rather than Keras' 0.99: the moving statistics the exported model
        # infers with settle within ~50 steps, so short runs (a small slice, a few epochs)
        # evaluate with the statistics they trained with.
        return layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(features)

    features = inputs
    for filters in params.block_filters:
        for _ in range(params.convs_per_block):
            features = layers.Conv2D(filters, params.kernel_size, use_bias=False)(features)
            features = normalized(features)
            features = layers.Activation("relu")(features)
        features = layers.MaxPooling2D(pool_size=2)(features)
    features = layers.Flatten()(features)
    features = layers.Dense(params.dense_units, use_bias=False)(features)
    features = normalized(features)
    features = layers.Activation("relu")(features)
    return layers.Dropout(params.dropout_rate)(features)


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
    elif params.name == "cnn_bn":
        features = cnn_bn_features(inputs, params.cnn_bn)
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


def _float32_policies(config):
    """`config` with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        # Keras has called the class DTypePolicy and FloatDTypePolicy; the name tells.
        inner = config.get("config")
        if (
            str(config.get("class_name", "")).endswith("DTypePolicy")
            and isinstance(inner, dict)
            and str(inner.get("name", "")).startswith("mixed_")
        ):
            return {**config, "config": {**inner, "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(item) for item in config]
    return config


def float32_copy(model):
    """The same model, weights and compilation computing in float32.

    Mixed precision is a training device: the variables are float32 throughout, only the
    arithmetic is bf16/fp16. The saved model computes in float32, so evaluate measures what
    export ships (onnxruntime has no bf16 convolutions on CPUs) and the parity gate compares
    like with like."""
    import keras

    if not any(
        getattr(layer.dtype_policy, "name", "float32").startswith("mixed_")
        for layer in model.layers
    ):
        return model
    # Layers that name no policy (the input layer) take the global one: float32 here.
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = keras.Model.from_config(_float32_policies(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    copy.set_weights(model.get_weights())
    if model.compiled:
        # Compiled like the original, optimizer state included, so the saved file loads ready
        # for evaluate() or further training, as a float32 run's does.
        copy.compile_from_config(model.get_compile_config())
        for target, source in zip(copy.optimizer.variables, model.optimizer.variables, strict=True):
            target.assign(source)
    return copy
