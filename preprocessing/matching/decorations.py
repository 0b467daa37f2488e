"""Decorations: marks drawn on a figure (letters, digits, words, scale bars, arrows, legend
boxes, axis lines, ticks). They repeat by design, so they are never evidence of a copy.

Two sources:
- drawing panels ("chart" and "text" kinds, see ``panels``): every ink pixel;
- marks drawn over photographs and blots, and marks on the page outside any panel: connected
  components that stand out from their local background (median over ``DECOR_BG_PX``) by
  ``DECOR_CONTRAST`` in some channel, are drawn in one colour (spread below
  ``DECOR_MAX_COLOR_STD``) that is a pen's colour (near white, near black or vivid), with a thin pen (half stroke width at most ``DECOR_MAX_HALF_STROKE``)
  or as a bar (elongation at least ``DECOR_BAR_ELONGATION``), and are small against the panel.
Natural structures fail at least one test: cells and bands are thick, shaded and mid-tone,
tissue varies in colour. Everything found is dilated by ``DECOR_HALO_PX`` (anti-aliasing, JPEG ringing).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from preprocessing.matching import params as P

DRAWING_KINDS = ("chart", "text")


def contrast_map(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the largest difference (over channels) from the local median background."""
    h, w = rgb.shape[:2]
    # The background is smooth at this scale: take the median at half resolution (4x cheaper).
    small = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    bg = cv2.resize(cv2.medianBlur(small, P.DECOR_BG_PX // 2 | 1), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.abs(rgb.astype(np.int16) - bg.astype(np.int16)).max(axis=2)


def overlay_marks(rgb: np.ndarray, max_side: float) -> np.ndarray:
    """uint8 mask of one-colour, thin or bar-shaped, high-contrast components."""
    cand = (contrast_map(rgb) >= P.DECOR_CONTRAST).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros_like(cand)
    idx = np.arange(1, n)
    area = stats[1:, cv2.CC_STAT_AREA]
    bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    spread = np.zeros(n - 1)
    mean = np.zeros((n - 1, 3))
    for c in range(3):
        spread = np.maximum(spread, np.asarray(ndimage.standard_deviation(rgb[:, :, c], labels, idx)))
        mean[:, c] = ndimage.mean(rgb[:, :, c], labels, idx)
    half_stroke = np.asarray(ndimage.maximum(cv2.distanceTransform(cand, cv2.DIST_L2, 3), labels, idx))
    elongation = np.maximum(bw, bh) / np.maximum(1, np.minimum(bw, bh))
    # Thin relative to its own size too: a filled dot (a pit, a nucleus) is not a pen stroke.
    stroke_limit = np.minimum(P.DECOR_MAX_HALF_STROKE, P.DECOR_MAX_STROKE_RATIO * np.maximum(bw, bh))
    thin = (half_stroke <= stroke_limit) | (elongation >= P.DECOR_BAR_ELONGATION)
    # Marks are drawn inside the panel; a component along its edge is the edge itself.
    x0, y0 = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    h, w = cand.shape
    inset = (x0 > 0) & (y0 > 0) & (x0 + bw < w) & (y0 + bh < h)
    keep = ((area >= P.DECOR_MIN_AREA) & (spread <= P.DECOR_MAX_COLOR_STD) & thin & inset & pen_colour(mean)
            & (np.maximum(bw, bh) <= max_side))
    lut = np.concatenate([[0], keep]).astype(np.uint8)
    return lut[labels]


def pen_colour(mean: np.ndarray) -> np.ndarray:
    """Per (n, 3) mean RGB: a colour marks are drawn in (near white, near black, or a vivid
    hue); stained nuclei, bands and tissue are mid-tone and muted."""
    hi, lo = mean.max(axis=1), mean.min(axis=1)
    vivid = (hi - lo >= P.DECOR_VIVID_CHROMA) & (hi >= P.DECOR_VIVID_VALUE)
    return (lo >= P.DECOR_WHITE) | (hi <= P.DECOR_BLACK) | vivid


def drawing_ink(gray: np.ndarray) -> np.ndarray:
    """uint8 mask of a drawing panel's ink: everything away from its background grey level."""
    bg = int(np.argmax(np.bincount(gray.reshape(-1), minlength=256)))
    return (np.abs(gray.astype(np.int16) - bg) > 2 * P.DECOR_MAX_COLOR_STD).astype(np.uint8)


def decoration_mask(rgb: np.ndarray, gray: np.ndarray, panels) -> np.ndarray:
    """(h, w) uint8 0/1 decorations; ``panels`` as from find_panels (same pixels as ``rgb``).

    Each panel is read on its own, so a panel's edge against the page is never taken for a
    mark drawn over it; outside every panel, whatever is not page is a mark (labels, lines)."""
    h, w = gray.shape
    out = np.zeros((h, w), np.uint8)
    page = np.ones((h, w), bool)
    for (x, y, pw, ph), kind in panels:
        page[y:y + ph, x:x + pw] = False
        if kind in DRAWING_KINDS:
            out[y:y + ph, x:x + pw] = drawing_ink(gray[y:y + ph, x:x + pw])
        elif min(pw, ph) >= P.DECOR_BG_PX:
            out[y:y + ph, x:x + pw] = overlay_marks(rgb[y:y + ph, x:x + pw], P.DECOR_MAX_SIDE_FRACTION * max(pw, ph))
    if page.any():
        level = int(np.argmax(np.bincount(gray[page], minlength=256)))
        out[page & (np.abs(gray.astype(np.int16) - level) > 2 * P.DECOR_MAX_COLOR_STD)] = 1
    if P.DECOR_HALO_PX > 0:
        k = 2 * P.DECOR_HALO_PX + 1
        out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return out
