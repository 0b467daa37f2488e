"""The working image: the one resized copy every matching step reads.

Large pages are shrunk so memory and time are bounded (``WORK_MAX_SIDE``); small images are
kept at their own size (layout, dense matching and verification read native pixels: sensor
noise and pen strokes do not survive enlargement), and only SIFT sees them enlarged
(``WORK_MIN_SIDE``), since a 150 px blot has too few scale-space extrema at its own size.
Everything downstream works in working pixels; results carry the ratio back to the original.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from preprocessing.matching import params as P


@dataclass(frozen=True)
class WorkImage:
    rgb: np.ndarray  # (h, w, 3) uint8
    gray: np.ndarray  # (h, w) uint8
    shape: tuple[int, int]  # original (H, W)
    sift_zoom: float = 1.0  # SIFT runs on the working image resized by this factor (see sift_zoom)

    @property
    def work_shape(self) -> tuple[int, int]:
        return self.gray.shape[:2]

    @property
    def scale(self) -> float:
        """Working pixels per original pixel (longest side)."""
        return max(self.work_shape) / float(max(self.shape))


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Validate a decoded image: (H, W, 3) or (H, W) uint8 -> (H, W, 3) uint8."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"the matcher takes uint8 images (preprocessing.images.read_rgb8), got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"the matcher takes (H, W, 3) RGB images, got shape {a.shape}")
    return a


def work_scale(h: int, w: int, max_side: int, min_side: int) -> float:
    """Resize factor to the working resolution (1.0 when the image is already in range)."""
    long = max(h, w)
    if long > max_side:
        return max_side / long
    if long < min_side:
        return min(min_side / long, P.WORK_MAX_UPSCALE)
    return 1.0


def to_work(image: np.ndarray, max_side: int = P.WORK_MAX_SIDE, min_side: int = P.WORK_MIN_SIDE,
            sift_halve_above: int = P.SIFT_HALVE_ABOVE) -> Optional[WorkImage]:
    """The working image, or None when the image is too small to hold a copy."""
    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    if min(h, w) < P.MIN_IMAGE_SIDE:
        return None
    s = work_scale(h, w, max_side, min_side)
    if s < 1.0:
        size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(rgb)
    zoom = sift_zoom(s, max(h, w) * min(s, 1.0), sift_halve_above)
    return WorkImage(rgb=rgb, gray=cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), shape=(h, w), sift_zoom=zoom)


def sift_zoom(scale: float, long_side: float, halve_above: int) -> float:
    """How much SIFT resizes the working image: small images up (``WORK_MIN_SIDE``); optionally
    large ones halved (``SIFT_HALVE_ABOVE``; 0 = never)."""
    if scale > 1.0:
        return scale
    return 0.5 if 0 < halve_above < long_side else 1.0
