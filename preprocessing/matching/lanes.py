"""Lanes: blot and gel panels compared lane by lane (the Kaggle winner's largest single gain).

Keypoints see few corners on a blot and a lane pasted with a gain change, a mirror or a slight
rescale is not pixel-exact, so neither the keypoint nor the exact search finds it. Here, per
blot panel (``panels.panel_kind`` says "blot" for blots and gels alike):
1. background removal: a grey-level closing (dark bands) or opening (bright bands) with a
   horizontal line longer than a lane fills each lane with its membrane; the difference is the
   band signal;
2. lanes: runs of columns whose mean band signal stands out (``lane_spans``);
3. each lane loses what all lanes share (``lane_residual``: a low-rank model of band and lane
   profiles), leaving the noise and grain a copy carries and a different lane does not;
4. every pair of lanes: tiles of one lane (band groups, ``LANE_TILE_*``), mirrored and
   rescaled, are searched in the other lanes allowing ``LANE_SHIFT_PX`` of sideways and
   ``LANE_SHIFT_Y_PX`` of vertical shift, by normalised cross-correlation of the residuals;
5. a tile that correlates well with one other lane, and clearly better than with any other
   (``LANE_MARGIN``), proposes its map, which goes through the same verification as every
   other candidate (``verify``) and becomes a ``CopyPair`` whose ``lane`` is that correlation.
Mirrored neighbouring bands and a lane's own symmetric halves touch their partner and are
dropped by ``detector.touching``; similar but different lanes share band positions, not noise.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from preprocessing.matching.hypotheses import Hypothesis, apply

# A lane's columns stand out from the panel's quietest columns by this share of the range between
# the quietest (10th percentile) and the strongest (95th) column: halfway would cut faint lanes,
# lower would join neighbours through the shoulders of their bands.
LANE_LEVEL = 0.3
# Lanes narrower than this (working px) are noise or a band's edge; synthetic and real lanes in
# figures are 6 px and up.
LANE_MIN_PX = 5
# A blot panel needs at least this many lanes: a pair, and a third lane that the margin test
# (LANE_MARGIN) compares against; at most this many (more runs mean the profile is noise, not
# lanes; it also bounds the pairs compared).
LANE_MIN_COUNT = 3
LANE_MAX_COUNT = 24
# A gel's lanes have like widths at a like spacing; column runs of a micrograph do not (on
# synthetic blots and gels the widths' and spacings' coefficients of variation were <= 0.38, on
# grey micrographs mostly 0.4-1.2): only regular lanes keep the keypoints' higher threshold.
REGULAR_LANES_CV = 0.4
# A blot's lanes differ in their noise and grain only: after the low-rank model (``lane_residual``)
# the smoothed (sigma 1) residual keeps at most this share of the smoothed lane's spread (median
# over lanes). Synthetic blots and gels of the dev sets: at most 0.18 as standalone images, 0.24
# in figures (but 0.30 for a strip whose +/- labels lie inside the panel); photographs with
# column structure (brick walls, rows of coins, micrographs: 6 of the 11 authentic images flagged
# on the dev sets 8008-8338, unseen style, through their "lanes") keep 0.25-0.73 of it: their
# columns differ in kind. Such a panel is not laned: no lane stage, no blot thresholds.
LANE_MAX_RESIDUAL_SHARE = 0.25
LANE_RESIDUAL_SIGMA = 1.0
# The background is estimated with a horizontal line this share of the panel width (at least
# LANE_BG_MIN_PX): longer than a lane (a figure's blot shows 3-12), so it reaches the membrane.
LANE_BG_FRACTION = 0.25
LANE_BG_MIN_PX = 15
# Each lane (with LANE_SHIFT_PX of margin) loses its rank-LANE_MODEL_RANK approximation before
# lanes are compared: a lane is close to band profile x lane profile (rank 1; a second term
# takes smiles and uneven loading), and that structure is what different lanes of one blot share
# (their band edges correlate at 0.6-0.95). What remains is sensor noise and grain, which a copy
# carries and a different lane does not (a development probe on 24 lane copies in synthetic blots,
# after JPEG: the copy's partner ranked first among all lanes 16 times with rank 1, 23 with rank 2).
LANE_MODEL_RANK = 2
# Tiles: a band group is about two lane widths tall; tiles overlap by half so a copied group lies
# mostly inside one. Short strips are compared as whole lanes.
LANE_TILE_WIDTHS = 2.0
LANE_TILE_MIN_PX = 12
# Sideways slack when looking for a tile in another lane: a pasted lane rarely lands on the exact
# column of the lane it covers.
LANE_SHIFT_PX = 4
# Vertical slack: a lane pasted onto another keeps its bands near their molecular weights (the
# marker lane and the other lanes read them), so a tile is looked for around its own height. It
# also bounds the search: the whole lane height made a 360 px panel of 17 lanes take 24 s.
LANE_SHIFT_Y_PX = 8
# Tiles per panel (shared by its lanes; taller tiles when there are many lanes): bounds the
# searches at LANE_MAX_TILES x 20 variants per panel.
LANE_MAX_TILES = 48
# Mirrors tried: none, left-right, up-down, both (a pasted lane is most often mirrored
# left-right; the other two cost little).
LANE_FLIPS = ((False, False), (True, False), (False, True), (True, True))
# Scales tried besides 1: a lane rescaled by 0.8-1.25 is found at the nearest of these.
LANE_SCALES = (0.8, 0.9, 1.0, 1.1, 1.25)
# A tile proposes its map when its residual correlates at least this well with its best place in
# another lane (copies after JPEG 85, mirrors and 0.9x rescales: 0.4-0.8; other lanes mostly
# below 0.35) ...
LANE_TILE_ZNCC = 0.4
# ... and beats its best place in every other lane by this margin: a copy is one lane's twin,
# while a lane that resembles all its neighbours is a regular blot.
LANE_MARGIN = 0.15
# Tiles flatter than this (standard deviation of the residual, grey levels) carry no evidence.
LANE_TILE_MIN_STD = 0.5
# At most this many lane maps are verified per image (best correlation first).
LANE_MAX_HYPOTHESES = 16


@dataclass(frozen=True)
class LaneTile:
    """A tile of a lane: working-pixel box (x, y, w, h)."""

    x: int
    y: int
    w: int
    h: int


def band_signal(gray: np.ndarray) -> np.ndarray:
    """float32 band strength of a blot or gel panel (0 on the membrane): the panel minus its
    background, whichever way its bands go (dark on light for blots, light on dark for gels)."""
    g = gray.astype(np.float32)
    length = max(LANE_BG_MIN_PX, int(LANE_BG_FRACTION * g.shape[1])) | 1
    line = cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1))
    dark_bands = float(np.median(g)) >= float(g.mean())  # bands pull the mean below the membrane
    if dark_bands:
        return cv2.morphologyEx(g, cv2.MORPH_CLOSE, line) - g
    return g - cv2.morphologyEx(g, cv2.MORPH_OPEN, line)


def lane_spans(signal: np.ndarray) -> list[tuple[int, int]]:
    """[x0, x1) column runs of lanes (the columns whose mean band signal stands out); [] when
    the panel does not show between ``LANE_MIN_COUNT`` and ``LANE_MAX_COUNT`` lanes."""
    profile = cv2.GaussianBlur(signal.mean(axis=0, dtype=np.float64).reshape(1, -1), (0, 0), 1.0).ravel()
    lo, hi = np.percentile(profile, (10, 95))
    if hi - lo <= 1e-3:
        return []
    on = np.concatenate([[False], profile > lo + LANE_LEVEL * (hi - lo), [False]])
    edges = np.flatnonzero(on[1:] != on[:-1])
    spans = [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2]) if b - a >= LANE_MIN_PX]
    return spans if LANE_MIN_COUNT <= len(spans) <= LANE_MAX_COUNT else []


def regular(spans: list[tuple[int, int]]) -> bool:
    """Whether column runs look like a gel's lanes: at least 3, of like width at a like spacing
    (coefficients of variation at most ``REGULAR_LANES_CV``)."""
    if len(spans) < LANE_MIN_COUNT:
        return False
    widths = np.array([b - a for a, b in spans], np.float64)
    steps = np.diff([(a + b) / 2 for a, b in spans])
    return bool(widths.std() <= REGULAR_LANES_CV * widths.mean() and steps.std() <= REGULAR_LANES_CV * steps.mean())


def residual_share(gray: np.ndarray, spans: list[tuple[int, int]]) -> float:
    """Median over lanes of the smoothed ``lane_residual``'s spread over the smoothed lane's own:
    how much of a lane its shared band and lane profiles leave unexplained (see
    ``LANE_MAX_RESIDUAL_SHARE``)."""
    row, where = _strips(gray, spans)
    shares = []
    for at, width, first in where:
        smooth = [cv2.GaussianBlur(np.ascontiguousarray(a, dtype=np.float32), (0, 0), LANE_RESIDUAL_SIGMA).std()
                  for a in (row[:, at:at + width], gray[:, first:first + width])]
        shares.append(smooth[0] / max(float(smooth[1]), 1e-3))
    return float(np.median(shares)) if shares else 0.0


def regular_lanes(gray: np.ndarray, panels) -> dict:
    """{box (x, y, w, h): its lane spans} for the blot and gel panels of ``panels`` ((box, kind)
    pairs) whose lanes are ``regular`` and differ in their noise only (``residual_share``).
    Computed once per image: the keypoint search raises its threshold there (lanes and bands are
    look-alikes by nature) and the lane stage compares them."""
    out = {}
    for (x, y, w, h), kind in panels:
        if kind == "blot":
            panel = gray[y:y + h, x:x + w]
            spans = lane_spans(band_signal(panel))
            if regular(spans) and residual_share(panel, spans) <= LANE_MAX_RESIDUAL_SHARE:
                out[(x, y, w, h)] = spans
    return out


def laned_boxes(gray: np.ndarray, panels) -> list:
    """The boxes of ``regular_lanes``."""
    return list(regular_lanes(gray, panels))


def lane_tiles(span: tuple[int, int], height: int, max_tiles: int = LANE_MAX_TILES) -> Iterator[LaneTile]:
    """Overlapping tiles down one lane (panel coordinates), at most about ``max_tiles``."""
    x0, x1 = span
    t = int(min(height, max(LANE_TILE_MIN_PX, LANE_TILE_WIDTHS * (x1 - x0), np.ceil(2 * height / (max_tiles + 1)))))
    step = max(1, t // 2)
    ys = list(range(0, height - t + 1, step))
    if ys[-1] != height - t:
        ys.append(height - t)
    for y in ys:
        yield LaneTile(x0, y, x1 - x0, t)


def lane_residual(strip: np.ndarray) -> np.ndarray:
    """A lane strip minus its rank-``LANE_MODEL_RANK`` approximation (the band and lane profiles
    every lane shares), float32: the noise and grain that identify one lane."""
    a = strip.astype(np.float64)
    u, d, vt = np.linalg.svd(a, full_matrices=False)
    k = min(LANE_MODEL_RANK, len(d))
    return (a - (u[:, :k] * d[:k]) @ vt[:k]).astype(np.float32)


def _tile_map(tile: LaneTile, flip_x: bool, flip_y: bool, tw: int, th: int, at_x: float, at_y: float) -> np.ndarray:
    """2x3 map from a tile's pixels to where its (mirrored, resized to tw x th) image was found
    with its top-left at (at_x, at_y); all in the same coordinates."""
    to_tile = np.array([[1.0, 0, -tile.x], [0, 1.0, -tile.y], [0, 0, 1.0]])
    mirror = np.array([[-1.0 if flip_x else 1.0, 0, tile.w - 1 if flip_x else 0],
                       [0, -1.0 if flip_y else 1.0, tile.h - 1 if flip_y else 0], [0, 0, 1.0]])
    sx, sy = tw / tile.w, th / tile.h  # pixel centres: u' = (u + 0.5) s - 0.5
    resize = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    place = np.array([[1.0, 0, at_x], [0, 1.0, at_y], [0, 0, 1.0]])
    return (place @ resize @ mirror @ to_tile)[:2]


def _variants(patch: np.ndarray) -> Iterator[tuple[bool, bool, np.ndarray]]:
    for flip_x, flip_y in LANE_FLIPS:
        p = np.ascontiguousarray(patch[::-1 if flip_y else 1, ::-1 if flip_x else 1])
        for s in LANE_SCALES:
            if s == 1.0:
                yield flip_x, flip_y, p
            else:
                size = (max(2, int(round(p.shape[1] * s))), max(2, int(round(p.shape[0] * s))))
                yield flip_x, flip_y, cv2.resize(p, size, interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class LaneMatch:
    """A lane-pair map (image pixels) with the tile correlation that proposed it, and the two
    lanes' boxes (x, y, w, h, image pixels, with ``LANE_SHIFT_PX`` of margin): verification
    stays inside them, since the lanes of a blot repeat at its lane pitch and a region grown
    freely would spread to the neighbouring lanes."""

    score: float
    hypothesis: Hypothesis
    lanes: tuple

    def outside(self, shape: tuple[int, int]) -> np.ndarray:
        """uint8 mask of everything but the two lanes."""
        out = np.ones(shape, np.uint8)
        for x, y, w, h in self.lanes:
            out[y:y + h, x:x + w] = 0
        return out


def _strips(gray: np.ndarray, spans: list[tuple[int, int]]) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The lanes' residual strips side by side (one ``matchTemplate`` searches them all) and,
    per lane, (first column in the row, its width, its first column in the panel)."""
    h, w = gray.shape
    parts, where, at = [], [], 0
    for x0, x1 in spans:
        a, b = max(0, x0 - LANE_SHIFT_PX), min(w, x1 + LANE_SHIFT_PX)
        parts.append(lane_residual(gray[:, a:b]))
        where.append((at, b - a, a))
        at += b - a
    return np.ascontiguousarray(np.concatenate(parts, axis=1)), where


def panel_lane_matches(gray: np.ndarray, excluded: np.ndarray, box, spans: list, min_shift: float) -> list[LaneMatch]:
    """Lane-pair maps of one blot panel ``box`` (x, y, w, h, working pixels) with its regular lane
    ``spans`` (``regular_lanes``: column runs of a micrograph or a smooth membrane are no lanes,
    and their smooth residuals match under a rescale and a mirror), one per distinct map, in
    image pixels."""
    x, y, w, h = box
    panel = gray[y:y + h, x:x + w]
    row, where = _strips(panel, spans)
    bad = excluded[y:y + h, x:x + w]
    found: dict = {}
    for i, span in enumerate(spans):
        at, _, first = where[i]
        for tile in lane_tiles(span, h, max(1, LANE_MAX_TILES // len(spans))):
            patch = row[tile.y:tile.y + tile.h, at + tile.x - first:at + tile.x - first + tile.w]
            if float(patch.std()) < LANE_TILE_MIN_STD or bad[tile.y:tile.y + tile.h, tile.x:tile.x + tile.w].any():
                continue
            best = {}  # other lane -> (score, map)
            for flip_x, flip_y, tpl in _variants(patch):
                th, tw = tpl.shape
                # rows where the tile's top may land: its own height, give or take the slack and
                # the growth of a rescaled tile (bands stay at their molecular weights)
                top = int(max(0, min(h - th, tile.y - LANE_SHIFT_Y_PX - abs(th - tile.h))))
                bottom = int(min(h, max(top + th, tile.y + tile.h + LANE_SHIFT_Y_PX + abs(th - tile.h))))
                if bottom - top < th or tw > row.shape[1]:  # a 1.25x tile can outgrow a short panel
                    continue
                res = cv2.matchTemplate(row[top:bottom], tpl, cv2.TM_CCOEFF_NORMED)
                for j, (bt, bw, bfirst) in enumerate(where):
                    if j == i or bw < tw or abs(sum(span) - sum(spans[j])) / 2.0 < min_shift:
                        continue
                    _, score, _, (lx, ly) = cv2.minMaxLoc(res[:, bt:bt + bw - tw + 1])
                    if score > best.get(j, (-1.0,))[0]:
                        best[j] = (score, _tile_map(tile, flip_x, flip_y, tw, th, bfirst + lx, top + ly), j)
            ranked = sorted(best.values(), key=lambda t: -t[0])
            if not ranked or ranked[0][0] < LANE_TILE_ZNCC:
                continue
            score, m, j = ranked[0]
            if len(ranked) > 1 and score - ranked[1][0] < LANE_MARGIN:
                continue
            key = tuple(np.round(m[:, :2], 1).ravel()) + (int(round(m[0, 2] / 2)), int(round(m[1, 2] / 2)))
            if score > found.get(key, (0.0,))[0]:
                found[key] = (score, m, tile, (i, j))
    out = []
    shift = np.array([[1.0, 0, x], [0, 1.0, y], [0, 0, 1.0]])
    for score, m, tile, pair in found.values():
        image_map = (shift @ np.vstack([m, [0, 0, 1.0]]) @ np.linalg.inv(shift))[:2]
        gx, gy = np.meshgrid(np.arange(tile.x, tile.x + tile.w, 2.0), np.arange(tile.y, tile.y + tile.h, 2.0))
        seeds = np.stack([gx.ravel() + x, gy.ravel() + y], 1)
        boxes = tuple((x + where[k][2], y, where[k][1], h) for k in pair)
        out.append(LaneMatch(float(score), Hypothesis(image_map, seeds, apply(image_map, seeds), 0, "lanes"), boxes))
    return out


def lane_matches(gray: np.ndarray, excluded: np.ndarray, lanes: dict, min_shift: float) -> list[LaneMatch]:
    """Lane-pair maps of every panel of ``lanes`` (``regular_lanes``; working pixels), best first,
    at most ``LANE_MAX_HYPOTHESES``."""
    out = []
    for box, spans in lanes.items():
        out += panel_lane_matches(gray, excluded, box, spans, min_shift)
    out.sort(key=lambda t: -t.score)
    return out[:LANE_MAX_HYPOTHESES]
