"""Judging computed evidence: cheap, pure functions of a ``Detection`` and ``DecisionParams``.

Calibration calls ``decide`` over a grid of parameters on cached detections, so nothing here
touches pixels except ``instances_of``, which only resizes the kept regions' masks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from preprocessing.matching.params import DecisionParams
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


def decide(det: Detection, params: DecisionParams = DecisionParams()) -> list[CopyPair]:
    """The candidates that pass ``params`` (no image work)."""
    return [p for p in det.candidates if passes(p, params)]


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
