"""Training augmentation, split by where it runs.

- ``recompress_jpeg_batch``: host side (tf.data, on each image of a batch as it
  is formed, before prefetch). JPEG encode/decode is a CPU-only op, so it
  belongs in the input pipeline where it overlaps with the accelerator's work.
- ``random_flips``: device side (inside the model's train_step, after
  batching and after ``preprocessing.model_input.upscale`` has enlarged images
  stored below the model size). Flips are cheap tensor reversals; running them
  on the accelerator keeps them off the busy host.
"""
from __future__ import annotations

import tensorflow as tf

from preprocessing import model_input

JPEG_PROBABILITY = 0.5
JPEG_QUALITY_RANGE = (70, 95)  # inclusive, as the seed's random.randint(70, 95)


def jpeg_choices(n, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                 quality_range: tuple[int, int] = JPEG_QUALITY_RANGE) -> tuple[tf.Tensor, tf.Tensor]:
    """For ``n`` images: whether to recompress each (bool [n], with ``probability``) and at which
    quality (int32 [n], uniform over ``quality_range`` inclusive), from one stateless ``seed`` [2]."""
    draws = tf.random.stateless_uniform([n, 2], tf.cast(seed, tf.int64))
    lo, hi = quality_range
    return draws[:, 0] < probability, tf.minimum(lo + tf.cast(draws[:, 1] * (hi - lo + 1), tf.int32), hi)


def _jpeg(image: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    # NOTE: tf.image.adjust_jpeg_quality has only a CPU kernel: this belongs in the host pipeline.
    return tf.image.adjust_jpeg_quality(image, quality)


def recompress_jpeg(image: tf.Tensor, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                    quality_range: tuple[int, int] = JPEG_QUALITY_RANGE) -> tf.Tensor:
    """With ``probability``, JPEG-compress and decode one uint8 image (H, W, 3) at a quality drawn
    uniformly from ``quality_range`` (inclusive); otherwise return it unchanged.
    ``seed`` is a stateless seed (shape [2] int)."""
    apply, quality = jpeg_choices(1, seed, probability, quality_range)
    out = tf.cond(apply[0], lambda: _jpeg(image, quality[0]), lambda: image)
    return tf.ensure_shape(out, image.shape)  # decode_jpeg forgets the static size


def recompress_jpeg_batch(images: tf.Tensor, seed: tf.Tensor, probability: float = JPEG_PROBABILITY,
                          quality_range: tuple[int, int] = JPEG_QUALITY_RANGE,
                          sizes: tf.Tensor | None = None) -> tf.Tensor:
    """``recompress_jpeg`` for each image of a uint8 batch [B, H, W, 3], each with its own coin and
    quality; one stateless ``seed`` [2] for the batch. With ``sizes`` [B, 2] and a batch padded
    at the bottom and right to a static square size, only each image's valid (height, width)
    part is recompressed: JPEG's 8 x 8 blocks sit on the stored image's own grid, and the cost is
    that of its own size. The padding stays zeros. (Batches without a static size, e.g. of one
    native-size image, are recompressed whole.)

    The input pipeline calls this once per batch rather than once per image: a tf.data function
    call costs about 90 core-us on a CPU host. Only the images whose coin came up are touched
    (gathered, recompressed in a loop, scattered back): per-image conditionals and unstacking and
    restacking the batch cost 15% of the throughput here.
    """
    n = tf.shape(images)[0]
    apply, quality = jpeg_choices(n, seed, probability, quality_range)
    chosen = tf.cast(tf.where(apply)[:, 0], tf.int32)
    side = images.shape[1]
    padded = sizes is not None and side is not None and side == images.shape[2]
    sizes = tf.cast(sizes, tf.int32) if padded else None

    def one(i):
        if not padded:
            return _jpeg(images[i], quality[i])
        return model_input.pad_to(_jpeg(images[i, :sizes[i, 0], :sizes[i, 1]], quality[i]), side)

    def recompressed():
        return tf.map_fn(one, chosen, fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))

    if images.shape[1:].is_fully_defined():
        done = recompressed()
    else:  # map_fn cannot stack zero results of an unknown size: nothing chosen, nothing to do
        done = tf.cond(tf.size(chosen) > 0, recompressed, lambda: tf.zeros_like(images[:0]))
    return tf.ensure_shape(tf.tensor_scatter_nd_update(images, chosen[:, None], done), images.shape)


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
