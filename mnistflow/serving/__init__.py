"""Prediction time, outside the DVC pipeline: reading inputs (arrays streamed, images the
MNIST way, every file quarantined on its own), onnxruntime prediction, the precision served,
the incremental inbox and the batch flow's steps, and what a request may point at."""
