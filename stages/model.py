"""The tutorials' model zoo — softmax regression, MLPs, the small CNN — built from params.

Each model declares the input shape it needs (`input_shape_for`); prepare shapes the data from
that, so switching `model.name` re-runs prepare and train and nothing else has to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Named so exported graphs (ONNX) have a stable, documented input name.
INPUT_NAME = "image"
IMAGE_SIZE = 28

ModelName = Literal["cnn", "mlp", "softmax"]
Activation = Literal["relu", "sigmoid", "tanh", "elu", "selu", "gelu", "softplus", "linear"]


@dataclass(frozen=True)
class CnnParams:
    """The Keras mnist_cnn example: Conv2D 32 → Conv2D 64 → MaxPool → Dense 128."""

    conv_filters: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    pool_size: int = 2
    conv_dropout_rate: float = 0.25
    dense_units: int = 128
    dense_dropout_rate: float = 0.5


@dataclass(frozen=True)
class MlpParams:
    """Hidden Dense layers; the default is the tutorials' 100-sigmoid net."""

    hidden_units: tuple[int, ...] = (100,)
    hidden_activations: tuple[Activation, ...] = ("sigmoid",)
    dropout_rate: float = 0.0


@dataclass(frozen=True)
class ModelParams:
    name: ModelName = "cnn"
    cnn: CnnParams = field(default_factory=CnnParams)
    mlp: MlpParams = field(default_factory=MlpParams)


def model_name_in(all_params: dict) -> str:
    """`model.name` of a raw params.yaml mapping, for stages that read only that key."""
    return (all_params.get("model") or {}).get("name", ModelParams.name)


def input_shape_for(name: str) -> tuple[int, ...]:
    """The per-image input shape model `name` takes: flat pixels, or an image with a channel."""
    shapes = {
        "softmax": (IMAGE_SIZE * IMAGE_SIZE,),
        "mlp": (IMAGE_SIZE * IMAGE_SIZE,),
        "cnn": (IMAGE_SIZE, IMAGE_SIZE, 1),
    }
    if name not in shapes:
        raise ValueError(f"model.name: {name!r}; expected one of {', '.join(shapes)}")
    return shapes[name]


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
    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    features = inputs
    if params.name == "cnn":
        cnn = params.cnn
        for filters in cnn.conv_filters:
            features = layers.Conv2D(filters, cnn.kernel_size, activation="relu")(features)
        features = layers.MaxPooling2D(pool_size=cnn.pool_size)(features)
        features = layers.Dropout(cnn.conv_dropout_rate)(features)
        features = layers.Flatten()(features)
        features = layers.Dense(cnn.dense_units, activation="relu")(features)
        features = layers.Dropout(cnn.dense_dropout_rate)(features)
    elif params.name == "mlp":
        mlp = params.mlp
        if not mlp.hidden_units or len(mlp.hidden_units) != len(mlp.hidden_activations):
            raise ValueError(
                f"model.mlp: hidden_units {list(mlp.hidden_units)} and hidden_activations "
                f"{list(mlp.hidden_activations)} must be non-empty lists of the same length"
            )
        for units, activation in zip(mlp.hidden_units, mlp.hidden_activations, strict=True):
            features = layers.Dense(units, activation=activation)(features)
            if mlp.dropout_rate > 0:
                features = layers.Dropout(mlp.dropout_rate)(features)
    # softmax: the pixels go straight into the output layer (multinomial logistic regression).
    # float32 output keeps softmax and the loss stable under a mixed-precision policy.
    outputs = layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(features)
    return keras.Model(inputs, outputs, name=f"mnist_{params.name}")
