"""What every layer agrees on about MNIST-style data: image size, classes, pixel range."""

from __future__ import annotations

IMAGE_SIZE = 28
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(digit) for digit in range(NUM_CLASSES))
# Stored and served pixels are uint8 0..PIXEL_MAX (light digit on dark background).
PIXEL_MAX = 255

# Names of the exported model's input and output (ONNX graph and Keras input layer).
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# ONNX metadata key of a model the export gates refused that was written only because no model
# existed yet (stages/export.py); serving refuses a model carrying it.
REFUSED_KEY = "gates_refused"
# ONNX metadata keys of the int8 model: its precision, and the sha256 of the float32 model it
# was quantized from (mnistflow.release.quantization writes them, serving reads them).
PRECISION_KEY = "precision"
QUANTIZED_FROM_KEY = "quantized_from_sha256"
