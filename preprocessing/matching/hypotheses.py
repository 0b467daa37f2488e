"""Candidate transforms from keypoint matches: grouped by implied rotation/scale, then RANSAC.

Each match implies a rotation (difference of the keypoint orientations) and a scale (ratio of
their sizes). Matches are binned by both (each also into its nearest neighbouring bins), so a
small copy's few matches are not drowned by outliers spread over all bins; inside a bin,
RANSAC on a similarity (``cv2.estimateAffinePartial2D``) is repeated, removing inliers, until
no model has enough support. Every match is used in both directions (a -> b and b -> a) so
that RANSAC does not depend on which side of a copy is called the source; once a model takes
a match, the match is spent in both directions, so a transform and its inverse are not both
proposed. Mirrored matches are fitted with the source x negated and the mirror composed back.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from preprocessing.matching import params as P
from preprocessing.matching.keypoints import Features, Matches

MIRROR = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class Hypothesis:
    """A candidate source -> copy map (2x3, working pixels) with its supporting matches."""

    matrix: np.ndarray
    src: np.ndarray  # (K, 2) inlier source points
    dst: np.ndarray  # (K, 2) inlier copy points
    support: int  # distinct inlier positions
    method: str = "keypoints"


def to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def mirrors(m: np.ndarray) -> bool:
    """Whether the map mirrors (its linear part has a negative determinant)."""
    return bool(np.linalg.det(np.asarray(m, np.float64)[:, :2]) < 0)


def is_involution(m: np.ndarray, linear_tol: float = 0.05, shift_tol: float = 5.0) -> bool:
    """Whether the map is its own inverse (a mirror about an axis, a half turn about a point):
    then every copied point also maps back, and source and copy must be told apart by side."""
    sq = to3(m) @ to3(m)
    return bool(np.abs(sq[:2, :2] - np.eye(2)).max() < linear_tol and np.abs(sq[:2, 2]).max() < shift_tol)


def side_direction(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Unit vector v with (T(p) - p) . v > 0 on the source side for an involution T: the main
    axis of the displacements, which point one way from the source and the other from the copy."""
    d = apply(m, pts) - pts
    if len(d) == 0:
        return np.array([1.0, 0.0])
    _, _, vt = np.linalg.svd(d, full_matrices=False)
    v = vt[0]
    # orient towards the larger group so the better-supported side counts as the source
    return v if np.sum(d @ v > 0) >= np.sum(d @ v < 0) else -v


def source_side(m: np.ndarray, pts: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool per point: on the source side of an involution (see ``side_direction``)."""
    return (apply(m, pts) - pts) @ v > 0


def similarity_ok(m: np.ndarray, max_scale: float) -> bool:
    """A non-degenerate similarity (possibly mirrored) within the scale limits."""
    s = float(np.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))
    return np.isfinite(s) and 1.0 / max_scale <= s <= max_scale


def distinct(pts: np.ndarray, cell: float = 3.0) -> int:
    """Number of distinct positions (on a ``cell`` px grid): repeated keypoints at one spot
    (several orientations or scales of one blob) count once."""
    if len(pts) == 0:
        return 0
    return len(np.unique(np.floor(pts / cell).astype(np.int64), axis=0))


def _directed(f: Features, m: Matches):
    """Both directions of every match: (match id, src xy, dst xy, flip, rotation deg, log2 scale)."""
    ids = np.concatenate([np.arange(len(m)), np.arange(len(m))])
    a = np.concatenate([m.i, m.j])
    b = np.concatenate([m.j, m.i])
    flip = np.concatenate([m.flip, m.flip])
    # A mirrored keypoint's orientation is 180 - angle (OpenCV's angles are measured with y down).
    src_angle = np.where(flip, 180.0 - f.angle[a], f.angle[a])
    rot = np.mod(f.angle[b] - src_angle, 360.0)
    log_scale = np.log2(np.maximum(f.size[b], 1e-3) / np.maximum(f.size[a], 1e-3))
    return ids, f.xy[a].astype(np.float64), f.xy[b].astype(np.float64), flip, rot, log_scale


def _bins(flip, rot, log_scale) -> dict:
    """Match rows per (flip, rotation bin, scale bin), each row also in its nearest neighbours."""
    nrot = int(round(360.0 / P.ANGLE_BIN_DEG))
    r = rot / P.ANGLE_BIN_DEG
    s = log_scale / P.LOG2_SCALE_BIN
    r0, s0 = np.floor(r).astype(int), np.floor(s).astype(int)
    r1 = np.where(r - r0 < 0.5, r0 - 1, r0 + 1)  # the neighbouring bin nearest to the value
    s1 = np.where(s - s0 < 0.5, s0 - 1, s0 + 1)
    bins: dict = {}
    for rr, ss in ((r0, s0), (r1, s0), (r0, s1), (r1, s1)):
        keys = np.stack([flip.astype(int), np.mod(rr, nrot), ss], axis=1)
        for row, key in enumerate(map(tuple, keys)):
            bins.setdefault(key, []).append(row)
    return bins


def _fit(src: np.ndarray, dst: np.ndarray, flip: bool, ransac_px: float):
    """(2x3 source -> copy matrix, inlier flags) or (None, None)."""
    s = src * np.array([-1.0, 1.0]) if flip else src
    m, inl = cv2.estimateAffinePartial2D(s.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC,
                                         ransacReprojThreshold=ransac_px, maxIters=P.RANSAC_ITERS,
                                         confidence=0.995, refineIters=10)
    if m is None:
        return None, None
    if flip:
        m = m @ to3(MIRROR)
    return m, inl.reshape(-1).astype(bool)


def keypoint_hypotheses(f: Features, m: Matches, ransac_px: float = P.RANSAC_PX, max_scale: float = P.MAX_SCALE,
                        min_support: int = P.CANDIDATE_MIN_INLIERS, limit: int = P.MAX_HYPOTHESES) -> list[Hypothesis]:
    """Candidate transforms, most supported first."""
    if len(m) < min_support:
        return []
    ids, src, dst, flip, rot, log_scale = _directed(f, m)
    spent = np.zeros(len(m), bool)
    out: list[Hypothesis] = []
    bins = sorted(_bins(flip, rot, log_scale).items(), key=lambda kv: -len(kv[1]))
    for (fl, _, _), rows in bins:
        rows = np.asarray(rows)
        for _ in range(8):  # models per bin
            live = rows[~spent[ids[rows]]]
            if len(live) < min_support:
                break
            mat, inl = _fit(src[live], dst[live], bool(fl), ransac_px)
            if mat is None or inl.sum() < min_support:
                break
            # Gather every unspent match of this mirror sense that agrees, then refit on them.
            cand = np.flatnonzero(~spent[ids] & (flip == bool(fl)))
            err = np.linalg.norm(apply(mat, src[cand]) - dst[cand], axis=1)
            agree = cand[err <= ransac_px]
            spent[ids[live[inl]]] = True
            spent[ids[agree]] = True
            if len(agree) >= 3:
                refit, _ = _fit(src[agree], dst[agree], bool(fl), ransac_px)
                if refit is not None:
                    mat = refit
            support = min(distinct(src[agree]), distinct(dst[agree]))
            shift = np.median(np.linalg.norm(dst[agree] - src[agree], axis=1)) if len(agree) else 0.0
            if support >= min_support and shift >= P.MIN_SHIFT_PX and similarity_ok(mat, max_scale):
                out.append(Hypothesis(np.asarray(mat, np.float64), src[agree], dst[agree], support))
    out.sort(key=lambda h: -h.support)
    return out[:limit]
