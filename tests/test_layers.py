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
from preprocessing.features import BINOMIAL_5
from trainer.layers import NoiseResidual, ScaleRGB

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


# ----------------------------------------------------------------------------- MatchField

def _numpy_match_field(rgb: np.ndarray, patch: int, stride: int, min_shift: int, min_std: float, tol: int):
    """Plain-loop reference for MatchField at its working size (no resize)."""
    gray = rgb.astype(np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])
    g = gray.shape[0] - patch + 1
    unit, textured = np.zeros((g, g, patch * patch)), np.zeros((g, g), bool)
    for y in range(g):
        for x in range(g):
            v = gray[y:y + patch, x:x + patch].ravel()
            v = v - v.mean()
            n = np.linalg.norm(v)
            textured[y, x] = n >= min_std * patch
            unit[y, x] = v / (n + 1e-8) if textured[y, x] else 0.0
    qs = range(0, g, stride)
    gq = len(qs)
    disp, best = np.zeros((gq, gq, 2), int), np.zeros((gq, gq))
    for i, qy in enumerate(qs):
        for j, qx in enumerate(qs):
            ncc = unit.reshape(g * g, -1) @ unit[qy, qx]
            ky, kx = np.divmod(np.arange(g * g), g)
            ncc[np.maximum(abs(ky - qy), abs(kx - qx)) < min_shift] = -1.0
            k = int(np.argmax(ncc))
            best[i, j], disp[i, j] = ncc[k], (ky[k] - qy, kx[k] - qx)
    cons = np.zeros((gq, gq))
    for i in range(gq):
        for j in range(gq):
            nb = [(i + a, j + b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
            cons[i, j] = sum(0 <= a < gq and 0 <= b < gq and np.abs(disp[a, b] - disp[i, j]).max() <= tol
                             for a, b in nb) / 8
    valid = textured[::stride, ::stride]
    return np.stack([cons * valid, np.maximum(best, 0) * valid], axis=-1)


def _copy_moved(rng: np.random.Generator, size: int = 64, block: int = 20, shift: int = 30):
    """(authentic, forged, region mask): random texture with a block copied ``shift`` px to the right."""
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (3, 3), 0)
    forged = base.copy()
    forged[20:20 + block, 4 + shift:4 + shift + block] = base[20:20 + block, 4:4 + block]
    region = np.zeros((size, size), bool)
    region[20:20 + block, 4:4 + block] = region[20:20 + block, 4 + shift:4 + shift + block] = True
    return base, forged, region


def test_match_field_matches_numpy_reference():
    from trainer.layers import MatchField

    rng = np.random.default_rng(5)
    images = [_copy_moved(rng, size=40, block=12, shift=16)[1], _synthetic_images(1, seed=8)[0][:40, :40]]
    layer = MatchField(work_size=40, patch=5, stride=3, min_shift=6, min_std=0.01, tolerance=1)
    got = np.asarray(layer(np.stack(images)))
    for img, out in zip(images, got):
        want = _numpy_match_field(img, patch=5, stride=3, min_shift=6, min_std=0.01, tol=1)
        assert out.shape == want.shape == (12, 12, 2)
        np.testing.assert_allclose(out[..., 1], want[..., 1], atol=1e-4)
        # Displacements are argmaxes: a near-tie may resolve differently in float32 vs float64.
        assert np.mean(np.abs(out[..., 0] - want[..., 0]) < 1e-6) > 0.97


def test_match_field_marks_a_copy_and_not_its_authentic_twin():
    from trainer.layers import MatchField

    authentic, forged, region = _copy_moved(np.random.default_rng(0))
    layer = MatchField(work_size=64, patch=8, stride=4, min_shift=16)
    out = np.asarray(layer(np.stack([authentic, forged])))
    cons = out[..., 0]
    starts = np.arange(cons.shape[1]) * 4  # each query patch's top-left pixel
    # Query patches lying wholly inside the source or the copy, and wholly outside both.
    inside = np.array([[region[y:y + 8, x:x + 8].all() for x in starts] for y in starts])
    outside = np.array([[not region[y:y + 8, x:x + 8].any() for x in starts] for y in starts])
    # Both the source and the copy agree on one displacement (all 8 neighbours in the middle of
    # the region, fewer at its edge); random texture almost never does.
    assert cons[1][inside].mean() > 0.6 and cons[1][inside].max() == 1.0
    assert cons[1][outside].mean() < 0.1 and cons[0].mean() < 0.1
    assert out[1, ..., 1][inside].min() > 0.99  # exact twins


def test_match_field_is_zero_on_flat_images_and_stays_float32():
    from trainer.layers import MatchField

    flat = np.full((2, 48, 48, 3), 128, np.uint8)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = MatchField(work_size=32, patch=6, stride=4, min_shift=8)(flat)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == tf.float32 and out.shape == (2, 7, 7, 2)  # area-resized to 32 first
    assert float(tf.reduce_max(out)) == 0.0
