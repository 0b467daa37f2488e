"""The forensic input features' definitions, shared by the model's TF layers and the numpy tools.

The model computes them with TF ops in its first layers (``trainer.layers``), so training and the
exported SavedModel agree; the dataset report needs the same features without TensorFlow. The
constants live here once, and ``noise_residual`` is the numpy twin of ``trainer.layers.NoiseResidual``
(tests/test_layers.py pins the two together).
"""
from __future__ import annotations

import cv2
import numpy as np

# OpenCV's GaussianBlur(ksize=5, sigma=0) does not use the nominal sigma 1.1: for odd sizes <= 7 it
# takes a fixed binomial kernel, [1, 4, 6, 4, 1] / 16. The model uses that kernel, so its residual
# equals the seed notebook's cv2 computation.
BINOMIAL_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY
RESIDUAL_EPSILON = 1e-7  # keeps the min-max normalisation finite on flat images


def grey(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> float32 grey (H, W) in 0..255 (BT.601, not rounded to uint8)."""
    return np.asarray(rgb, np.float32) @ np.asarray(GRAY_WEIGHTS, np.float32)


def noise_residual(rgb: np.ndarray) -> np.ndarray:
    """Grey minus its 5x5 binomial blur (reflect-101 borders), min-max normalised to [0, 1], (H, W)."""
    gray = grey(rgb)
    kernel = np.asarray(BINOMIAL_5, np.float32)
    blurred = cv2.sepFilter2D(gray, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    residual = gray - blurred
    lo, hi = float(residual.min()), float(residual.max())
    return (residual - lo) / (hi - lo + RESIDUAL_EPSILON)
