"""Panels of a compound figure and what each one shows.

A figure is cut recursively along gutters (runs of rows or columns that are uniform across the
whole box: the classic XY-cut), alternating directions until no gutter is left. Each leaf is a
panel, and its kind decides how the matcher treats it:
- "photo" (photograph, micrograph, histology) and "blot" (western blot, gel): matched;
- "chart" (plots, drawings, diagrams) and "text" (labels, captions): never matched, since
  repeated markers, glyphs and axis ticks are identical by design.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

from preprocessing.matching import params as P
from preprocessing.matching.results import Box

# Panel kinds the matcher searches, and those it never matches: drawings (charts, labels) repeat
# markers, glyphs and ticks by design.
MATCHED_KINDS = ("photo", "blot")
DRAWING_KINDS = ("chart", "text")
# A "page" whose matched leaves are each smaller than this share of the image (and outnumbered by
# text and chart leaves) is a light blot membrane shattered between its bands (page_and_panels):
# its band strips cover 1-1.6% each, a figure's photo and blot panels several per cent.
FRAGMENT_MAX_SHARE = 0.025
# Kind rules (measured on synthetic photos, blots and gels and on charts rendered by matplotlib):
# the background is the most common grey level and the pixels within BG_TOL of it.
BG_TOL = 12
# Drawings (charts, diagrams, text) are mostly background (on a figure: page) ...
DRAWING_MIN_BG = 0.55
# ... printed flat: its standard deviation is < 1 in rendered charts, >= 2 in every synthetic
# photo, blot and gel (sensor noise, stain, membrane texture). 1.5 leaves room for JPEG.
DRAWING_MAX_BG_STD = 1.5
# ... in few colours: the 6 most common colours (8 levels per channel) cover this share.
DRAWING_MIN_TOP_COLOURS = 0.9
# A drawing this short (either side, working px) is a line of text, a label or a caption; so is
# any leaf that short with at least TEXT_MIN_PAGE of page between its strokes.
TEXT_MAX_SIDE = 40
TEXT_MIN_PAGE = 0.3
# Blots and gels: colourless or one tint, and their bands make vertical grey-level changes
# dominate (gradient energy along y over x) or their lanes make column means differ.
BLOT_MAX_SATURATION = 0.15
BLOT_MIN_ANISOTROPY = 1.5
BLOT_MIN_LANE_CONTRAST = 0.6


@dataclass(frozen=True)
class Page:
    """A figure's page: its colour and how far a page pixel may stray from it (noise, JPEG)."""

    colour: np.ndarray  # RGB float
    tol: float  # per channel, grey levels
    max_std: float  # of a page line after averaging along it
    level: float = 255.0  # grey level of ``colour``
    blurred: bool = False  # the figure's edges are spread (``edges_sharp``): gutters are too

    @property
    def gutter_tol(self) -> float:
        """How far a gutter line's mean may stray from ``level`` (``BLURRED_GUTTER_TOL`` when blurred)."""
        return max(self.tol, P.BLURRED_GUTTER_TOL) if self.blurred else self.tol

    @property
    def gutter_max_std(self) -> float:
        """Largest standard deviation along a gutter line (``BLURRED_GUTTER_MAX_STD`` when blurred)."""
        return max(self.max_std, P.BLURRED_GUTTER_MAX_STD) if self.blurred else self.max_std


def edges_sharp(gray: np.ndarray) -> bool:
    """Whether the image's sharpest edges are steps a pixel wide (a figure as drawn), not spread
    by blur (a resampled or blurred figure, a photograph): the ``DECOR_SHARP_QUANTILE`` of the
    gradient over the local range, on edges rising by at least ``DECOR_CONTRAST`` within 2 px."""
    g = gray.astype(np.float32)
    slope = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)) / 8  # grey levels / px
    square = np.ones((5, 5), np.uint8)
    rise = cv2.dilate(g, square) - cv2.erode(g, square)
    edge = rise >= P.DECOR_CONTRAST
    if np.count_nonzero(edge) < P.DECOR_MIN_EDGE_PIXELS:
        return False
    return float(np.quantile(slope[edge] / rise[edge], P.DECOR_SHARP_QUANTILE)) >= P.DECOR_SHARP_SLOPE


def find_page(rgb: np.ndarray) -> Optional[Page]:
    """The page when the image has one (most of its outer frame is one flat, paper-white colour,
    as a figure's margin); None for a photograph or blot filling the image (a dark sky or the
    black corners of a fundus photograph are not paper). Tolerances follow the
    frame's own noise: a clean page is flat to the grey level, so a light blot membrane a few
    levels darker is not taken for page."""
    k = max(1, min(P.GUTTER_MIN_PX, min(rgb.shape[:2]) // 4))
    frame = np.concatenate([rgb[:k].reshape(-1, 3), rgb[-k:].reshape(-1, 3),
                            rgb[:, :k].reshape(-1, 3), rgb[:, -k:].reshape(-1, 3)]).astype(np.float32)
    colour = np.median(frame, axis=0)
    dev = np.abs(frame - colour).max(axis=1)
    near = dev <= P.PAGE_TOL
    if near.mean() < P.PAGE_MIN_FRAME or colour.min() < P.PAGE_MIN_LEVEL:
        return None
    # std of the page from its 90th percentile deviation (robust to marks; a white page's noise is
    # clipped at 255 on one side, which halves a median-based estimate)
    noise = float(np.percentile(np.abs(frame[near] - colour), 90)) / 1.645
    tol = float(np.clip(P.PAGE_NOISE_TOL * noise, P.PAGE_MIN_TOL, P.PAGE_TOL))
    max_std = float(np.clip(P.PAGE_NOISE_TOL * noise / np.sqrt(5), P.GUTTER_MIN_STD, P.GUTTER_MAX_STD))
    level = float(colour @ np.array([0.299, 0.587, 0.114]))
    return Page(colour, tol, max_std, level)


class LineStats:
    """Prefix sums of the grey image (averaged along each line over 5 px, never across lines, so
    a 2 px gutter next to a panel keeps its uniform rows): the mean and standard deviation of any
    row or column span in O(1), so the recursive cut costs O(lines) per box, not O(pixels)."""

    def __init__(self, gray: np.ndarray):
        g = gray.astype(np.float64)
        self.rows = [np.concatenate([np.zeros((g.shape[0], 1)), np.cumsum(v, axis=1)], axis=1)
                     for v in (cv2.blur(g, (5, 1)), cv2.blur(g, (5, 1)) ** 2)]
        self.cols = [np.concatenate([np.zeros((1, g.shape[1])), np.cumsum(v, axis=0)], axis=0)
                     for v in (cv2.blur(g, (1, 5)), cv2.blur(g, (1, 5)) ** 2)]

    def lines(self, x0: int, y0: int, x1: int, y1: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of every row (axis=1) or column (axis=0) of the box."""
        if axis == 1:
            s1, s2 = (c[y0:y1, x1] - c[y0:y1, x0] for c in self.rows)
            n = x1 - x0
        else:
            s1, s2 = (c[y1, x0:x1] - c[y0, x0:x1] for c in self.cols)
            n = y1 - y0
        mean = s1 / n
        return mean, np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))


def _uniform_lines(stats: LineStats, box: tuple[int, int, int, int], axis: int, page: Page) -> np.ndarray:
    """Boolean per row (axis=1) or column (axis=0) of ``box`` (x0, y0, x1, y1): page across the
    whole box, i.e. flat (standard deviation within the page's noise allowance) and of the
    page's grey level (the page is paper-white, so its grey level pins every channel)."""
    mean, std = stats.lines(*box, axis)
    return (std <= page.gutter_max_std) & (np.abs(mean - page.level) <= page.gutter_tol)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _segments(flags: np.ndarray) -> list[tuple[int, int]]:
    """Content segments [start, end) between gutters (page runs at least ``GUTTER_MIN_PX``
    wide); margins (page runs at either end, of any width) are trimmed."""
    n = len(flags)
    cuts = [(a, b) for a, b in _runs(flags) if a == 0 or b == n or b - a >= P.GUTTER_MIN_PX]
    segs, start = [], 0
    for a, b in cuts:
        if a > start:
            segs.append((start, a))
        start = b
    if start < n:
        segs.append((start, n))
    return segs


def split_panels(rgb: np.ndarray, page: Optional[Page], max_depth: int = 8) -> list[Box]:
    """Leaf boxes (x, y, w, h) of the recursive gutter cut; page-only boxes are dropped. An image
    without a page (see ``find_page``) is one panel."""
    h, w = rgb.shape[:2]
    if page is None:
        return [(0, 0, w, h)]
    stats = LineStats(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    leaves: list[Box] = []

    def cut(x0, y0, x1, y1, depth):
        for axis in (1, 0) if depth % 2 == 0 else (0, 1):  # alternate rows-first / columns-first
            segs = _segments(_uniform_lines(stats, (x0, y0, x1, y1), axis, page))
            if not segs:
                return  # entirely page
            if len(segs) > 1 or segs[0] != (0, (y1 - y0) if axis == 1 else (x1 - x0)):
                if depth >= max_depth:
                    break
                for a, b in segs:
                    if axis == 1:
                        cut(x0, y0 + a, x1, y0 + b, depth + 1)
                    else:
                        cut(x0 + a, y0, x0 + b, y1, depth + 1)
                return
        leaves.append((x0, y0, x1 - x0, y1 - y0))

    cut(0, 0, w, h, 0)
    return leaves


def _top_colour_share(rgb: np.ndarray, k: int = 6) -> float:
    q = (rgb >> 5).astype(np.int32)  # 8 levels per channel
    codes = (q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]
    counts = np.bincount(codes.reshape(-1), minlength=512)
    return float(np.sort(counts)[-k:].sum()) / codes.size


def panel_kind(rgb: np.ndarray, gray: np.ndarray, page: Optional[Page] = None) -> str:
    """"photo", "blot", "chart" or "text" for one panel (working-resolution crops).

    On a figure, drawings (charts, labels) are mostly page with ink in a few colours; a leaf as
    thin as a line of text that shows page between its strokes is text. Without a page (a
    standalone image) a drawing is told by a flat dominant background instead. Errs towards
    "photo": a drawing taken for a photo is still protected by the decoration mask and by
    verification, while a photo taken for a drawing would never be matched."""
    h, w = gray.shape
    if min(h, w) < P.PANEL_MIN_PX:
        return "text"
    few_colours = _top_colour_share(rgb) >= DRAWING_MIN_TOP_COLOURS
    if page is not None:
        on_page = float(np.mean(np.abs(rgb.astype(np.float32) - page.colour).max(axis=2) <= 2 * page.tol))
        if few_colours and on_page >= DRAWING_MIN_BG:
            return "text" if min(h, w) <= TEXT_MAX_SIDE else "chart"
        if few_colours and on_page >= TEXT_MIN_PAGE and min(h, w) <= TEXT_MAX_SIDE:
            return "text"
    else:
        hist = np.bincount(gray.reshape(-1), minlength=256)
        bg = int(np.argmax(hist))
        near = np.abs(gray.astype(np.int16) - bg) <= BG_TOL
        if few_colours and float(near.mean()) >= DRAWING_MIN_BG and float(gray[near].std()) <= DRAWING_MAX_BG_STD:
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


def find_panels(rgb: np.ndarray, gray: np.ndarray, page: Optional[Page] = None) -> list[tuple[Box, str]]:
    """(box, kind) of every panel at the working resolution, in reading order (``page`` as from
    ``find_page``; None: the image is one panel)."""
    out = []
    for x, y, w, h in split_panels(rgb, page):
        out.append(((x, y, w, h), panel_kind(rgb[y:y + h, x:x + w], gray[y:y + h, x:x + w], page)))
    return out


def panel_index_map(shape: tuple[int, int], panels) -> np.ndarray:
    """(h, w) int16: index of the panel each pixel belongs to, -1 outside every panel."""
    out = np.full(shape, -1, np.int16)
    for i, ((x, y, w, h), _) in enumerate(panels):
        out[y:y + h, x:x + w] = i
    return out


def page_and_panels(rgb: np.ndarray, gray: np.ndarray,
                    sharp: Optional[bool] = None) -> tuple[Optional[Page], list[tuple[Box, str]]]:
    """The page (or None) and the panels (``find_panels``) of a working image.

    A light blot membrane (near-white, its frame flat enough to pass for paper) is taken for a
    page, and the cut then shatters it between its bands into strips read as text or chart and
    band-sized "blots" (8 of 44 lane-copy blots of the hard style's tuning sets; most blots
    lightened to a membrane of 246). A figure's panels are not like that, so when the whole image,
    read without a page, is a blot, its leaves are mostly text or chart and no matched leaf
    reaches ``FRAGMENT_MAX_SHARE`` of the image, it is one blot panel without a page."""
    page = find_page(rgb)
    if page is not None and not (edges_sharp(gray) if sharp is None else sharp):
        page = replace(page, blurred=True)
    panels = find_panels(rgb, gray, page)
    if page is None:
        return page, panels
    matched = [w * h for (_, _, w, h), kind in panels if kind in MATCHED_KINDS]
    fragments = 2 * len(matched) < len(panels) and max(matched, default=0) < FRAGMENT_MAX_SHARE * gray.size
    if fragments and panel_kind(rgb, gray, None) == "blot":
        return None, find_panels(rgb, gray, None)
    return page, panels
