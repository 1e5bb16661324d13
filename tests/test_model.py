from __future__ import annotations

import pytest

from stages.model import INPUT_NAME, ModelParams, build_model


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


@pytest.mark.parametrize(
    ("architecture", "input_shape", "parameters"),
    [("softmax", (784,), 7_850), ("mlp", (784,), 784 * 128 + 128 + 128 * 10 + 10)],
)
def test_dense_tutorials(architecture, input_shape, parameters):
    model = build_model(input_shape, 10, ModelParams(architecture=architecture))
    assert model.count_params() == parameters


def test_cnn_refuses_flat_input():
    with pytest.raises(ValueError, match=r"\(28, 28, 1\)"):
        build_model((784,), 10, ModelParams())
