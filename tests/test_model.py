from __future__ import annotations

import pytest

from mnistflow.constants import INPUT_NAME
from mnistflow.errors import PipelineInputError
from mnistflow.params import ModelParams, parse_params
from mnistflow.training.input_shapes import input_shape_for
from mnistflow.training.models import build_model


def test_default_is_the_tutorial_cnn():
    model = build_model((28, 28, 1), 10, ModelParams())
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    # The Keras mnist_cnn example's parameter count.
    assert model.count_params() == 1_199_882
    assert model.inputs[0].name == INPUT_NAME
    assert model.output_shape == (None, 10)


def test_softmax_regression_is_one_dense_layer():
    model = build_model((784,), 10, ModelParams(name="softmax"))
    assert model.count_params() == 784 * 10 + 10
    assert [layer.__class__.__name__ for layer in model.layers] == ["InputLayer", "Dense"]


def test_mlp_defaults_to_the_100_sigmoid_tutorial_net():
    model = build_model((784,), 10, ModelParams(name="mlp"))
    hidden = model.layers[1]
    assert hidden.units == 100 and hidden.activation.__name__ == "sigmoid"
    assert model.count_params() == 784 * 100 + 100 + 100 * 10 + 10


def test_mlp_12_8_relu_from_params():
    mlp = {"hidden_units": [12, 8], "hidden_activations": ["relu", "relu"]}
    params = parse_params({"model": {"name": "mlp", "mlp": mlp}}).model
    model = build_model(input_shape_for("mlp"), 10, params)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in dense] == [12, 8, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]


def test_unknown_activation_is_refused_at_load_time():
    with pytest.raises(PipelineInputError, match=r"model\.mlp\.hidden_activations\[0\].*'swishy'"):
        parse_params({"model": {"mlp": {"hidden_activations": ["swishy"]}}})


@pytest.mark.parametrize("name", ["cnn", "mlp", "softmax"])
def test_each_model_takes_the_shape_it_declares(name):
    model = build_model(input_shape_for(name), 10, ModelParams(name=name))
    assert tuple(model.input_shape[1:]) == input_shape_for(name)


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(28, 28, 1\)"):
        build_model((784,), 10, ModelParams())
