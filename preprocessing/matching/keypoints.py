"""Keypoints of one image matched against each other, mirrored copies included.

SIFT (OpenCV, low contrast threshold) with RootSIFT descriptors (Arandjelovic & Zisserman
2012: L1-normalise, square root; Euclidean distance then compares like the Hellinger kernel).
Mirrored copies need no second SIFT pass: the descriptor of a keypoint's mirror image is a
fixed permutation of its own (spatial rows reversed, orientation bins negated in OpenCV's
layout; checked by tests/test_matching_keypoints.py against SIFT run on the flipped image).
Every descriptor is compared with all others and their mirrors, and the generalised 2NN test
(Amerini et al. 2011) keeps each neighbour while its distance is clearly below the next one's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from scipy.spatial import cKDTree

from preprocessing.matching import params as P

_FLANN_KDTREE = 1


def mirror_permutation() -> np.ndarray:
    """Index array: ``desc[:, perm]`` is the descriptor of the left-right mirrored patch, for
    OpenCV's 4x4 spatial x 8 orientation layout (index (row * 4 + col) * 8 + bin)."""
    idx = np.arange(128).reshape(4, 4, 8)
    return idx[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)


_MIRROR = mirror_permutation()


@dataclass(frozen=True)
class Features:
    """N keypoints at the working resolution."""

    xy: np.ndarray  # (N, 2) float32 x, y
    angle: np.ndarray  # (N,) float32 degrees (OpenCV convention)
    size: np.ndarray  # (N,) float32 diameter
    desc: np.ndarray  # (N, 128) float32 RootSIFT
    mirror: np.ndarray  # (N, 128) float32 RootSIFT of the mirrored patch

    def __len__(self) -> int:
        return len(self.xy)


def rootsift(desc: np.ndarray) -> np.ndarray:
    d = desc.astype(np.float32)
    d /= d.sum(axis=1, keepdims=True) + 1e-7
    return np.sqrt(d)


def spread(kps, shape: tuple[int, int], max_features: int, grid: int) -> list:
    """At most ``max_features`` keypoints, the strongest responses of each cell of a ``grid`` x ``grid``
    grid: SIFT's own cap keeps the strongest over the whole image, so a faint area beside a
    contrasted one would keep none."""
    if len(kps) <= max_features:
        return list(kps)
    h, w = shape
    per_cell = -(-max_features // (grid * grid))
    cells: dict = {}
    for k in sorted(kps, key=lambda k: -k.response):
        c = (min(int(k.pt[1] * grid / h), grid - 1), min(int(k.pt[0] * grid / w), grid - 1))
        if len(cells.setdefault(c, [])) < per_cell:
            cells[c].append(k)
    return [k for cell in cells.values() for k in cell]


def sift_features(gray: np.ndarray, mask: Optional[np.ndarray] = None, contrast: float = P.SIFT_CONTRAST,
                  max_features: int = P.SIFT_MAX_FEATURES, zoom: float = 1.0, grid: int = 0) -> Features:
    """SIFT keypoints (where ``mask`` is nonzero) with RootSIFT and mirrored descriptors,
    detected on the image resized ``zoom`` times and reported in ``gray``'s pixels. ``grid`` > 0:
    the ``max_features`` are spread over the image (``spread``), descriptors computed for those only."""
    if zoom != 1.0:
        h, w = gray.shape
        size = (int(round(w * zoom)), int(round(h * zoom)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC if zoom > 1 else cv2.INTER_AREA)
        if mask is not None:
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    sift = cv2.SIFT_create(nfeatures=0 if grid else max_features, contrastThreshold=contrast)
    if grid:
        kps, desc = sift.compute(gray, spread(sift.detect(gray, mask), gray.shape, max_features, grid))
    else:
        kps, desc = sift.detectAndCompute(gray, mask)
    if desc is None or len(kps) == 0:
        empty = np.zeros((0, 128), np.float32)
        return Features(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), empty, empty)
    xy = (np.array([k.pt for k in kps], np.float32) + 0.5) / zoom - 0.5
    angle = np.array([k.angle for k in kps], np.float32)
    size = np.array([k.size for k in kps], np.float32) / zoom
    return Features(xy, angle, size, rootsift(desc), rootsift(desc[:, _MIRROR]))


def contrast_scale(gray: np.ndarray, allowed: np.ndarray) -> float:
    """Factor for SIFT's contrast thresholds: the spread of the allowed pixels' grey levels
    (``CONTRAST_PERCENTILES``) over the full range, within [``CONTRAST_MIN_SCALE``, 1]. SIFT's
    threshold is absolute, so this is the same as stretching the image to the full range."""
    values = gray[allowed > 0]
    if values.size == 0:
        return 1.0
    lo, hi = np.percentile(values, P.CONTRAST_PERCENTILES)
    return float(np.clip((hi - lo) / 255.0, P.CONTRAST_MIN_SCALE, 1.0))


def laned_mask(boxes, shape: tuple[int, int]) -> np.ndarray:
    """bool (h, w): the pixels of the panels ``boxes`` ((x, y, w, h)): the laned ones, as
    ``lanes.laned_boxes``, or any others (the detector also draws its blot panels with it)."""
    out = np.zeros(shape, bool)
    for x, y, w, h in boxes:
        out[y:y + h, x:x + w] = True
    return out


def features_by_region(gray: np.ndarray, allowed: np.ndarray, laned_boxes, contrast: float, laned_contrast: float,
                       max_features: int, zoom: float = 1.0, grid: int = 0) -> Features:
    """``sift_features`` at ``contrast``, except inside ``laned_boxes`` (x, y, w, h, working pixels:
    blot and gel panels with lanes) at ``laned_contrast``; ``max_features`` shared by area."""
    laned = laned_mask(laned_boxes, gray.shape)
    if contrast == laned_contrast or not laned.any():
        return sift_features(gray, allowed, contrast, max_features, zoom, grid)
    usable = allowed > 0
    parts = []
    for where, c in ((usable & ~laned, contrast), (usable & laned, laned_contrast)):
        share = float(where.sum()) / max(1.0, float(usable.sum()))
        if share > 0:
            parts.append(sift_features(gray, where.astype(np.uint8) * 255, c,
                                       max(1, int(round(max_features * share))), zoom, grid))
    return concat(parts) if parts else sift_features(gray, allowed, contrast, max_features, zoom, grid)


def guided_pairs(f: Features, near: Neighbours, where: cKDTree, m: np.ndarray, src: np.ndarray,
                 margin: float = P.GUIDED_MARGIN, radius: float = P.GUIDED_RADIUS_PX,
                 max_dist: float = P.GUIDED_MAX_DIST, ratio: float = P.GUIDED_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(source points, copy points) of the keypoint pairs a map ``m`` explains: keypoints around
    its inliers ``src`` (their box grown by ``margin`` of its size) whose image under ``m`` lands
    within ``radius`` px of a keypoint with a near-identical descriptor (the mirrored one for a
    mirroring map), clearly nearer than the keypoint's nearest descriptor elsewhere (``near``);
    ``where`` is the k-d tree of ``f.xy``, built once per image for all its maps.
    Among look-alike cells g2NN's ratio keeps few of a true copy's pairs; here the map's geometry
    picks the partner and the looser ``ratio`` still refuses a lattice's identical elements."""
    if len(f) < 2 or len(src) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    lo, hi = src.min(0), src.max(0)
    pad = margin * (hi - lo) + radius
    around = np.flatnonzero(np.all((f.xy >= lo - pad) & (f.xy <= hi + pad), axis=1))
    m = np.asarray(m, np.float64)
    mirrored = np.linalg.det(m[:, :2]) < 0
    target = f.xy[around] @ m[:, :2].T + m[:, 2]
    used: set = set()
    pairs = []
    for i, t, cands in zip(around, target, where.query_ball_point(target, radius)):
        d = f.mirror[i] if mirrored else f.desc[i]
        best, j = min(((float(np.linalg.norm(d - f.desc[c])), c) for c in cands
                       if c != i and c not in used and np.linalg.norm(f.xy[c] - f.xy[i]) >= P.MIN_MATCH_DIST_PX),
                      default=(np.inf, -1))
        if best > max_dist:
            continue
        elsewhere = near.kept[i] & (np.linalg.norm(f.xy[near.other[i]] - t, axis=1) > 2 * radius)
        alternative = float(near.dist[i][elsewhere][0]) if elsewhere.any() else float(near.dist[i][-1])
        if best < ratio * alternative:
            used.add(j)
            pairs.append((i, j))
    if not pairs:
        return np.zeros((0, 2)), np.zeros((0, 2))
    i, j = np.array(pairs).T
    return f.xy[i].astype(np.float64), f.xy[j].astype(np.float64)


def concat(parts: list[Features]) -> Features:
    """One Features holding the keypoints of every part (in order)."""
    fields = ("xy", "angle", "size", "desc", "mirror")
    return Features(*(np.concatenate([getattr(f, k) for f in parts]) for k in fields))


def needs_dense_keypoints(box: tuple[int, int, int, int], band: np.ndarray) -> bool:
    """Whether a panel (x, y, w, h, working pixels) gets the denser pass: small (its shorter
    side under ``SMALL_PANEL_PX``) or low in contrast (the spread of its fine detail under
    ``LOW_DETAIL_STD``)."""
    x, y, w, h = box
    return min(w, h) < P.SMALL_PANEL_PX or float(band[y:y + h, x:x + w].std()) < P.LOW_DETAIL_STD


def panel_features(gray: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> Features:
    """Denser keypoints of one small or flat panel: SIFT with a lower contrast threshold
    (``DENSE_SIFT_CONTRAST``) on the panel enlarged ``PANEL_ZOOM`` times (less when the panel
    is large, so its longer side stays within ``PANEL_MAX_SIDE``), at most
    ``PANEL_MAX_FEATURES``, reported in ``gray``'s pixels."""
    x, y, w, h = box
    zoom = max(1.0, min(P.PANEL_ZOOM, P.PANEL_MAX_SIDE / max(w, h)))
    f = sift_features(gray[y:y + h, x:x + w], mask[y:y + h, x:x + w], P.DENSE_SIFT_CONTRAST,
                      P.PANEL_MAX_FEATURES, zoom)
    return Features(f.xy + np.array([x, y], np.float32), f.angle, f.size, f.desc, f.mirror)


@dataclass(frozen=True)
class Matches:
    """Pairs of keypoint indices (i < j for plain matches); ``flip`` when j's mirror matches i."""

    i: np.ndarray
    j: np.ndarray
    flip: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.i)


def _empty_matches() -> Matches:
    z = np.zeros(0, np.int64)
    return Matches(z, z, np.zeros(0, bool))


@dataclass(frozen=True)
class Neighbours:
    """Each keypoint's nearest descriptors among all others and their mirrors, nearest first:
    rows of (keypoint ``other``, mirrored ``flip``, ``dist``), ``kept`` False where a neighbour
    is the keypoint itself, its own mirror or closer than ``min_dist`` pixels."""

    other: np.ndarray
    flip: np.ndarray
    dist: np.ndarray
    kept: np.ndarray


def descriptor_neighbours(f: Features, neighbours: int = P.G2NN_NEIGHBOURS,
                          min_dist: float = P.MIN_MATCH_DIST_PX) -> Neighbours:
    """``Neighbours`` of every keypoint (FLANN k-d trees; at least 2 keypoints)."""
    n = len(f)
    base = np.concatenate([f.desc, f.mirror])
    k = min(neighbours + 3, 2 * n)
    index = cv2.flann_Index(base, {"algorithm": _FLANN_KDTREE, "trees": P.FLANN_TREES})
    idx, dist2 = index.knnSearch(f.desc, k, params={"checks": P.FLANN_CHECKS})
    idx = idx.astype(np.int64)
    dist = np.sqrt(np.maximum(dist2, 0)).astype(np.float32)
    other = idx % n
    flip = idx >= n
    query = np.arange(n)[:, None]
    gap = np.linalg.norm(f.xy[other] - f.xy[query], axis=2)
    skip = (other == query) | (gap < min_dist) | (idx < 0)
    skip |= _repeats_earlier(f.xy[other], flip, skip)
    # Compact each row: the kept neighbours first, in distance order (FLANN returns sorted rows).
    order = np.argsort(skip, axis=1, kind="stable")
    return Neighbours(np.take_along_axis(other, order, 1), np.take_along_axis(flip, order, 1),
                      np.take_along_axis(dist, order, 1), ~np.take_along_axis(skip, order, 1))


def _repeats_earlier(pos: np.ndarray, flip: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """(n, k) bool: neighbour k sits within ``DUPLICATE_PX`` of an earlier unskipped neighbour of
    the same row and mirror sense (``pos`` (n, k, 2)). Two keypoints of one structure (a denser
    pass over a panel beside the main one; neighbouring scales) are one candidate: counted
    twice, the second would fail every ratio test of the first."""
    gap = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=3)  # (n, k, k): [row, later, earlier]
    earlier = np.tril(np.ones(gap.shape[1:], bool), -1)
    same = (gap < P.DUPLICATE_PX) & earlier & (flip[:, :, None] == flip[:, None, :]) & ~skip[:, None, :]
    return same.any(axis=2)


def g2nn_matches(f: Features, ratio: float = P.G2NN_RATIO, neighbours: int = P.G2NN_NEIGHBOURS,
                 min_dist: float = P.MIN_MATCH_DIST_PX, near: Optional[Neighbours] = None) -> Matches:
    """Matches of every keypoint among all others and their mirrors (generalised 2NN), from
    ``near`` (``descriptor_neighbours``, computed here when not given).

    Neighbours that are the keypoint itself, its own mirror, or closer than ``min_dist`` pixels
    (overlapping windows of one structure) are skipped before the ratio test."""
    if len(f) < 2:
        return _empty_matches()
    if near is None:
        near = descriptor_neighbours(f, neighbours, min_dist)
    other, flip, dist, kept = near.other, near.flip, near.dist, near.kept
    # g2NN: accept neighbour m while d_m < ratio * d_(m+1) (and both exist), stop at the first failure.
    passes = kept[:, :-1] & kept[:, 1:] & (dist[:, :-1] < ratio * np.maximum(dist[:, 1:], 1e-6))
    accepted = np.cumprod(passes, axis=1).astype(bool)
    rows, cols = np.nonzero(accepted)
    i, j, fl = rows, other[rows, cols], flip[rows, cols]
    # Each match is found from both ends; keep one (i < j) per (pair, flip).
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key = np.unique(np.stack([lo, hi, fl.astype(np.int64)], axis=1), axis=0)
    return Matches(key[:, 0], key[:, 1], key[:, 2].astype(bool))
