"""The model's input layers: uint8 RGB in, [0, 1] RGB and the noise residual out.

They are the model's first layers, so training and the exported SavedModel
compute the forensic features identically. Both run in float32 whatever the
mixed-precision policy: the residual is a small difference of large numbers.
"""
from __future__ import annotations

import keras
import tensorflow as tf

# OpenCV's GaussianBlur(ksize=5, sigma=0) does not use the nominal sigma 1.1:
# for odd sizes <= 7 it takes a fixed binomial kernel, [1, 4, 6, 4, 1] / 16.
# We use that kernel so the residual equals the seed's cv2 computation.
BINOMIAL_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


@keras.saving.register_keras_serializable(package="copymove")
class ScaleRGB(keras.layers.Layer):
    """uint8 (or float 0..255) RGB -> float32 in [0, 1]."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, images):
        return tf.cast(images, tf.float32) / 255.0


@keras.saving.register_keras_serializable(package="copymove")
class NoiseResidual(keras.layers.Layer):
    """Grayscale minus its 5x5 Gaussian blur, min-max normalised per image to [0, 1], 3 channels.

    Borders: reflect-101 padding (``tf.pad`` mode REFLECT), which is OpenCV's
    default ``BORDER_REFLECT_101``, so the result matches OpenCV everywhere.
    Gray is computed in float32 (no rounding to uint8 as cv2 does on uint8 input).
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, images):
        x = tf.cast(images, tf.float32)
        gray = tf.tensordot(x, tf.constant(GRAY_WEIGHTS, tf.float32), axes=[[3], [0]])[..., None]
        k = tf.constant(BINOMIAL_5, tf.float32)
        padded = tf.pad(gray, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
        # Separable blur: rows then columns.
        blurred = tf.nn.conv2d(padded, tf.reshape(k, [5, 1, 1, 1]), strides=1, padding="VALID")
        blurred = tf.nn.conv2d(blurred, tf.reshape(k, [1, 5, 1, 1]), strides=1, padding="VALID")
        residual = gray - blurred
        lo = tf.reduce_min(residual, axis=[1, 2, 3], keepdims=True)
        hi = tf.reduce_max(residual, axis=[1, 2, 3], keepdims=True)
        norm = (residual - lo) / (hi - lo + 1e-7)
        return tf.repeat(norm, 3, axis=-1)
