"""tf.data input for training: a seeded shuffle per epoch, batched, augmented, prefetched.

Each epoch's order is a stateless function of (seed, epoch number), not of how many epochs this
process has already run, so a run resumed at epoch k sees exactly the batches an uninterrupted
run would have seen from epoch k on. Augmentation (random shifts and rotations) is a stateless
function of (seed, epoch, batch) for the same reason; it lives here, in the input pipeline,
and never in the model, so the exported graph serves unaltered images.
"""

from __future__ import annotations

import math

import numpy as np

from mnistflow.constants import IMAGE_SIZE
from mnistflow.params import AugmentationParams


def steps_per_epoch(images: int, batch_size: int) -> int:
    return math.ceil(images / batch_size)


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    augmentation: AugmentationParams | None = None,
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
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        return batches.map(lambda index, positions: (epoch, index, positions))

    def gather(epoch, index, positions):
        batch = tf.gather(images, positions)
        if augmentation is not None:
            batch_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 1_000_003 + index])
            batch = augmented(batch, augmentation, batch_seed)
        return batch, tf.gather(labels, positions)

    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(epoch_batches)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def augmented(batch, params: AugmentationParams, seed):
    """`batch` (N, 28, 28, 1) or flat (N, 784) with each image shifted by up to
    params.max_shift pixels per axis and rotated by up to params.max_rotation degrees about its
    centre: one affine resampling per image (bilinear; uncovered pixels repeat the nearest edge
    pixel, which is background on MNIST-style images, in whatever normalization)."""
    import tensorflow as tf

    shape = tf.shape(batch)
    images = tf.reshape(batch, (-1, IMAGE_SIZE, IMAGE_SIZE, 1))
    count = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    angle = tf.random.stateless_uniform(
        (count,), seeds[0], -params.max_rotation, params.max_rotation
    ) * (math.pi / 180)
    shift_x = tf.random.stateless_uniform((count,), seeds[1], -params.max_shift, params.max_shift)
    shift_y = tf.random.stateless_uniform((count,), seeds[2], -params.max_shift, params.max_shift)
    # Output pixel (x, y) samples the input at R(angle) · ((x, y) - centre) + centre - shift.
    centre = (IMAGE_SIZE - 1) / 2
    cos, sin = tf.cos(angle), tf.sin(angle)
    transforms = tf.stack(
        [
            cos,
            sin,
            centre - cos * centre - sin * centre - shift_x,
            -sin,
            cos,
            centre + sin * centre - cos * centre - shift_y,
            tf.zeros_like(cos),
            tf.zeros_like(cos),
        ],
        axis=1,
    )
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=[IMAGE_SIZE, IMAGE_SIZE],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    return tf.reshape(moved, shape)


def evaluation_dataset(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Fixed-order batches, cached after the first pass (validation data is small)."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(batch_size)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )
