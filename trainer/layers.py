"""The model's input layers: uint8 RGB in, [0, 1] RGB and the noise residual out.

They are the model's first layers, so training and the exported SavedModel
compute the forensic features identically. Both run in float32 whatever the
mixed-precision policy: the residual is a small difference of large numbers.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from preprocessing.features import BINOMIAL_5, GRAY_WEIGHTS, RESIDUAL_EPSILON


def grey_levels(images) -> tf.Tensor:
    """uint8 RGB [B, H, W, 3] -> float32 grey [B, H, W, 1] in 0..255 (BT.601, not rounded to uint8)."""
    return tf.tensordot(tf.cast(images, tf.float32), tf.constant(GRAY_WEIGHTS, tf.float32), axes=[[3], [0]])[..., None]


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
    """Grayscale minus its 5x5 Gaussian blur, min-max normalised per image to [0, 1], 3 channels
    (``preprocessing.features.noise_residual`` is its numpy twin).

    Borders: reflect-101 padding (``tf.pad`` mode REFLECT), which is OpenCV's
    default ``BORDER_REFLECT_101``, so the result matches OpenCV everywhere.
    Gray is computed in float32 (no rounding to uint8 as cv2 does on uint8 input).
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, images):
        gray = grey_levels(images)
        k = tf.constant(BINOMIAL_5, tf.float32)
        padded = tf.pad(gray, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
        # Separable blur: rows then columns.
        blurred = tf.nn.conv2d(padded, tf.reshape(k, [5, 1, 1, 1]), strides=1, padding="VALID")
        blurred = tf.nn.conv2d(blurred, tf.reshape(k, [1, 5, 1, 1]), strides=1, padding="VALID")
        residual = gray - blurred
        lo = tf.reduce_min(residual, axis=[1, 2, 3], keepdims=True)
        hi = tf.reduce_max(residual, axis=[1, 2, 3], keepdims=True)
        norm = (residual - lo) / (hi - lo + RESIDUAL_EPSILON)
        return tf.repeat(norm, 3, axis=-1)


@keras.saving.register_keras_serializable(package="copymove")
class MatchField(keras.layers.Layer):
    """Dense copy-move matching on the image itself: uint8 RGB [B, S, S, 3] -> [B, g, g, 2].

    Why: a copy-move is a region whose every patch has a twin at *one common displacement*.
    Scientific images are full of near-twins (lanes, bands, background), so "this patch looks
    like another one" says little: in the synthetic data half of all textured patches of
    authentic images have a twin with NCC > 0.9. What separates a copy is that neighbouring
    patches agree on where their twin is (the dense-field idea of classical copy-move
    detectors). The learned self-correlation must discover this from data; this layer hands it
    over with no weights to learn.

    On the grey image, area-resized to ``work_size`` (when larger): every ``patch`` x ``patch``
    patch (mean-removed, unit norm; flatter than ``min_std`` counts as untextured) is a key;
    every ``stride``-th one is a query. Each query takes its best key at least ``min_shift``
    pixels away (Chebyshev), which gives a displacement. Channel 0: the fraction of the query's
    8 neighbours whose displacement is within ``tolerance`` pixels of its own; channel 1: the
    best match's NCC. Both 0 for untextured queries; neighbours beyond the grid never agree.
    float32, no gradient (nothing to learn). Cost: (g_q * g_k) dot products of patch**2, independent of S.
    """

    def __init__(self, work_size: int = 128, patch: int = 8, stride: int = 4, min_shift: int = 16,
                 min_std: float = 0.01, tolerance: int = 1, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.work_size, self.patch, self.stride = int(work_size), int(patch), int(stride)
        self.min_shift, self.min_std, self.tolerance = int(min_shift), float(min_std), int(tolerance)

    def grid(self, size: int) -> tuple[int, int, int]:
        """(working size, key grid side, query grid side) for input side ``size``."""
        work = min(size, self.work_size)
        keys = work - self.patch + 1
        if keys <= self.min_shift:
            raise ValueError(f"MatchField: a {size} px input leaves no {self.patch} px patches {self.min_shift} px "
                             "apart; use a larger image size or turn the field off (--nomatch_field)")
        return work, keys, (keys - 1) // self.stride + 1

    def call(self, images):
        size = images.shape[1]
        work, g, gq = self.grid(size)
        x = grey_levels(images) / 255.0
        if work != size:
            x = tf.image.resize(x, [work, work], method="area")
        p = self.patch
        patches = tf.image.extract_patches(x, [1, p, p, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
        centred = patches - tf.reduce_mean(patches, axis=-1, keepdims=True)
        norm = tf.norm(centred, axis=-1, keepdims=True)
        textured = norm >= self.min_std * p  # RMS deviation >= min_std
        unit = tf.where(textured, centred / (norm + 1e-8), 0.0)
        keys = tf.reshape(unit, [-1, g * g, p * p])
        queries = tf.reshape(unit[:, ::self.stride, ::self.stride], [-1, gq * gq, p * p])

        ky, kx = _coords(g, 1)
        qy, qx = _coords(gq, self.stride)
        near = tf.maximum(tf.abs(qy[:, None] - ky[None]), tf.abs(qx[:, None] - kx[None])) < self.min_shift
        ncc = tf.where(near[None], -1.0, tf.matmul(queries, keys, transpose_b=True))  # [B, Nq, Nk]
        match = tf.argmax(ncc, axis=-1, output_type=tf.int32)  # the matrix is ~1 GB per batch:
        best = tf.reshape(tf.gather(ncc, match, batch_dims=2), [-1, gq, gq])  # read it once, not twice
        dy = tf.reshape(tf.gather(ky, match) - qy, [-1, gq, gq])
        dx = tf.reshape(tf.gather(kx, match) - qx, [-1, gq, gq])

        far = 10 * self.work_size  # sentinel displacement outside the grid: never agrees
        pad = [[0, 0], [1, 1], [1, 1]]
        pdy, pdx = tf.pad(dy, pad, constant_values=far), tf.pad(dx, pad, constant_values=far)
        agree = []
        for oy in (0, 1, 2):
            for ox in (0, 1, 2):
                if oy == ox == 1:
                    continue
                ny, nx = pdy[:, oy:oy + gq, ox:ox + gq], pdx[:, oy:oy + gq, ox:ox + gq]
                agree.append(tf.maximum(tf.abs(ny - dy), tf.abs(nx - dx)) <= self.tolerance)
        consistency = tf.reduce_mean(tf.cast(tf.stack(agree, axis=-1), tf.float32), axis=-1)
        valid = tf.cast(textured[:, ::self.stride, ::self.stride, 0], tf.float32)
        return tf.stop_gradient(tf.stack([consistency * valid, tf.maximum(best, 0.0) * valid], axis=-1))

    def compute_output_shape(self, input_shape):
        _, _, gq = self.grid(input_shape[1])
        return (input_shape[0], gq, gq, 2)

    def get_config(self):
        return {**super().get_config(), "work_size": self.work_size, "patch": self.patch, "stride": self.stride,
                "min_shift": self.min_shift, "min_std": self.min_std, "tolerance": self.tolerance}


def _coords(side: int, step: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Row-major (y, x) pixel coordinates of a side x side grid with spacing ``step``, int32."""
    r = tf.range(side, dtype=tf.int32) * step
    yy, xx = tf.meshgrid(r, r, indexing="ij")
    return tf.reshape(yy, [-1]), tf.reshape(xx, [-1])
