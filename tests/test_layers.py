"""The model's input layers against OpenCV, the seed notebook's reference implementation.

Reference: gray = RGB . (0.299, 0.587, 0.114) in float32 (cv2 would round gray to
uint8 on uint8 input; the layer keeps it in float32 on purpose), then
``cv2.GaussianBlur(gray, (5, 5), 0)`` with OpenCV's default border
(BORDER_REFLECT_101), subtract, per-image min-max to [0, 1]. The layer pads with
tf.pad(mode="REFLECT"), which is reflect-101 (the edge pixel is not repeated),
so the borders match too and are checked separately.
"""
from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from preprocessing import synth
from trainer.layers import BINOMIAL_5, NoiseResidual, ScaleRGB

TOL = 1e-3
BORDER = 2  # the blur's radius: pixels closer to the edge depend on the padding


def _synthetic_images(n: int, seed: int = 3) -> list[np.ndarray]:
    """Real synthetic scientific images (photos, blots, gels; gray ones as 3 equal channels)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img, _ = synth.make_base(rng, 64, 160)
        out.append(np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img)
    return out


def _opencv_residual(rgb: np.ndarray) -> np.ndarray:
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)  # default border: BORDER_REFLECT_101
    residual = gray - blurred
    return (residual - residual.min()) / (residual.max() - residual.min() + 1e-7)


def test_opencv_kernel_for_ksize5_sigma0_is_binomial():
    # Why the layer hard-codes [1, 4, 6, 4, 1] / 16 instead of a Gaussian with sigma 1.1.
    np.testing.assert_allclose(cv2.getGaussianKernel(5, 0).ravel(), BINOMIAL_5, atol=1e-7)
    nominal = np.exp(-np.arange(-2, 3) ** 2 / (2 * 1.1 ** 2))
    assert np.abs(nominal / nominal.sum() - np.array(BINOMIAL_5)).max() > 1e-3


def test_noise_residual_matches_opencv_inside_and_on_borders():
    layer = NoiseResidual()
    images = _synthetic_images(6)
    for img in images:
        got = layer(img[None]).numpy()[0]
        assert got.shape == img.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got[..., 0], got[..., 2])  # three identical channels
        want = _opencv_residual(img)
        inner = np.abs(got[BORDER:-BORDER, BORDER:-BORDER, 0] - want[BORDER:-BORDER, BORDER:-BORDER])
        assert inner.max() <= TOL, img.shape
        assert np.abs(got[..., 0] - want).max() <= TOL, f"border mismatch for {img.shape}"
        assert got.min() == pytest.approx(0.0, abs=1e-6) and got.max() == pytest.approx(1.0, abs=1e-5)


def test_noise_residual_border_is_reflect101_not_replicate():
    # A ramp separates the border modes: replicate padding would give a different edge column.
    img = np.tile(np.linspace(0, 250, 40).astype(np.uint8)[None, :, None], (32, 1, 3))
    img[::3] = 255 - img[::3]
    got = NoiseResidual()(img[None]).numpy()[0, ..., 0]
    gray = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    reflect101 = _opencv_residual(img)
    rep = gray - cv2.GaussianBlur(gray, (5, 5), 0, borderType=cv2.BORDER_REPLICATE)
    replicate = (rep - rep.min()) / (rep.max() - rep.min() + 1e-7)
    assert np.abs(got - reflect101).max() <= TOL
    assert np.abs(got - replicate).max() > 10 * TOL


def test_batch_is_normalised_per_image():
    a, b = _synthetic_images(2, seed=11)
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    dark = (b // 4).astype(np.uint8)
    got = NoiseResidual()(np.stack([a, dark])).numpy()
    for i, img in enumerate([a, dark]):
        assert np.abs(got[i, ..., 0] - _opencv_residual(img)).max() <= TOL


def test_scale_rgb_is_exact_division():
    img = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    got = ScaleRGB()(img).numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, img.astype(np.float32) / np.float32(255.0))


def test_layers_stay_float32_under_mixed_bfloat16():
    img = _synthetic_images(1, seed=5)[0][:64, :64]
    reference = NoiseResidual()(img[None]).numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((64, 64, 3), dtype="uint8", name="images")
        residual, rgb = NoiseResidual()(inputs), ScaleRGB()(inputs)
        after = keras.layers.Conv2D(2, 3, padding="same")(residual)  # a bfloat16 layer downstream
        model = keras.Model(inputs, [residual, rgb, after])
        got_residual, got_rgb, got_after = model(img[None])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got_after.dtype == tf.bfloat16  # the policy really is active downstream
    assert got_residual.dtype == tf.float32 and got_rgb.dtype == tf.float32
    np.testing.assert_array_equal(got_residual.numpy(), reference)
    assert np.abs(got_residual.numpy()[0, ..., 0] - _opencv_residual(img)).max() <= TOL
