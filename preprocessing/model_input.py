"""Stored images -> the model's S x S input, for images stored at their own size (TF ops).

The Beam job keeps an image that fits in S x S at its own size
(``preprocessing.images.fits``). Batches carry such images padded at the
bottom and right to S x S with their valid ``sizes`` [B, 2] (height, width),
and ``upscale`` enlarges the valid part to S x S:
- in training on the accelerator, after the host's JPEG recompression
  (the model's train/test steps call it);
- in serving and calibration on the host, one image at a time (``upscale_one``).
Both are this function, so a model sees the same pixels in training and serving.

Images: bilinear with half-pixel centres and clamped borders, the arithmetic
of ``tf.image.resize(..., "bilinear")`` (and of OpenCV's INTER_LINEAR, which
rounds in fixed point: within one grey level), then rounded to uint8 as any
stored image is. Masks: nearest neighbour with the same half-pixel centres,
so a mask stays aligned with its image. Gathers and a lerp per axis: cheap on
any accelerator, and a no-op (skipped) when every image is already S x S.
"""
from __future__ import annotations

import tensorflow as tf


def _taps(valid: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """For each of ``size`` outputs along one axis of each image (valid lengths [B]): the two source
    indices [B, size] and the weight of the second [B, size, 1, 1]."""
    scale = tf.cast(valid, tf.float32)[:, None] / float(size)
    src = (tf.range(size, dtype=tf.float32)[None, :] + 0.5) * scale - 0.5
    low = tf.floor(src)
    last = valid[:, None] - 1
    lo = tf.clip_by_value(tf.cast(low, tf.int32), 0, last)
    hi = tf.minimum(tf.cast(low, tf.int32) + 1, last)
    return lo, hi, (src - low)[:, :, None, None]


def _lerp_rows(images: tf.Tensor, valid: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear along axis 1 of float images [B, H, W, C] -> [B, size, W, C]."""
    lo, hi, t = _taps(valid, size)
    a = tf.gather(images, lo, axis=1, batch_dims=1)
    b = tf.gather(images, hi, axis=1, batch_dims=1)
    return a + (b - a) * t


def _transpose_hw(x: tf.Tensor) -> tf.Tensor:
    return tf.transpose(x, [0, 2, 1, 3])


def _upscale_images(images: tf.Tensor, sizes: tf.Tensor, size: int) -> tf.Tensor:
    # Columns first, then rows: tf.image.resize's order (top and bottom lerps, then between them).
    x = _transpose_hw(_lerp_rows(_transpose_hw(tf.cast(images, tf.float32)), sizes[:, 1], size))
    x = _lerp_rows(x, sizes[:, 0], size)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), images.dtype)


def _nearest(valid: tf.Tensor, size: int) -> tf.Tensor:
    """Source index of each output along one axis: floor((i + 0.5) * valid / size), in integers."""
    i = tf.range(size, dtype=tf.int32)[None, :]
    return tf.minimum((2 * i + 1) * valid[:, None] // (2 * size), valid[:, None] - 1)


def _upscale_masks(masks: tf.Tensor, sizes: tf.Tensor, size: int) -> tf.Tensor:
    rows = tf.gather(masks, _nearest(sizes[:, 0], size), axis=1, batch_dims=1)
    return tf.gather(rows, _nearest(sizes[:, 1], size), axis=2, batch_dims=1)


def upscale(images: tf.Tensor, sizes: tf.Tensor, masks: tf.Tensor | None = None):
    """Padded batch [B, S, S, C] uint8 with valid ``sizes`` [B, 2] -> the images enlarged to S x S
    (and ``masks`` [B, S, S, K], if given, by nearest neighbour). Images already S x S pass through."""
    size = images.shape[1]
    if size is None or images.shape[2] != size:
        raise ValueError(f"upscale needs square batches of a static size, got {images.shape}")
    sizes = tf.cast(sizes, tf.int32)
    full = tf.reduce_all(tf.equal(sizes, size))
    out = tf.cond(full, lambda: tf.identity(images), lambda: _upscale_images(images, sizes, size))
    if masks is None:
        return out
    return out, tf.cond(full, lambda: tf.identity(masks), lambda: _upscale_masks(masks, sizes, size))


def pad_to(image: tf.Tensor, size: int) -> tf.Tensor:
    """(h, w, C) with h, w <= size -> (size, size, C), zeros at the bottom and right.

    Two concatenations rather than ``tf.pad``: on a CPU host TF's Pad kernel takes ~200 us for a
    256 x 256 x 3 uint8 image, as much as recompressing it; concat copies memory in ~20 us.
    """
    shape = tf.shape(image)

    def padded():
        right = tf.zeros(tf.stack([shape[0], size - shape[1], shape[2]]), image.dtype)
        wide = tf.concat([image, right], axis=1)
        below = tf.zeros(tf.stack([size - shape[0], size, shape[2]]), image.dtype)
        return tf.concat([wide, below], axis=0)

    full = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.ensure_shape(tf.cond(full, lambda: tf.identity(image), padded), [size, size, image.shape[-1]])


def upscale_one(image: tf.Tensor, size: int) -> tf.Tensor:
    """One image (h, w, C) with h, w <= size -> (size, size, C): ``upscale`` on a batch of one."""
    return upscale(pad_to(image, size)[None], tf.shape(image)[None, :2])[0]
