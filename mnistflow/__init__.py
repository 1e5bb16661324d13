"""mnistflow: a reproducible, orchestrated Keras training pipeline for MNIST.

The library in layers: `data` (sources, checks, normalization, prepared splits), `training`
(model zoo, tf.data input, training loop, checkpoints, devices), `evaluation` (metrics,
figures) and `serving` (ONNX export, gates, input readers, prediction). The DVC stages in
`stages/` and the Prefect flows in `flows/` are thin wiring over it.
"""
