"""Dense verification of a candidate transform: where do the region and its partner agree?

The image is compared with itself warped by the candidate map (pixel p against pixel T(p)),
on a band-pass version (fine detail only: illumination, gain and offset changes and the smooth
band profiles that similar blot lanes share drop out), by local zero-mean normalised
cross-correlation. Pixels agree where that correlation is high in textured windows; the
agreeing area connected to the matches (or, for dense candidates, every large agreeing area)
is the source region, and its image under the map is the copy. Flat windows carry no
evidence either way; holes they leave inside a region are filled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from scipy import ndimage

from preprocessing.matching import params as P
from preprocessing.matching.hypotheses import is_involution, side_direction, source_side, to3

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def bandpass(gray: np.ndarray, sigmas: tuple[float, float] = P.BAND_SIGMAS) -> np.ndarray:
    """Fine detail of the image: a difference of Gaussians (``BAND_SIGMAS``). The small one
    averages away JPEG ringing and added noise; the large one removes illumination, offsets and
    the smooth band profiles similar lanes share."""
    g = gray.astype(np.float32)
    lo, hi = sigmas
    return cv2.GaussianBlur(g, (0, 0), lo) - cv2.GaussianBlur(g, (0, 0), hi)


@dataclass(frozen=True)
class Agreement:
    """Per-pixel comparison of an ROI with its partner under one map."""

    box: Box
    zncc: np.ndarray  # float32
    textured: np.ndarray  # bool: both windows carry detail
    valid: np.ndarray  # bool: partner inside the image, far enough away, not a decoration


def local_zncc(a: np.ndarray, b: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(correlation, min local variance) of two aligned images over ``window``-sized boxes."""
    k = (window, window)
    ma, mb = cv2.blur(a, k), cv2.blur(b, k)
    va = np.maximum(cv2.blur(a * a, k) - ma * ma, 0)
    vb = np.maximum(cv2.blur(b * b, k) - mb * mb, 0)
    cov = cv2.blur(a * b, k) - ma * mb
    zncc = cov / np.sqrt(va * vb + 1e-6)
    return zncc, np.minimum(va, vb)


def agreement(band: np.ndarray, excluded: np.ndarray, m: np.ndarray, box: Box,
              min_shift: float = P.MIN_SHIFT_PX) -> Agreement:
    """Compare ``band[box]`` with ``band`` at the mapped positions."""
    x0, y0, x1, y1 = box
    h, w = band.shape
    roi = to3(m) @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    partner = cv2.warpAffine(band, roi[:2], size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpAffine(np.ones((h, w), np.uint8), roi[:2], size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    partner_excluded = cv2.warpAffine(excluded, roi[:2], size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=1)
    zncc, var = local_zncc(band[y0:y1, x0:x1], partner, P.ZNCC_WINDOW)
    # displacement T(p) - p is affine in x and y: build it from outer sums, not a point list
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    ddx = (m[0, 0] - 1) * xs + m[0, 1] * ys + m[0, 2]
    ddy = m[1, 0] * xs + (m[1, 1] - 1) * ys + m[1, 2]
    far = ddx * ddx + ddy * ddy >= min_shift * min_shift
    valid = (inside > 0) & far & (excluded[y0:y1, x0:x1] == 0) & (partner_excluded == 0)
    return Agreement(box, zncc, var >= P.TEXTURE_MIN_STD ** 2, valid)


def _fill_flat_holes(region: np.ndarray, against: np.ndarray) -> np.ndarray:
    """Fill the holes of ``region`` that hold little evidence against it: a flat patch inside a
    copied area is part of the copy, but a textured interior that disagrees is not (the
    frame of a panel lines up with the next panel's frame; what it encloses does not)."""
    filled = ndimage.binary_fill_holes(region)
    holes = filled & ~region.astype(bool)
    if not holes.any():
        return region
    n, labels = cv2.connectedComponents(holes.astype(np.uint8), connectivity=4)
    size = np.bincount(labels.ravel(), minlength=n)
    bad = np.bincount(labels.ravel(), weights=against.ravel().astype(np.float64), minlength=n)
    fill = bad <= P.MAX_HOLE_DISAGREEMENT * np.maximum(size, 1)
    fill[0] = False
    return (region.astype(bool) | fill[labels]).astype(np.uint8)


def grow_region(ag: Agreement, seeds: Optional[np.ndarray], agree_zncc: float, min_pixels: int) -> np.ndarray:
    """uint8 mask (ROI-sized) of the agreeing area, by hysteresis: pixels agree at
    ``agree_zncc``; a connected agreeing area counts only if it holds a core, where the
    correlation averaged over a wider window (``CORE_WINDOW``) reaches ``CORE_ZNCC`` (chance
    agreement of unrelated texture is scattered, a copy agrees everywhere), and, with seeds
    (x, y in image coordinates), touches a seed; without seeds it needs ``min_pixels``."""
    usable = (ag.textured & ag.valid).astype(np.float32)
    agree = ((ag.zncc >= agree_zncc) & (usable > 0)).astype(np.uint8)
    k = (P.CORE_WINDOW, P.CORE_WINDOW)
    wide = cv2.blur(ag.zncc * usable, k) / np.maximum(cv2.blur(usable, k), 1e-3)
    core = (wide >= P.CORE_ZNCC) & (agree > 0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (P.CLOSE_PX, P.CLOSE_PX))
    closed = cv2.morphologyEx(agree, cv2.MORPH_CLOSE, kernel) & ag.valid.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if n <= 1:
        return np.zeros_like(closed)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[core])] = True
    if seeds is not None and len(seeds):
        x0, y0, x1, y1 = ag.box
        sx = np.clip(np.round(seeds[:, 0]).astype(int) - x0, 0, x1 - x0 - 1)
        sy = np.clip(np.round(seeds[:, 1]).astype(int) - y0, 0, y1 - y0 - 1)
        # a seed may sit just outside its component (keypoint centres on edges): look 3 px around
        near = cv2.dilate(labels.astype(np.float32), np.ones((7, 7), np.uint8)).astype(int)
        seeded = np.zeros(n, bool)
        seeded[labels[sy, sx]] = True
        seeded[near[sy, sx]] = True
        keep &= seeded
    else:
        keep &= stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    against = (usable > 0) & (ag.zncc < agree_zncc)
    region = _fill_flat_holes(keep[labels].astype(np.uint8), against)
    # A copied region has a body; a strip along an edge that merely lines up with itself does not.
    body = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (P.OPEN_PX, P.OPEN_PX))
    return cv2.morphologyEx(region, cv2.MORPH_OPEN, body)


@dataclass(frozen=True)
class Verified:
    """A verified pair at the working resolution."""

    source: np.ndarray  # full working-size uint8 masks
    copy: np.ndarray
    correlation: float
    textured: float  # share of the source region that carried detail


def roi_around(pts: np.ndarray, shape: tuple[int, int], scale: float = 1.0) -> Box:
    """Box around points, expanded by ``ROI_MARGIN`` of its size (x ``scale``), within the image."""
    h, w = shape
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    mx = max(P.ROI_MIN_MARGIN_PX, P.ROI_MARGIN * (x1 - x0)) * scale
    my = max(P.ROI_MIN_MARGIN_PX, P.ROI_MARGIN * (y1 - y0)) * scale
    return (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(w, int(np.ceil(x1 + mx)) + 1),
            min(h, int(np.ceil(y1 + my)) + 1))


def _touches_inner_edge(region: np.ndarray, box: Box, shape: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = box
    h, w = shape
    return bool((x0 > 0 and region[:, 0].any()) or (y0 > 0 and region[0].any())
                or (x1 < w and region[:, -1].any()) or (y1 < h and region[-1].any()))


def verify(band: np.ndarray, excluded: np.ndarray, m: np.ndarray, seeds: Optional[np.ndarray],
           agree_zncc: float = P.AGREE_ZNCC, min_shift: float = P.MIN_SHIFT_PX) -> Optional[Verified]:
    """Grow and measure the region that ``m`` copies; None when nothing meaningful agrees."""
    shape = band.shape
    min_pixels = max(16, int(P.CANDIDATE_MIN_AREA * shape[0] * shape[1]))
    if seeds is not None and len(seeds):
        box = roi_around(seeds, shape)
        for step in range(P.ROI_GROWTH_STEPS + 1):
            ag = agreement(band, excluded, m, box, min_shift)
            region = grow_region(ag, seeds, agree_zncc, min_pixels)
            if step == P.ROI_GROWTH_STEPS or not _touches_inner_edge(region, box, shape):
                break
            box = roi_around(seeds, shape, scale=2.0 * (step + 2))
    else:
        box = (0, 0, shape[1], shape[0])
        ag = agreement(band, excluded, m, box, min_shift)
        region = grow_region(ag, None, agree_zncc, min_pixels)
    x0, y0, x1, y1 = box
    if is_involution(m) and region.any():
        # a mirror or half turn maps the copy back onto the source: keep the source's side
        ys, xs = np.nonzero(region)
        pts = np.stack([xs + x0, ys + y0], 1).astype(np.float64)
        ref = seeds if seeds is not None and len(seeds) else pts
        keep = source_side(m, pts, side_direction(m, ref))
        region = np.zeros_like(region)
        region[ys[keep], xs[keep]] = 1
    if region.sum() < min_pixels:
        return None
    source = np.zeros(shape, np.uint8)
    source[y0:y1, x0:x1] = region
    copy = cv2.warpAffine(source, np.asarray(m, np.float64), (shape[1], shape[0]), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if copy.sum() < min_pixels:
        return None
    if float((source & copy).sum()) > P.MAX_SELF_OVERLAP * min(source.sum(), copy.sum()):
        return None
    inside = region.astype(bool) & ag.textured & ag.valid
    if not inside.any():
        return None
    corr = float(ag.zncc[inside].mean())
    return Verified(source, copy, corr, float(inside.sum()) / float(region.sum()))
