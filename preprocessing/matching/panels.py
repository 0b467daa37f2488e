"""Panels of a compound figure and what each one shows.

A figure is cut recursively along gutters (runs of rows or columns that are uniform across the
whole box: the classic XY-cut), alternating directions until no gutter is left. Each leaf is a
panel, and its kind decides how the matcher treats it:
- "photo" (photograph, micrograph, histology) and "blot" (western blot, gel): matched;
- "chart" (plots, drawings, diagrams) and "text" (labels, captions): never matched, since
  repeated markers, glyphs and axis ticks are identical by design.
"""
from __future__ import annotations

import cv2
import numpy as np

from preprocessing.matching import params as P
from preprocessing.matching.results import Box

# Kind rules (measured on synthetic photos, blots and gels and on charts rendered by matplotlib):
# the background is the most common grey level and the pixels within BG_TOL of it.
BG_TOL = 12
# Drawings (charts, diagrams, text) are mostly background ...
DRAWING_MIN_BG = 0.55
# ... printed flat: its standard deviation is < 1 in rendered charts, >= 2 in every synthetic
# photo, blot and gel (sensor noise, stain, membrane texture). 1.5 leaves room for JPEG.
DRAWING_MAX_BG_STD = 1.5
# ... in few colours: the 6 most common colours (8 levels per channel) cover this share.
DRAWING_MIN_TOP_COLOURS = 0.9
# A drawing this short (either side, working px) is a line of text, a label or a caption.
TEXT_MAX_SIDE = 40
# Blots and gels: colourless or one tint, and their bands make vertical grey-level changes
# dominate (gradient energy along y over x) or their lanes make column means differ.
BLOT_MAX_SATURATION = 0.15
BLOT_MIN_ANISOTROPY = 1.5
BLOT_MIN_LANE_CONTRAST = 0.6


def _uniform_lines(blur: np.ndarray, axis: int) -> np.ndarray:
    """Boolean per row (axis=1) or column (axis=0): uniform across the box in every channel.

    ``blur`` is the box averaged along the lines. Uniform means both flat at the pixel scale
    (standard deviation) and free of slow shading
    (range of the line's running mean): a page is printed flat, while the background of a
    blot or a dark micrograph drifts by several grey levels along a lane gap."""
    flat = blur.std(axis=axis).max(axis=-1) <= P.GUTTER_MAX_STD
    n = blur.shape[axis]
    k = min(P.GUTTER_SHADING_PX, n)
    cs = np.cumsum(blur, axis=axis, dtype=np.float64)
    lo = np.take(cs, np.arange(k - 1, n), axis=axis)
    hi = np.concatenate([np.zeros_like(np.take(cs, [0], axis=axis)), np.take(cs, np.arange(0, n - k), axis=axis)], axis=axis)
    run = (lo - hi) / k
    shading = (run.max(axis=axis) - run.min(axis=axis)).max(axis=-1)
    return flat & (shading <= P.GUTTER_MAX_SHADING)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _line_mode(gray: np.ndarray, axis: int, k: int) -> int:
    """Most common grey level of row (axis=1) or column (axis=0) ``k``."""
    line = gray[k] if axis == 1 else gray[:, k]
    return int(np.argmax(np.bincount(line, minlength=256)))


def _segments(flags: np.ndarray, gray: np.ndarray, axis: int) -> list[tuple[int, int]]:
    """Content segments [start, end) between gutters; margins (uniform runs at either end, of
    any width) are trimmed.

    An interior uniform run is a gutter only when it is at least ``GUTTER_MIN_PX`` wide and
    differs from what it separates: the most common grey level of the line just beyond it, on
    at least one side, is more than ``BG_TOL`` away from the run's own. Otherwise it is the
    panel's own background (the gaps between a blot's lanes, a chart's margins)."""
    n = len(flags)
    cuts = []
    for a, b in _runs(flags):
        if a == 0 or b == n:
            cuts.append((a, b))
            continue
        if b - a < P.GUTTER_MIN_PX:
            continue
        level = _line_mode(gray, axis, (a + b) // 2)
        sides = (_line_mode(gray, axis, a - 1), _line_mode(gray, axis, b))
        if max(abs(level - v) for v in sides) > BG_TOL:
            cuts.append((a, b))
    segs, start = [], 0
    for a, b in cuts:
        if a > start:
            segs.append((start, a))
        start = b
    if start < n:
        segs.append((start, n))
    return segs


def split_panels(rgb: np.ndarray, gray: np.ndarray, max_depth: int = 8) -> list[Box]:
    """Leaf boxes (x, y, w, h) of the recursive gutter cut; uniform boxes are dropped.

    Noise is averaged along each line only (5 px), never across lines, so a 2 px gutter
    next to a panel keeps its uniform rows."""
    along = {1: cv2.blur(rgb, (5, 1)).astype(np.float32), 0: cv2.blur(rgb, (1, 5)).astype(np.float32)}
    leaves: list[Box] = []

    def cut(x0, y0, x1, y1, depth):
        sub_gray = gray[y0:y1, x0:x1]
        for axis in (1, 0) if depth % 2 == 0 else (0, 1):  # alternate rows-first / columns-first
            sub = along[axis][y0:y1, x0:x1]
            segs = _segments(_uniform_lines(sub, axis), sub_gray, axis)
            if not segs:
                return  # entirely uniform
            if len(segs) > 1 or segs[0] != (0, sub.shape[1 - axis]):
                if depth >= max_depth:
                    break
                for a, b in segs:
                    if axis == 1:
                        cut(x0, y0 + a, x1, y0 + b, depth + 1)
                    else:
                        cut(x0 + a, y0, x0 + b, y1, depth + 1)
                return
        leaves.append((x0, y0, x1 - x0, y1 - y0))

    h, w = rgb.shape[:2]
    cut(0, 0, w, h, 0)
    return leaves


def _top_colour_share(rgb: np.ndarray, k: int = 6) -> float:
    q = (rgb >> 5).astype(np.int32)  # 8 levels per channel
    codes = (q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]
    counts = np.bincount(codes.reshape(-1), minlength=512)
    return float(np.sort(counts)[-k:].sum()) / codes.size


def panel_kind(rgb: np.ndarray, gray: np.ndarray) -> str:
    """"photo", "blot", "chart" or "text" for one panel (working-resolution crops).

    Errs towards "photo": a drawing taken for a photo is still protected by the decoration
    mask and by verification, while a photo taken for a drawing would never be matched."""
    h, w = gray.shape
    if min(h, w) < P.PANEL_MIN_PX:
        return "text"
    hist = np.bincount(gray.reshape(-1), minlength=256)
    bg = int(np.argmax(hist))
    near = np.abs(gray.astype(np.int16) - bg) <= BG_TOL
    bg_frac = float(near.mean())
    bg_std = float(gray[near].std())
    if bg_frac >= DRAWING_MIN_BG and bg_std <= DRAWING_MAX_BG_STD and _top_colour_share(rgb) >= DRAWING_MIN_TOP_COLOURS:
        return "text" if min(h, w) <= TEXT_MAX_SIDE else "chart"
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    if float(np.median(hsv[..., 1])) / 255.0 <= BLOT_MAX_SATURATION and _banded(gray):
        return "blot"
    return "photo"


def _banded(gray: np.ndarray) -> bool:
    """Bands (horizontal streaks: vertical gradients dominate) or lanes (column means differ
    much more than a typical photo's) at a scale above the noise."""
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 2.0)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    anisotropy = float((gy * gy).mean()) / (float((gx * gx).mean()) + 1e-6)
    lanes = float(g.mean(axis=0).std()) / (float(g.std(axis=1).mean()) + 1e-3)
    return anisotropy >= BLOT_MIN_ANISOTROPY or lanes >= BLOT_MIN_LANE_CONTRAST


def find_panels(rgb: np.ndarray, gray: np.ndarray) -> list[tuple[Box, str]]:
    """(box, kind) of every panel at the working resolution, in reading order."""
    out = []
    for x, y, w, h in split_panels(rgb, gray):
        out.append(((x, y, w, h), panel_kind(rgb[y:y + h, x:x + w], gray[y:y + h, x:x + w])))
    return out


def panel_index_map(shape: tuple[int, int], panels) -> np.ndarray:
    """(h, w) int16: index of the panel each pixel belongs to, -1 outside every panel."""
    out = np.full(shape, -1, np.int16)
    for i, ((x, y, w, h), _) in enumerate(panels):
        out[y:y + h, x:x + w] = i
    return out
