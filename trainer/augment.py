"""Training augmentation, split by where it runs.

- ``recompress_jpeg_batch``: host side (tf.data, on each image of a batch as it
  is formed, before prefetch). JPEG encode/decode is a CPU-only op, so it
  belongs in the input pipeline where it overlaps with the accelerator's work.
- ``random_flips``: device side (inside the model's train_step, after
  batching). Flips are cheap tensor reversals; running them on the accelerator
  keeps them off the busy host.
"""
from __future__ import annotations

import tensorflow as tf

JPEG_PROBABILITY = 0.5
JPEG_QUALITY_RANGE = (70, 95)  # inclusive, as the seed's random.randint(70, 95)


def jpeg_choices(n, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                 quality_range: tuple[int, int] = JPEG_QUALITY_RANGE) -> tuple[tf.Tensor, tf.Tensor]:
    """For ``n`` images: whether to recompress each (bool [n], with ``probability``) and at which
    quality (int32 [n], uniform over ``quality_range`` inclusive), from one stateless ``seed`` [2]."""
    draws = tf.random.stateless_uniform([n, 2], tf.cast(seed, tf.int64))
    lo, hi = quality_range
    return draws[:, 0] < probability, tf.minimum(lo + tf.cast(draws[:, 1] * (hi - lo + 1), tf.int32), hi)


def _maybe_jpeg(image: tf.Tensor, apply: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    # NOTE: tf.image.adjust_jpeg_quality has only a CPU kernel: this belongs in the host pipeline.
    out = tf.cond(apply, lambda: tf.image.adjust_jpeg_quality(image, quality), lambda: image)
    return tf.ensure_shape(out, image.shape)  # decode_jpeg forgets the static size


def recompress_jpeg(image: tf.Tensor, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                    quality_range: tuple[int, int] = JPEG_QUALITY_RANGE) -> tf.Tensor:
    """With ``probability``, JPEG-compress and decode one uint8 image (H, W, 3) at a quality drawn
    uniformly from ``quality_range`` (inclusive); otherwise return it unchanged.
    ``seed`` is a stateless seed (shape [2] int)."""
    apply, quality = jpeg_choices(1, seed, probability, quality_range)
    return _maybe_jpeg(image, apply[0], quality[0])


def recompress_jpeg_batch(images: tf.Tensor, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                          quality_range: tuple[int, int] = JPEG_QUALITY_RANGE) -> tf.Tensor:
    """``recompress_jpeg`` for each image of a uint8 batch [B, H, W, 3], each with its own coin and
    quality; one stateless ``seed`` [2] for the batch.

    The input pipeline calls this once per batch rather than once per image: a tf.data function
    call costs about 90 core-us on a CPU host, a fifth of the JPEG work it would wrap. With a
    static batch size the images are unrolled (their JPEG branches may run concurrently);
    otherwise a ``map_fn`` loops over them.
    """
    n = images.shape[0]
    apply, quality = jpeg_choices(n if n is not None else tf.shape(images)[0], seed, probability, quality_range)
    if n is None:
        return tf.map_fn(lambda a: _maybe_jpeg(*a), (images, apply, quality),
                         fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))
    return tf.stack([_maybe_jpeg(im, apply[i], quality[i]) for i, im in enumerate(tf.unstack(images, n))])


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
