"""Judging computed evidence: cheap, pure functions of a ``Detection`` and ``DecisionParams``.

Calibration calls ``decide`` over a grid of parameters on cached detections, so nothing here
touches pixels except ``instances_of``, which only resizes the kept regions' masks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from preprocessing.matching.params import (
    AXIS_PX,
    HALF_TURN_TOL_DEG,
    JPEG_BLOCK,
    PART_INSIDE,
    UNAMBIGUOUS_MAX_SCALE,
    DecisionParams,
)
from preprocessing.matching.results import CopyPair, Detection, Transform


def ambiguous_map(t: Transform) -> bool:
    """Whether two distinct look-alike objects match under ``t`` as easily as a copy does: a
    mirror or a half turn (a band, a nucleus, a cell is mirror- or point-symmetric, so its twin
    matches it that way too) or a rescale beyond ``UNAMBIGUOUS_MAX_SCALE`` (look-alikes come in
    every size; copies are rescaled a little). Such maps need ``min_inliers``."""
    half_turn = abs(abs(t.angle) - 180.0) < HALF_TURN_TOL_DEG
    in_scale = 1.0 / UNAMBIGUOUS_MAX_SCALE <= t.scale <= UNAMBIGUOUS_MAX_SCALE
    return t.flip or half_turn or not in_scale


def ambiguous(p: CopyPair) -> bool:
    """Whether look-alikes could give ``p`` as easily as a copy: its map is ambiguous
    (``ambiguous_map``) or it lies in a laned blot or gel, whose lanes and bands are look-alikes
    under a shift by the lane spacing (the lane stage compares those lanes on their residuals)."""
    return p.laned or ambiguous_map(p.transform)


def on_jpeg_grid(p: CopyPair) -> bool:
    """Whether ``p``'s shift is a whole number of JPEG blocks (8 px) both ways: JPEG quantises each
    block alone, so two look-alike areas on one grid (like lanes of a gel 32 px apart) can come out
    pixel-identical, while a copy pasted off the grid after compression stays exact only off it."""
    dx, dy = p.shift
    return round(dx) % JPEG_BLOCK == 0 and round(dy) % JPEG_BLOCK == 0


def along_an_axis(p: CopyPair) -> bool:
    """Whether ``p``'s shift runs along a row or a column (within ``AXIS_PX``): a figure repeats
    its labels and marks at the same height or the same offset in every panel of a row or column,
    and where blur has erased the gutters, ``repeats.panel_aligned`` cannot see the panels."""
    return min(abs(v) for v in p.shift) < AXIS_PX


def enough_inliers(p: CopyPair, params: DecisionParams) -> bool:
    """Whether the keypoint inliers behind ``p`` suffice: ``min_inliers`` for an ambiguous pair
    (``ambiguous``), ``min_inliers_unambiguous`` otherwise (never more than ``min_inliers``)."""
    bar = params.min_inliers if ambiguous(p) else min(params.min_inliers, params.min_inliers_unambiguous)
    return p.inliers > 0 and p.inliers >= bar


def passes(p: CopyPair, params: DecisionParams) -> bool:
    """Whether one candidate passes: found by a search that counts (enough keypoint inliers,
    the dense search, a lane pair, or enough exactly recurring blocks), and its region agrees well enough
    over a large enough area (exact copies are exempt from the area floor: pixel-for-pixel
    recurrence over ``min_exact_blocks`` blocks is evidence at any size; over
    ``min_exact_blocks_sized`` blocks, at ``min_area`` and up, unless look-alikes or the layout
    could give it: ``ambiguous``, ``on_jpeg_grid``, ``along_an_axis``)."""
    exact = p.exact_blocks >= params.min_exact_blocks or (
        p.exact_blocks >= params.min_exact_blocks_sized and p.area >= params.min_area
        and not (ambiguous(p) or on_jpeg_grid(p) or along_an_axis(p)))
    keypoints = enough_inliers(p, params)
    dense = p.dense and params.use_dense and p.correlation >= params.min_dense_correlation
    lane = p.lane >= params.min_lane_score
    if not (keypoints or dense or exact or lane) or p.strength < params.min_strength:
        return False
    return exact or (p.correlation >= params.min_correlation and p.area >= params.min_area)


def part_of(p: CopyPair, q: CopyPair) -> bool:
    """Whether both of ``p``'s regions lie inside ``q``'s (either way round): ``p`` is a piece of
    the copy ``q`` already reports, found again by another search or in the other direction."""
    t = PART_INSIDE
    return ((p.source.inside(q.source) >= t and p.copy.inside(q.copy) >= t)
            or (p.source.inside(q.copy) >= t and p.copy.inside(q.source) >= t))


def decided(det: Detection, params: DecisionParams = DecisionParams()) -> list[int]:
    """Indices of the candidates that pass ``params``, without those that are a part of another
    passing pair (of two that are parts of each other, the first stays): one pair per copy. A
    lane pair inside a laned blot's other pair stays instead of it (``lane_preferred``)."""
    passing = [k for k, p in enumerate(det.candidates) if passes(p, params)]
    c = det.candidates

    def gives_way(k: int, j: int) -> bool:
        if lane_preferred(c[k], c[j]):
            return False
        if lane_preferred(c[j], c[k]):
            return True
        return part_of(c[k], c[j]) and (j < k or not part_of(c[j], c[k]))

    return [k for k in passing if not any(gives_way(k, j) for j in passing if j != k)]


def lane_preferred(p: CopyPair, q: CopyPair) -> bool:
    """Whether ``p``, found lane by lane, lies inside ``q``, a pair in a laned blot found otherwise:
    ``p``'s regions follow the lanes, while ``q``'s grew across like lanes, so ``p`` reports the copy."""
    return p.lane > 0 and q.lane == 0 and q.laned and part_of(p, q)


def decide(det: Detection, params: DecisionParams = DecisionParams()) -> list[CopyPair]:
    """The candidates ``decided`` keeps (no image work)."""
    return [det.candidates[k] for k in decided(det, params)]


def instances_of(pairs: Sequence[CopyPair], shape: tuple[int, int]) -> list[np.ndarray]:
    """(H, W) uint8 0/1 masks at the original resolution: each pair's source, then its copy;
    [] means authentic."""
    out = []
    for p in pairs:
        for region in (p.source, p.copy):
            if tuple(region.shape) != tuple(shape):
                region = replace(region, shape=tuple(shape))
            out.append(region.mask())
    return out
