"""Block matching at the noise floor: shifted copies that noise hid from the keypoints.

When an image carries visible noise (sensor noise, or noise added after the copy was pasted),
SIFT's fine-scale keypoints land on the noise and a copy's keypoints no longer pair with its
source's. But the copy is still its source plus independent noise, so the two differ by the
difference of two noises (the *noise floor*, 2 sigma^2 per pixel, known once the image's noise
level sigma is), while two look-alike pieces of texture also differ by their content. After
Fridrich, Soukal and Lukas (2003), with distances measured against that floor:

1. The image's noise level (``noise_sigma``, robust to edges). Below ``MIN_NOISE`` the
   keypoints see the image well and the stage does not run.
2. Blocks of ``BLOCK`` px on a grid, smoothed and halved (the noise shrinks, the structure
   stays), mean removed. A block needs content well above the noise (``MIN_CONTENT``): flat
   blocks match each other at the floor everywhere and are no evidence.
3. Each block looks for its nearest block elsewhere (k-d tree on the blocks' main components,
   distances then exact). A pair counts when its distance is within ``FLOOR_FACTOR`` of the floor
   and clearly below the block's next-best partner elsewhere (``AMBIGUITY``): look-alike cells
   and lattices match many blocks, a copy one.
4. Pairs vote for their shift (``VOTE_PX`` bins); a shift voted from ``MIN_BLOCKS`` distinct
   places becomes a ``Hypothesis`` that the detector verifies and decides like any other (the
   votes play the role of keypoint inliers). A verified region must then differ from its source
   by at most ``MAX_FLOOR_RATIO`` noise floors (``floor_ratio``): the step that keeps look-alike
   texture out.

Only plain shifts are searched: under quarter turns and mirrors the synthetic fields of
look-alike cells matched at the floor (their cells are one drawing), and on the development sets
turned block pairs flagged authentic images without finding more copies (docs/dense_field.md).
Blot and gel panels are left out (the detector excludes them: bands are alike by nature, and
the lane stage compares lanes).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial import cKDTree

from preprocessing.matching.hypotheses import Hypothesis

# Noise level (grey levels, working image) from which the stage runs: below it SIFT's keypoints
# are stable (clean figures measure 0-1, images with sensor or added noise 1.5-6).
MIN_NOISE = 1.2
# Block side (working pixels) and grid step; the step grows so that at most ``MAX_BLOCKS`` are
# searched whatever the page size.
BLOCK = 16
STEP = 4
MAX_BLOCKS = 30_000
# Gaussian smoothing (px) before the blocks are halved: with the halving the noise's standard
# deviation drops ~6x while structure a few pixels wide stays.
SMOOTH_SIGMA = 1.5
# A block's content (its standard deviation with the noise's variance removed) must be this many
# times the noise level.
MIN_CONTENT = 1.0
# Components of the block descriptors the neighbour search uses (smooth blocks: a few carry
# nearly all the energy), and the neighbours it returns (a block's own grid neighbours and its
# partner's take several of them).
COMPONENTS = 12
NEIGHBOURS = 16
# Blocks whose exact neighbour distances are computed at once (bounds the temporary to ~17 MB).
CHUNK = 4096
# A pair's squared distance may be this many times the floor (the expected squared distance of a
# block and its noisy copy) ...
FLOOR_FACTOR = 2.0
# ... and at most this share of the squared distance to the block's best partner elsewhere (more
# than a block away from the first).
AMBIGUITY = 0.8
# Votes are binned by their shift (px) and pooled with the neighbouring bins; a shift needs votes
# from this many distinct places (half-block cells: overlapping blocks are one piece of evidence).
# On the development sets the authentic images that passed the floor test (look-alike cells and
# blot bands drawn from one template: identical up to noise) had 6-12, the copies found 19-27.
VOTE_PX = 4.0
MIN_BLOCKS = 15
# A verified pair is kept when its copy differs from its source by at most this many noise floors
# (``floor_ratio``): the copies found on the development sets measured 1.5-2.1 (their regions'
# borders hold some non-copied pixels), the look-alike texture, cells and bricks 3.4 and more.
MAX_FLOOR_RATIO = 2.5


def noise_sigma(gray: np.ndarray) -> float:
    """Standard deviation of the image's white noise (grey levels): the median absolute response
    of a kernel that cancels planes and ramps (after Immerkaer 1996), so edges barely count."""
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(np.asarray(gray, np.float32), -1, k)[1:-1, 1:-1]
    return float(np.median(np.abs(r)) / 0.6745 / 6.0) if r.size else 0.0


def _noise_gain() -> float:
    """Variance of one descriptor element per unit variance of white pixel noise (the smoothing,
    then the 2 x 2 mean of the halving): the sum of the squared weights of its impulse response."""
    z = np.zeros((33, 33), np.float32)
    z[16, 16] = 1.0
    return float((cv2.blur(cv2.GaussianBlur(z, (0, 0), SMOOTH_SIGMA), (2, 2)) ** 2).sum())


NOISE_GAIN = _noise_gain()


def _blocks(g: np.ndarray, excluded: np.ndarray, sigma: float):
    """(descriptors (N, d), block centres (N, 2) as x, y) of the grid's blocks with content."""
    h, w = g.shape
    step = max(STEP, int(np.ceil(np.sqrt((h - BLOCK) * (w - BLOCK) / MAX_BLOCKS))))
    step += step % 2  # the halved grid needs an even step
    half = cv2.resize(cv2.GaussianBlur(g, (0, 0), SMOOTH_SIGMA), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    win = sliding_window_view(half, (BLOCK // 2, BLOCK // 2))[::step // 2, ::step // 2]
    gy, gx = np.mgrid[0:win.shape[0], 0:win.shape[1]]
    ys, xs = gy.ravel() * step, gx.ravel() * step
    desc = win.reshape(len(ys), -1).astype(np.float32)
    desc -= desc.mean(axis=1, keepdims=True)

    def box_mean(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, (BLOCK, BLOCK), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[ys, xs]

    var = box_mean(g * g) - box_mean(g) ** 2 - sigma * sigma
    off = box_mean((excluded > 0).astype(np.float32)) > 0.25
    keep = (var >= (MIN_CONTENT * sigma) ** 2) & ~off & (ys + BLOCK <= h) & (xs + BLOCK <= w)
    centres = np.stack([xs, ys], 1).astype(np.float64) + (BLOCK - 1) / 2.0
    return desc[keep], centres[keep]


def _votes(desc: np.ndarray, centres: np.ndarray, floor: float, min_shift: float) -> dict:
    """{shift bin: [(block, partner)]} of the pairs that match at the floor, unambiguously."""
    basis = np.linalg.svd(desc[::max(1, len(desc) // 4000)], full_matrices=False)[2][:COMPONENTS].T
    dist, idx = cKDTree(desc @ basis).query(desc @ basis, k=min(NEIGHBOURS, len(desc)))
    d2 = np.concatenate([((desc[idx[k:k + CHUNK]] - desc[k:k + CHUNK, None, :]) ** 2).sum(-1)
                         for k in range(0, len(desc), CHUNK)])
    apart = np.linalg.norm(centres[idx] - centres[:, None, :], axis=-1) >= max(min_shift, BLOCK / 2.0)
    d2 = np.where(apart, d2, np.inf)
    rows = np.arange(len(desc))
    first = np.argmin(d2, 1)
    best, dbest = idx[rows, first], d2[rows, first]
    away = np.linalg.norm(centres[idx] - centres[best][:, None, :], axis=-1) > BLOCK
    # the best partner elsewhere: among the neighbours, or at least as far as the last of them
    dother = np.minimum(np.where(away, d2, np.inf).min(1), dist[:, -1] ** 2)
    good = np.isfinite(dbest) & (dbest <= FLOOR_FACTOR * floor) & (dbest <= AMBIGUITY * dother)
    votes: dict = defaultdict(list)
    for i in np.nonzero(good)[0]:
        shift = centres[best[i]] - centres[i]
        votes[(int(round(shift[0] / VOTE_PX)), int(round(shift[1] / VOTE_PX)))].append((i, best[i]))
    return votes


def block_hypotheses(gray: np.ndarray, excluded: np.ndarray, min_shift: float,
                     sigma: Optional[float] = None) -> list[Hypothesis]:
    """Candidate shifts from blocks that match at the noise floor (module docstring), most
    supported first; none when the image is not noisy (``MIN_NOISE``). ``sigma``: the image's
    noise level if already known."""
    g = np.asarray(gray, np.float32)
    sigma = noise_sigma(g) if sigma is None else sigma
    if sigma < MIN_NOISE or min(g.shape) < 2 * BLOCK:
        return []
    desc, centres = _blocks(g, excluded, sigma)
    if len(desc) < 2 * MIN_BLOCKS:
        return []
    floor = 2.0 * sigma * sigma * NOISE_GAIN * desc.shape[1]
    votes = _votes(desc, centres, floor, min_shift)
    hyps = []
    for (bx, by), pairs in votes.items():
        pool = [p for dx in (-1, 0, 1) for dy in (-1, 0, 1) for p in votes.get((bx + dx, by + dy), [])]
        src, dst = centres[[i for i, _ in pool]], centres[[j for _, j in pool]]
        places = {tuple(c) for c in (src // (BLOCK // 2)).astype(int)}
        if len(places) < MIN_BLOCKS or len(pairs) < max(2, len(pool) // 9):  # not near the pool's peak bin
            continue
        m = np.hstack([np.eye(2), np.median(dst - src, axis=0)[:, None]])
        hyps.append(Hypothesis(m, src, dst, support=len(places), method="blocks"))
    hyps.sort(key=lambda hh: -hh.support)
    return _distinct(hyps)


def _distinct(hyps: list[Hypothesis]) -> list[Hypothesis]:
    """Drop shifts within two vote bins of a better-supported one, or of its inverse (a copy
    votes from both sides)."""
    out: list[Hypothesis] = []
    for hh in hyps:
        s = hh.matrix[:, 2]
        if not any(np.abs(o.matrix[:, 2] - s).max() <= 2 * VOTE_PX or np.abs(o.matrix[:, 2] + s).max() <= 2 * VOTE_PX
                   for o in out):
            out.append(hh)
    return out


def floor_ratio(gray: np.ndarray, copy: np.ndarray, m: np.ndarray, sigma: float) -> float:
    """Mean squared difference between the copy region (``copy``: mask) and its source moved by
    ``m``, in noise floors (2 sigma^2: the difference of two independent noises)."""
    g = np.asarray(gray, np.float32)
    inside = copy > 0
    if not inside.any() or sigma <= 0:
        return float("inf")
    moved = cv2.warpAffine(g, np.asarray(m, np.float64), (g.shape[1], g.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    d = g[inside] - moved[inside]
    return float(np.mean(d * d) / (2.0 * sigma * sigma))
