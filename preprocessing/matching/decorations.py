"""Decorations: marks drawn on a figure (letters, digits, words, scale bars, arrows, legend
boxes, axis lines, ticks). They repeat by design, so they are never evidence of a copy.

Two sources:
- drawing panels ("chart" and "text" kinds, see ``panels``): every ink pixel;
- marks drawn over photographs and blots, and marks on the page outside any panel: connected
  components that stand out from their local background (median over ``DECOR_BG_PX``) by
  ``DECOR_CONTRAST`` in some channel, are drawn in one colour (spread below
  ``DECOR_MAX_COLOR_STD``) that is a pen's colour (near white, near black or vivid), with a thin
  pen (half stroke width at most ``DECOR_MAX_HALF_STROKE``) or as a bar (elongation at least
  ``DECOR_BAR_ELONGATION``), and are small against the panel.
Natural structures fail at least one test: cells and bands are thick, shaded and mid-tone,
tissue varies in colour, and the bright core of a fluorescent fibre or nucleus, vivid and thin as
a pen stroke, continues into dimmer surroundings where a mark is drawn on its background
(``DECOR_MAX_RING_CONTRAST``). Everything found is dilated by ``DECOR_HALO_PX`` (anti-aliasing,
JPEG ringing).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from scipy import ndimage

from preprocessing.matching import params as P
from preprocessing.matching.panels import DRAWING_KINDS, edges_sharp


def signed_contrast(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) int16: each channel minus its local median background (median over
    ``DECOR_BG_PX``, taken at half resolution: the background is smooth at that scale)."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    bg = cv2.resize(cv2.medianBlur(small, P.DECOR_BG_PX // 2 | 1), (w, h), interpolation=cv2.INTER_LINEAR)
    return rgb.astype(np.int16) - bg.astype(np.int16)


def pen_colour(rgb: np.ndarray) -> np.ndarray:
    """Per pixel (..., 3): a colour marks are drawn in (near white, near black, or a vivid hue);
    stained nuclei, bands and tissue are mid-tone and muted."""
    hi, lo = rgb.max(axis=-1).astype(np.int16), rgb.min(axis=-1).astype(np.int16)
    vivid = (hi - lo >= P.DECOR_VIVID_CHROMA) & (hi >= P.DECOR_VIVID_VALUE)
    return (lo >= P.DECOR_WHITE) | (hi <= P.DECOR_BLACK) | vivid


def in_words(stats: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Per component (rows of ``connectedComponentsWithStats`` stats without the background, and
    their mean colours): whether it sits in a row of glyphs, i.e. another component of the same
    height and top (within ``DECOR_WORD_ALIGN_PX``), close beside it (gap at most its height)
    and of the same colour (within ``DECOR_WORD_COLOR_TOL``)."""
    x, y, w, h = (stats[:, k].astype(np.float64) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                          cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    gap = np.maximum(x[:, None] - (x + w)[None, :], x[None, :] - (x + w)[:, None])
    row = ((np.abs(y[:, None] - y[None, :]) <= P.DECOR_WORD_ALIGN_PX)
           & (np.abs(h[:, None] - h[None, :]) <= P.DECOR_WORD_ALIGN_PX)
           & (gap <= h[:, None]) & (gap >= 0)
           & (np.abs(colours[:, None] - colours[None, :]).max(axis=2) <= P.DECOR_WORD_COLOR_TOL))
    np.fill_diagonal(row, False)
    return row.any(axis=1)


def _square(radius: int) -> np.ndarray:
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)


def on_background(contrast: np.ndarray, cand: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                  sharp: bool = True) -> np.ndarray:
    """Per component of ``labels`` (ids ``idx``): whether it is drawn on its background, i.e. the
    pixels of a ring ``DECOR_RING_PX`` wide around it that are not candidates themselves stand out
    (median of ``contrast``, the signed contrast towards the mark) by at most
    ``DECOR_MAX_RING_CONTRAST`` of the component's mean contrast. Natural structure continues
    into dimmer surroundings. On a blurred image (not ``sharp``) the ring starts
    ``DECOR_BLUR_GAP_PX`` out, beyond the halo blur spreads around every mark."""
    gap = 0 if sharp else P.DECOR_BLUR_GAP_PX
    lab = labels.astype(np.float32)
    grown = cv2.dilate(lab, _square(gap + P.DECOR_RING_PX)).astype(np.int32)
    halo = cv2.dilate(lab, _square(gap)) > 0
    ring = np.where((cand == 0) & (grown > 0) & ~halo, grown, 0)
    around = np.asarray(ndimage.median(np.maximum(contrast, 0), ring, idx), np.float64)
    own = np.asarray(ndimage.mean(contrast, labels, idx), np.float64)
    return ~(np.nan_to_num(around, nan=0.0) > P.DECOR_MAX_RING_CONTRAST * np.maximum(own, 1.0))


def _marks(rgb: np.ndarray, cand: np.ndarray, max_side: float, contrast: np.ndarray, sharp: bool) -> np.ndarray:
    """uint8 mask of the candidate components that look drawn: one colour, thin or a bar, small,
    away from the crop's edge, on their background (``contrast``: signed contrast towards them)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros_like(cand)
    idx = np.arange(1, n)
    area = stats[1:, cv2.CC_STAT_AREA]
    bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    spread = np.zeros(n - 1)
    for c in range(3):
        spread = np.maximum(spread, np.asarray(ndimage.standard_deviation(rgb[:, :, c], labels, idx)))
    half_stroke = np.zeros(n, np.float32)  # per-label maximum without ndimage's sort
    on = labels > 0
    np.maximum.at(half_stroke, labels[on], cv2.distanceTransform(cand, cv2.DIST_L2, 3)[on])
    half_stroke = half_stroke[1:]
    elongation = np.maximum(bw, bh) / np.maximum(1, np.minimum(bw, bh))
    # Thin relative to its own size too: a filled dot (a pit, a nucleus) is not a pen stroke.
    stroke_limit = np.minimum(P.DECOR_MAX_HALF_STROKE, P.DECOR_MAX_STROKE_RATIO * np.maximum(bw, bh))
    thin = (half_stroke <= stroke_limit) | (elongation >= P.DECOR_BAR_ELONGATION)
    # Marks are drawn inside the panel; a component along its edge is the edge itself.
    x0, y0 = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    h, w = cand.shape
    inset = (x0 > 0) & (y0 > 0) & (x0 + bw < w) & (y0 + bh < h)
    one_colour = spread <= P.DECOR_MAX_COLOR_STD
    loose = ~one_colour & (spread <= P.DECOR_WORD_MAX_COLOR_STD) & thin & inset & (bh <= P.DECOR_WORD_MAX_PX)
    if loose.any():  # anti-aliased glyphs spread their colour, but they come in words
        colours = np.stack([np.asarray(ndimage.mean(rgb[:, :, c], labels, idx)) for c in range(3)], 1)
        pick = np.flatnonzero(loose)
        one_colour[pick] = in_words(stats[1:][pick], colours[pick])
    keep = ((area >= P.DECOR_MIN_AREA) & one_colour & thin & inset & (np.maximum(bw, bh) <= max_side))
    if keep.any():
        keep[keep] = on_background(contrast, cand, labels, idx[keep], sharp)
    lut = np.concatenate([[0], keep]).astype(np.uint8)
    return lut[labels]


def overlay_marks(rgb: np.ndarray, max_side: float, sharp: bool = True) -> np.ndarray:
    """uint8 mask of marks drawn over a photograph or blot: pen-coloured pixels that stand out
    from the local background by ``DECOR_CONTRAST``, brighter and darker ones taken apart (a
    white label never merges with the dark tissue next to it), grouped into components that
    look drawn (see ``_marks``)."""
    signed = signed_contrast(rgb)
    pen = pen_colour(rgb)
    out = np.zeros(rgb.shape[:2], np.uint8)
    strength = np.abs(signed).max(axis=2)
    for sign in (1, -1):
        towards = (sign * signed).max(axis=2)
        cand = (towards >= P.DECOR_CONTRAST) & pen
        out |= _marks(rgb, cand.astype(np.uint8), max_side, towards.astype(np.float32), sharp)
    if out.any():
        # Hysteresis: near a mark (a bar, the first glyphs of a word), fainter pen strokes are
        # its label too (small anti-aliased text breaks into fragments too small on their own).
        k = 2 * P.DECOR_GROUP_PX + 1
        zone = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))) > 0
        out |= (zone & pen & (strength >= P.DECOR_WEAK_CONTRAST)).astype(np.uint8)
    return out


def drawing_ink(gray: np.ndarray) -> np.ndarray:
    """uint8 mask of a drawing panel's ink: everything away from its background grey level."""
    bg = int(np.argmax(np.bincount(gray.reshape(-1), minlength=256)))
    return (np.abs(gray.astype(np.int16) - bg) > 2 * P.DECOR_MAX_COLOR_STD).astype(np.uint8)


def decoration_mask(rgb: np.ndarray, gray: np.ndarray, panels, sharp: Optional[bool] = None) -> np.ndarray:
    """(h, w) uint8 0/1 decorations; ``panels`` as from find_panels (same pixels as ``rgb``);
    ``sharp``: ``edges_sharp(gray)`` when already known.

    Each panel is read on its own, so a panel's edge against the page is never taken for a
    mark drawn over it; outside every panel, whatever is not page is a mark (labels, lines)."""
    h, w = gray.shape
    out = np.zeros((h, w), np.uint8)
    page = np.ones((h, w), bool)
    sharp = edges_sharp(gray) if sharp is None else sharp
    for (x, y, pw, ph), kind in panels:
        page[y:y + ph, x:x + pw] = False
        if kind in DRAWING_KINDS:
            out[y:y + ph, x:x + pw] = drawing_ink(gray[y:y + ph, x:x + pw])
        elif min(pw, ph) >= P.DECOR_BG_PX:
            out[y:y + ph, x:x + pw] = overlay_marks(rgb[y:y + ph, x:x + pw],
                                                    P.DECOR_MAX_SIDE_FRACTION * max(pw, ph), sharp)
    if page.any():
        level = int(np.argmax(np.bincount(gray[page], minlength=256)))
        out[page & (np.abs(gray.astype(np.int16) - level) > 2 * P.DECOR_MAX_COLOR_STD)] = 1
    if P.DECOR_HALO_PX > 0:
        k = 2 * P.DECOR_HALO_PX + 1
        out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return out
