"""Legitimate repeats: pairs that match because the figure repeats by design, not by copy-move.

Two rules, each a pure function of the working image and one verified pair:
- ``channel_of_merge``: a fluorescence figure shows each channel of a field in its own panel and
  then their Merge, which contains every channel by construction. A pair between two panels
  where one panel is a single dye (its colours lie on one line through black) and, under the
  pair's map, the other panel is at least as bright in every colour channel nearly everywhere
  and is not that single dye (it holds other channels too) is the channel and its merge. Grey
  levels cannot tell this (the merge's fine detail is the channel's), colour composition can.
- ``lattice``: a regular grid of wells or dots matches itself under every shift by its
  periods and every mirror and turn of its symmetry; a region whose fine detail repeats along
  two directions is a lattice, and no match of it is evidence.
Insets (a zoomed part of a panel) and fields of look-alike cells need no rule of their own in
the tests (tests/test_legit_repeats.py): an inset is magnified 2-3x (``MAX_SCALE`` is 2) and
its fine detail is blurred by the zoom; look-alike cells share a shape but not their noise.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

# A panel is one dye when the first singular value of its pixel colours (uncentred: a tint scaled
# by intensity is a line through black) holds at least this share of their energy. Tinted
# synthetic and real single-channel panels: >= 0.995; two-dye merges and colour photos: < 0.97.
SINGLE_DYE_ENERGY = 0.99
# Pixels darker than this (max channel) carry no colour to judge.
DYE_MIN_LEVEL = 20
# The merge is at least as bright as the channel in every colour channel, up to this many grey
# levels (JPEG and rounding), on at least MERGE_MIN_SHARE of the compared pixels.
MERGE_TOL = 12
MERGE_MIN_SHARE = 0.9
# At most this many pixels of each panel are compared (a regular subsample: enough for the
# shares above, and bounded time on large panels).
REPEAT_SAMPLES = 4000
# A lattice's auto-correlation (normalised by its energy, so a full-overlap repeat is 1) peaks at
# one period with roughly the share of the region that overlaps its shifted self (0.8-0.95 for
# regions a few periods wide); natural texture and copied regions stay below ~0.3 away from zero.
LATTICE_MIN_PEAK = 0.5
# Two peaks this many degrees apart span a lattice (a row of lanes repeats along one line only).
LATTICE_MIN_ANGLE = 30.0


def majority_panel(pmap: np.ndarray, mask: np.ndarray) -> int:
    """The panel index most of ``mask`` lies in (-1: outside every panel)."""
    labels = pmap[mask > 0].astype(np.int64) + 1
    return int(np.argmax(np.bincount(labels))) - 1 if len(labels) else -1


def _panel_pixels(pmap: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(pmap == index)
    step = max(1, len(ys) // REPEAT_SAMPLES)
    return ys[::step], xs[::step]


def single_dye(colours: np.ndarray) -> bool:
    """Whether (N, 3) colours lie on one line through black (one tinted channel)."""
    lit = colours[colours.max(axis=1) >= DYE_MIN_LEVEL].astype(np.float64)
    if len(lit) < 16:
        return False
    s = np.linalg.svd(lit, compute_uv=False)
    return float(s[0] ** 2 / (s ** 2).sum()) >= SINGLE_DYE_ENERGY


def channel_of_merge(rgb: np.ndarray, pmap: np.ndarray, source: np.ndarray, copy: np.ndarray,
                     m: np.ndarray) -> bool:
    """Whether the pair (working masks, map ``m`` source -> copy) is a channel panel and the
    merge panel that contains it (see the module docstring)."""
    a, b = majority_panel(pmap, source), majority_panel(pmap, copy)
    if a < 0 or b < 0 or a == b:
        return False
    h, w = pmap.shape
    m3 = np.vstack([np.asarray(m, np.float64), [0, 0, 1.0]])
    for channel, merge, fwd in ((a, b, m3), (b, a, np.linalg.inv(m3))):
        ys, xs = _panel_pixels(pmap, channel)
        px = np.rint(fwd[0, 0] * xs + fwd[0, 1] * ys + fwd[0, 2]).astype(int)
        py = np.rint(fwd[1, 0] * xs + fwd[1, 1] * ys + fwd[1, 2]).astype(int)
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        inside[inside] &= pmap[py[inside], px[inside]] == merge
        if inside.sum() < 16:
            continue
        mine = rgb[ys[inside], xs[inside]].astype(np.int16)
        theirs = rgb[py[inside], px[inside]].astype(np.int16)
        if not single_dye(mine) or single_dye(theirs):
            continue
        if float(np.mean((theirs - mine >= -MERGE_TOL).all(axis=1))) >= MERGE_MIN_SHARE:
            return True
    return False


def lattice(band: np.ndarray, source: np.ndarray, min_shift: float) -> bool:
    """Whether the fine detail under ``source`` repeats along two directions (a lattice: wells,
    gratings of dots, tiles): its auto-correlation away from zero shift peaks above
    ``LATTICE_MIN_PEAK`` at two offsets more than ``LATTICE_MIN_ANGLE`` apart. A lattice matches
    itself under every shift, mirror and turn of its symmetry, so none of them is evidence. Blot
    lanes repeat along one direction only and keep their evidence."""
    ys, xs = np.nonzero(source)
    if len(ys) == 0:
        return False
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = band[y0:y1, x0:x1] * (source[y0:y1, x0:x1] > 0)
    a = (a - a[source[y0:y1, x0:x1] > 0].mean()) * (source[y0:y1, x0:x1] > 0)
    energy = float((a * a).sum())
    if energy <= 0:
        return False
    h, w = a.shape
    f = np.fft.rfft2(a, (2 * h, 2 * w))
    auto = np.fft.fftshift(np.fft.irfft2(f * np.conj(f), (2 * h, 2 * w))) / energy
    cy, cx = h, w
    yy, xx = np.mgrid[0:2 * h, 0:2 * w]
    dy, dx = yy - cy, xx - cx
    auto[dy * dy + dx * dx < min_shift * min_shift] = 0
    first = np.unravel_index(int(np.argmax(auto)), auto.shape)
    if auto[first] < LATTICE_MIN_PEAK:
        return False
    v = np.array([first[1] - cx, first[0] - cy], np.float64)
    cos = np.abs(dx * v[0] + dy * v[1]) / (np.hypot(dx, dy) * np.hypot(*v) + 1e-9)
    auto[cos > np.cos(np.radians(LATTICE_MIN_ANGLE))] = 0
    return float(auto.max()) >= LATTICE_MIN_PEAK


def legitimate_repeat(rgb: np.ndarray, band: np.ndarray, pmap: np.ndarray, source: np.ndarray, copy: np.ndarray,
                      m: np.ndarray, min_shift: float) -> Optional[str]:
    """The reason a verified pair is a repeat by design ("channel_of_merge", "lattice"), or None."""
    if channel_of_merge(rgb, pmap, source, copy, m):
        return "channel_of_merge"
    if lattice(band, source, min_shift):
        return "lattice"
    return None
