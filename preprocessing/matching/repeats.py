"""Legitimate repeats: pairs that match because the figure repeats by design, not by copy-move.

Five rules, each a pure function of the working image (or the layout) and one verified pair:
- ``channel_of_merge``: a fluorescence figure shows each channel of a field in its own panel and
  then their Merge, which contains every channel by construction. A pair where, around it, one
  side is the other plus the light of another dye (a non-negative, saturated excess of another
  hue) is a channel and its merge. Grey
  levels cannot tell this (the merge's fine detail is the channel's), colour composition can.
- ``lattice``: a regular grid of wells or dots matches itself under every shift by its
  periods and every mirror and turn of its symmetry; a region whose fine detail repeats along
  two directions is a lattice, and no match of it is evidence.
- ``self_mirrored``: an object symmetric in itself (a gel band, a lane, a round cell) matches the
  mirror image of every object like it, so a mirrored pair whose source is its own mirror image
  shows two like objects, not a mirrored copy (a plain copy of it is still proposed by the plain
  searches). Exact copies (pixel for pixel) and lane pairs (a lane's own residual, after what all
  lanes share is removed, matches) carry more than a look and are exempt.
- ``mirror_halves``: a mirror-symmetric object (a band, a lane, a round cell) matches itself
  mirrored: its two halves pair up across its axis. Verification ignores partners closer than
  the minimum shift, so the two regions stop just short of the axis, nearer to each other than
  any mirrored copy placed beside its source comes. Exact pairs are not exempt: a smooth
  symmetric band re-saved through JPEG has bit-identical halves.
- ``panel_aligned``: a figure's layout puts the same label (a channel name, a scale bar, a
  marker) at the same place in every panel of a row; a small region (by its pixels: a scale bar
  and a mark far from it make one region with a panel-sized box) at the same offset from a
  corner of two panels is such a label, even when it is too small for the decoration finder
  (6 px coloured text breaks into fragments). Copies land elsewhere; a duplicated panel is large.
Insets (a zoomed part of a panel) and fields of look-alike cells need no rule of their own in
the tests (tests/test_legit_repeats.py): an inset is magnified 2-3x (``MAX_SCALE`` is 2) and
its fine detail is blurred by the zoom; look-alike cells share a shape but not their noise.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import cv2
import numpy as np

from preprocessing.matching.hypotheses import apply, mirrors

# Fluorescence channels are light on black: the dimmer side's median brightest channel is at most
# this (synthetic channel panels: 0-88; IHC and brightfield photographs: 120 and up; grey images
# pass but cannot show an excess in colour).
FLUORESCENCE_MAX_MEDIAN = 100
# Pixels darker than this (max channel), or greyer (spread between channels), carry no colour to judge.
DYE_MIN_LEVEL = 20
# The brighter side (the merge) exceeds the dimmer (its channel) in no channel by more than
# MERGE_TOL grey levels (JPEG, noise, rounding) on at least MERGE_MIN_SHARE of the pixels ...
MERGE_TOL = 20
MERGE_MIN_SHARE = 0.9
# ... where the brighter side counts with its largest value in a MERGE_NEAR_PX square around the
# pixel: a map a pixel or two off (a dense-field fit, a rotation estimated from few points) or JPEG
# ringing at a dye's edge otherwise leaves the merge darker than its channel along every edge.
MERGE_NEAR_PX = 3
# ... and by at least MERGE_MIN_EXTRA in some channel on MERGE_MIN_EXTRA_SHARE of them (the
# other dyes show somewhere around the pair; an exact copy differs nowhere). 2%, not 5%: a merge
# whose second dye lights one corner of the field (3.4% of the pixels read; dev seed 8118) is
# still a merge, and the non-negative, saturated, other-hue tests below carry the decision ...
MERGE_MIN_EXTRA = 25
MERGE_MIN_EXTRA_SHARE = 0.02
# ... in colour: the unit RGB direction of the excess spreads by at least DYE_MIN_CHROMA between
# its channels (a grey brightness offset: 0; the synthetic merges' excess, a mix of dyes, labels
# and blur: 0.15-0.37), at least MERGE_MIN_ANGLE degrees from the dimmer side's own colour (a gain
# change adds the same hue; gain 1.1 plus offset 15 on brown tissue: ~13 degrees; merges: 32-37).
DYE_MIN_CHROMA = 0.12
MERGE_MIN_ANGLE = 20.0
# At most this many pixels are compared (a regular subsample: enough for the shares above).
REPEAT_SAMPLES = 4000
# The pair is read this share of its size around its regions too: the other dyes may be dark
# under the region itself (where only the channel's stain is) but show around it.
REPEAT_CONTEXT = 0.15
# A lattice's auto-correlation (normalised by its energy, so a full-overlap repeat is 1) peaks at
# one period with roughly the share of the region that overlaps its shifted self (0.8-0.95 for
# regions a few periods wide); natural texture and copied regions stay below ~0.3 away from zero.
LATTICE_MIN_PEAK = 0.5
# A verified region filling less than this share of its box is scattered spots (a blurred lattice
# agrees at its dots: 9% of the box on a dev set 8118 look-alike); its box is read instead. On the
# development sets 5 of 612 decided pairs were this sparse, none of them a true copy.
LATTICE_SPARSE_FILL = 0.25
# Two peaks this many degrees apart span a lattice (a row of lanes repeats along one line only).
LATTICE_MIN_ANGLE = 30.0
# A mirrored pair's source is its own mirror image when its reflected fine detail correlates with
# itself this well (over at least SELF_MIRROR_MIN_SHARE of it). On the development sets (seeds
# 2002-4004) the true mirrored copies found without exact hashing reached 0.42 at most; the one
# authentic image flagged by a mirror, neighbouring gel lanes, 0.71.
SELF_MIRROR_ZNCC = 0.6
SELF_MIRROR_MIN_SHARE = 0.5
# A mirrored pair is one object's two halves when some pixel of the source lies within this many
# minimum shifts of its own image (the blind zone verification leaves around the axis is one
# minimum shift wide). On the development and tuning sets (seeds 1001-4004, all at full
# resolution) the pairs of this kind on authentic images came within 5.0-11.6 px; the nearest
# true mirrored copy 17.7 px (a copy pasted a few pixels beside its source), the rest 22 px and more.
HALVES_MAX_GAP = 1.4
# Two regions in two panels are placed by the layout when they sit this close (px) to the same
# offset from a corner of their panels and cover at most this share of each: on the development
# figures (seeds 2002-4004) every such pair was a repeated label (one authentic figure flagged,
# a forged one given three wrong pairs), and no true copy was one.
ALIGNED_PX = 2
ALIGNED_MAX_SHARE = 0.25

Box = tuple[int, int, int, int]  # x, y, w, h


def _window_pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A regular subsample of the pixels in ``mask``'s box grown by ``REPEAT_CONTEXT`` on each side."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gy, gx = int(REPEAT_CONTEXT * (y1 - y0)), int(REPEAT_CONTEXT * (x1 - x0))
    y0, y1, x0, x1 = max(0, y0 - gy), min(h, y1 + gy), max(0, x0 - gx), min(w, x1 + gx)
    step = max(1, int(np.sqrt((y1 - y0) * (x1 - x0) / REPEAT_SAMPLES)))
    yy, xx = np.mgrid[y0:y1:step, x0:x1:step]
    return yy.ravel(), xx.ravel()


def _direction(colours: np.ndarray) -> np.ndarray:
    """Unit RGB direction holding most of the colours' energy (uncentred: a dye is a line through black)."""
    _, _, vt = np.linalg.svd(colours.astype(np.float64), full_matrices=False)
    v = vt[0]
    return v if v.sum() >= 0 else -v


def _near_max(rgb: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(N, 3) int16: per channel, the largest value in the ``MERGE_NEAR_PX`` square around each
    sampled pixel (the image's edge repeated), read at the samples only, not over the image."""
    h, w = rgb.shape[:2]
    r = MERGE_NEAR_PX // 2
    out = rgb[ys, xs]
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out = np.maximum(out, rgb[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)])
    return out.astype(np.int16)


def channel_of_merge(rgb: np.ndarray, source: np.ndarray, copy: np.ndarray, m: np.ndarray,
                     ignore: Optional[np.ndarray] = None) -> bool:
    """Whether the pair (working masks, map ``m`` source -> copy) is a channel and the merge that
    contains it: around the pair (``REPEAT_CONTEXT``), one side is dark like a fluorescence channel
    and the other is it plus light of another dye, i.e. the difference is non-negative nearly
    everywhere (``MERGE_TOL``, ``MERGE_MIN_SHARE``),
    large on a share of the pixels (``MERGE_MIN_EXTRA*``), saturated (a dye, not a brightness
    offset: ``DYE_MIN_CHROMA``) and of another hue than the dimmer side's own colour under the
    region (``MERGE_MIN_ANGLE``: not a gain change; the surroundings may hold a neighbouring
    panel's dye). Regions and their surroundings are read, not panels: blur or JPEG can fill the
    gutters between panels, and exact hashing grows a region across them. Pixels where either
    side is in ``ignore`` (labels, scale bars, page: the detector's excluded mask) are not read:
    a channel's name differs from "Merge" in white, not in a dye."""
    h, w = source.shape
    if not source.any():
        return False
    ys, xs = _window_pixels(source)
    m = np.asarray(m, np.float64)
    px = np.rint(m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(int)
    py = np.rint(m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(int)
    keep = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    ys, xs, px, py = ys[keep], xs[keep], px[keep], py[keep]
    if ignore is not None:
        read = (ignore[ys, xs] == 0) & (ignore[py, px] == 0)
        ys, xs, px, py = ys[read], xs[read], px[read], py[read]
    if len(ys) < 16:
        return False
    a = rgb[ys, xs].astype(np.int16)
    b = rgb[py, px].astype(np.int16)
    # the brighter side's largest value near each pixel: a map a pixel or two off (a dense-field
    # fit, JPEG ringing at a dye's edge) must not make the merge look darker than its channel
    a_near, b_near = _near_max(rgb, ys, xs), _near_max(rgb, py, px)
    core = source[ys, xs] > 0  # under the region itself (a's side; b is its partner under the copy)
    for dim, bright, bright_near in ((a, b, b_near), (b, a, a_near)):
        if float(np.median(dim.max(axis=1))) > FLUORESCENCE_MAX_MEDIAN:
            continue  # not a fluorescence channel: those are light on black
        d = bright - dim
        if float(np.mean((bright_near - dim >= -MERGE_TOL).all(axis=1))) < MERGE_MIN_SHARE:
            continue
        extra = d[d.max(axis=1) >= MERGE_MIN_EXTRA]
        # the dimmer side's own colour, from its coloured pixels under the region (gutters and
        # page are grey)
        own = dim[core]
        lit = own[(own.max(axis=1) >= DYE_MIN_LEVEL) & (np.ptp(own, axis=1) >= DYE_MIN_LEVEL)]
        if len(extra) < MERGE_MIN_EXTRA_SHARE * len(d) or len(lit) < 16:
            continue
        v, u = _direction(extra), _direction(lit)
        if v.max() - v.min() >= DYE_MIN_CHROMA and np.degrees(np.arccos(min(1.0, float(u @ v)))) >= MERGE_MIN_ANGLE:
            return True
    return False


def lattice(band: np.ndarray, source: np.ndarray, min_shift: float) -> bool:
    """Whether the fine detail under ``source`` repeats along two directions (a lattice: wells,
    gratings of dots, tiles): its auto-correlation away from zero shift peaks above
    ``LATTICE_MIN_PEAK`` at two offsets more than ``LATTICE_MIN_ANGLE`` apart. A lattice matches
    itself under every shift, mirror and turn of its symmetry, so none of them is evidence. Blot
    lanes repeat along one direction only and keep their evidence. A region scattered over its
    box (under ``LATTICE_SPARSE_FILL`` of it) is read with its whole box: its pixels are agreeing
    spots of the texture they lie in, and they overlap their shifted selves too little to show
    its period."""
    ys, xs = np.nonzero(source)
    if len(ys) == 0:
        return False
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    inside = source[y0:y1, x0:x1] > 0
    if inside.mean() < LATTICE_SPARSE_FILL:
        inside = np.ones_like(inside)
    a = band[y0:y1, x0:x1] * inside
    a = (a - a[inside].mean()) * inside
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


def self_mirrored(band: np.ndarray, source: np.ndarray, m: np.ndarray) -> bool:
    """Whether a mirroring map's source region is its own mirror image: its fine detail reflected
    about its own centre the way ``m`` reflects it (rotation kept, scale removed) correlates with
    itself at ``SELF_MIRROR_ZNCC`` or more."""
    m = np.asarray(m, np.float64)
    linear = m[:, :2] / np.sqrt(abs(np.linalg.det(m[:, :2])) + 1e-12)
    if np.linalg.det(linear) >= 0 or not source.any():
        return False
    ys, xs = np.nonzero(source)
    centre = np.array([xs.mean(), ys.mean()])
    reflect = np.hstack([linear, (centre - linear @ centre)[:, None]])
    h, w = band.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    mirrored = cv2.warpAffine(band.astype(np.float32), reflect, (w, h), flags=flags)
    inside = cv2.warpAffine(source.astype(np.float32), reflect, (w, h), flags=flags) > 0.5
    both = (source > 0) & inside
    if both.sum() < SELF_MIRROR_MIN_SHARE * source.sum():
        return False
    a, b = band[both] - band[both].mean(), mirrored[both] - mirrored[both].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9)) >= SELF_MIRROR_ZNCC


def mirror_halves(source: np.ndarray, m: np.ndarray, min_shift: float) -> bool:
    """Whether a mirroring map brings some pixel of ``source`` within ``HALVES_MAX_GAP`` minimum
    shifts of itself: source and copy meet at the mirror axis, two halves of one object."""
    if not mirrors(m) or not source.any():
        return False
    ys, xs = np.nonzero(source)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    gap = np.linalg.norm(apply(m, pts) - pts, axis=1).min()
    return bool(gap <= HALVES_MAX_GAP * min_shift)


def panel_aligned(source_box: Box, copy_box: Box, source_panel: Box, copy_panel: Box,
                  areas: Optional[tuple[int, int]] = None) -> bool:
    """Whether two regions (boxes x, y, w, h) in two panels sit at the same offset, within
    ``ALIGNED_PX``, from the same corner of their panels, each covering at most
    ``ALIGNED_MAX_SHARE`` of its panel's area: a label the layout repeats in every panel.
    ``areas``: the regions' pixel counts, when known (a scale bar and a tick mark far apart make
    one region with a large box but few pixels); else their boxes' areas."""
    def corners(box: Box, panel: Box) -> np.ndarray:
        x, y, w, h = box
        px, py, pw, ph = panel
        return np.array([(x - px, y - py), (x + w - px - pw, y - py), (x - px, y + h - py - ph),
                         (x + w - px - pw, y + h - py - ph)], np.float64)

    sizes = areas if areas is not None else (source_box[2] * source_box[3], copy_box[2] * copy_box[3])
    small = all(a <= ALIGNED_MAX_SHARE * p[2] * p[3] for a, p in zip(sizes, (source_panel, copy_panel)))
    offsets = np.abs(corners(source_box, source_panel) - corners(copy_box, copy_panel)).max(axis=1)
    return small and bool((offsets <= ALIGNED_PX).any())


def legitimate_repeat(rgb: np.ndarray, band: np.ndarray, source: np.ndarray, copy: np.ndarray,
                      m: np.ndarray, min_shift: float, ignore: Optional[np.ndarray] = None,
                      beyond_look: bool = False, layout: Optional[tuple[Box, Box, Box, Box]] = None,
                      source_parts: Sequence[np.ndarray] = ()) -> Optional[str]:
    """The reason a verified pair is a repeat by design, or None: "panel_aligned" (asked when the
    ``layout`` is given: the boxes of the source, the copy and their two panels, which differ),
    "channel_of_merge", "lattice", "mirror_halves", or "self_mirrored" (not asked when the pair's search proved
    more than a look-alike match, ``beyond_look``: exact pixels, a lane's residual). ``ignore``:
    pixels never read (see ``channel_of_merge``). ``source_parts``: the source's pixels in each
    panel holding a large part of it, which the channel/merge test reads one by one: a region
    grown across the gutters of a channel figure spans panels (one channel to its merge, but also
    one channel to the next, or a row whose other dyes are empty), and one part that is a channel
    and its merge makes the pair one."""
    if layout is not None and panel_aligned(*layout, areas=(int(np.count_nonzero(source)),
                                                           int(np.count_nonzero(copy)))):
        return "panel_aligned"
    if any(channel_of_merge(rgb, part, copy, m, ignore) for part in (source_parts or (source,))):
        return "channel_of_merge"
    if lattice(band, source, min_shift):
        return "lattice"
    if mirror_halves(source, m, min_shift):
        return "mirror_halves"
    if not beyond_look and self_mirrored(band, source, m):
        return "self_mirrored"
    return None
