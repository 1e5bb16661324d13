"""The input layout each model family takes: flat pixels, or an image with one channel.

Prepare shapes the data from this, so switching `model.name` re-runs prepare and train and
nothing else has to change. Kept apart from the model zoo so that prepare depends on the
layouts only, not on how each model is built.
"""

from __future__ import annotations

from mnistflow.constants import IMAGE_SIZE, PIXELS_PER_IMAGE
from mnistflow.params import ModelName

INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "softmax": (PIXELS_PER_IMAGE,),
    "mlp": (PIXELS_PER_IMAGE,),
    "cnn": (IMAGE_SIZE, IMAGE_SIZE, 1),
    "cnn_bn": (IMAGE_SIZE, IMAGE_SIZE, 1),
}


def input_shape_for(name: ModelName) -> tuple[int, ...]:
    """The per-image input shape model `name` takes."""
    if name not in INPUT_SHAPES:
        raise ValueError(f"model.name: {name!r}; expected one of {', '.join(INPUT_SHAPES)}")
    return INPUT_SHAPES[name]
