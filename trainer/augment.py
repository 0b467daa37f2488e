"""Training augmentation, split by where it runs.

- ``recompress_jpeg``: host side (tf.data, before batching). JPEG encode/decode
  is a CPU-only op, so it belongs in the input pipeline where it overlaps with
  the accelerator's work.
- ``random_flips``: device side (inside the model's train_step, after
  batching). Flips are cheap tensor reversals; running them on the accelerator
  keeps them off the busy host.
"""
from __future__ import annotations

import tensorflow as tf

JPEG_PROBABILITY = 0.5
JPEG_QUALITY_RANGE = (70, 95)  # inclusive, as the seed's random.randint(70, 95)


def recompress_jpeg(image: tf.Tensor, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                    quality_range: tuple[int, int] = JPEG_QUALITY_RANGE) -> tf.Tensor:
    """With ``probability``, JPEG-compress and decode one uint8 image (H, W, 3) at a quality drawn
    uniformly from ``quality_range`` (inclusive); otherwise return it unchanged.

    ``seed`` is a stateless seed (shape [2] int): the tf.data pipeline draws one per element so
    the choice does not depend on which parallel map thread runs first.
    NOTE: tf.image.adjust_jpeg_quality has only a CPU kernel; call this in the host pipeline.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    apply = tf.random.stateless_uniform([], seeds[0]) < probability
    quality = tf.random.stateless_uniform([], seeds[1], minval=quality_range[0],
                                          maxval=quality_range[1] + 1, dtype=tf.int32)
    out = tf.cond(apply, lambda: tf.image.adjust_jpeg_quality(image, quality), lambda: image)
    return tf.ensure_shape(out, image.shape)  # decode_jpeg forgets the static size


def _flip_decisions(batch: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Two boolean vectors [B]: flip left-right, flip up-down (each with probability 0.5)."""
    if seed is None:
        draws = tf.random.uniform([batch, 2])
    else:
        if isinstance(seed, int):
            seed = (0, seed)
        draws = tf.random.stateless_uniform([batch, 2], seed=tf.cast(seed, tf.int64))
    return draws[:, 0] < 0.5, draws[:, 1] < 0.5


def _where_batch(decision: tf.Tensor, flipped: tf.Tensor, original: tf.Tensor) -> tf.Tensor:
    return tf.where(decision[:, None, None, None], flipped, original)


def random_flips(images: tf.Tensor, masks: tf.Tensor, seed=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Random horizontal and vertical flips of a batch, the same flip for an image and its mask.

    images [B, H, W, C] and masks [B, H, W, K] of any dtype. Each image gets its own two coin
    flips. ``seed``: None (stateful RNG, fresh each step), an int, or a stateless seed of shape
    [2] (e.g. a step-dependent tensor) for reproducible flips.
    """
    images = tf.convert_to_tensor(images)
    masks = tf.convert_to_tensor(masks)
    lr, ud = _flip_decisions(tf.shape(images)[0], seed)
    images = _where_batch(lr, tf.reverse(images, axis=[2]), images)
    masks = _where_batch(lr, tf.reverse(masks, axis=[2]), masks)
    images = _where_batch(ud, tf.reverse(images, axis=[1]), images)
    masks = _where_batch(ud, tf.reverse(masks, axis=[1]), masks)
    return images, masks
