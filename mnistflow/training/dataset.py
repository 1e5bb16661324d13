"""tf.data input for training: a seeded shuffle per epoch, batched, prefetched.

Each epoch's order is a stateless function of (seed, epoch number), not of how many epochs this
process has already run, so a run resumed at epoch k sees exactly the batches an uninterrupted
run would have seen from epoch k on.
"""

from __future__ import annotations

import math

import numpy as np


def steps_per_epoch(images: int, batch_size: int) -> int:
    return math.ceil(images / batch_size)


def training_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int
):
    """Batches for epochs first_epoch..epochs-1, one seeded permutation of the data per epoch.

    Keras keeps one iterator across epochs when `steps_per_epoch` is given, so the epochs are
    laid end to end here and fit() is called with steps_per_epoch = ceil(len(x) / batch_size).
    """
    import tensorflow as tf

    # The prepared arrays are already in memory: index them with batches of positions rather
    # than copying them into a shuffle buffer.
    images = tf.constant(x)
    labels = tf.constant(y)
    count = len(x)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(epoch_batches)
        .map(
            lambda positions: (tf.gather(images, positions), tf.gather(labels, positions)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def evaluation_dataset(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Fixed-order batches, cached after the first pass (validation data is small)."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(batch_size)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )
