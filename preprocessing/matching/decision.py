"""Judging computed evidence: cheap, pure functions of a ``Detection`` and ``DecisionParams``.

Calibration calls ``decide`` over a grid of parameters on cached detections, so nothing here
touches pixels except ``instances_of``, which only resizes the kept regions' masks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from preprocessing.matching.params import PART_INSIDE, DecisionParams
from preprocessing.matching.results import CopyPair, Detection


def passes(p: CopyPair, params: DecisionParams) -> bool:
    """Whether one candidate passes: found by a search that counts (enough keypoint inliers,
    the dense search, a lane pair, or enough exactly recurring blocks), and its region agrees well enough
    over a large enough area (exact copies are exempt from the area floor: pixel-for-pixel
    recurrence over ``min_exact_blocks`` blocks is evidence at any size)."""
    exact = p.exact_blocks >= params.min_exact_blocks
    keypoints = p.inliers >= params.min_inliers
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
    passing pair (of two that are parts of each other, the first stays): one pair per copy."""
    passing = [k for k, p in enumerate(det.candidates) if passes(p, params)]
    c = det.candidates
    return [k for k in passing
            if not any(part_of(c[k], c[j]) and (j < k or not part_of(c[j], c[k])) for j in passing if j != k)]


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
