"""Training: model zoo, tf.data input, the training loop, checkpoints, devices."""
