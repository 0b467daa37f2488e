"""Exact copies by block hashing: the same pixels twice, under any of the 8 turns and mirrors.

Copy-pasting without resampling (plain shifts, mirrors, quarter turns) reproduces every pixel,
noise included. Every ``EXACT_BLOCK`` x ``EXACT_BLOCK`` block of the image gets an exact integer
hash (a random-weighted sum of its RGB values); a block and a block elsewhere with equal hashes
are the same pixels. Hashing with the weights turned or mirrored compares a block with the
turned or mirrored blocks, so one pass per symmetry finds mirrored and rotated copies too. Flat
blocks (no detail, e.g. page, saturated or empty background) are identical by nature and never
count; decorations are excluded by the caller. Each transform (symmetry + shift) voted for by
enough distinct blocks is a candidate, and the blocks that agree are its region: exact, so it
works for the smallest copies (a band group of a blot lane) where correlation windows cannot.

Runs on the original pixels (resampling breaks exactness) for images up to
``EXACT_MAX_PIXELS``; larger images rely on the other searches.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from preprocessing.matching import params as P
from preprocessing.matching.hypotheses import is_involution, side_direction, source_side

# The 8 symmetries of the square as (flip left-right first, then quarter turns counter-clockwise
# on screen), with their 2x2 linear part acting on (x, y) pixel offsets (y down).
SYMMETRIES = tuple((flip, turns) for flip in (False, True) for turns in range(4))


def linear(flip: bool, turns: int) -> np.ndarray:
    """2x2 map of (x, y) offsets: mirror x (if ``flip``), then ``turns`` quarter turns
    counter-clockwise as seen on screen (x, y) -> (y, -x)."""
    m = np.diag([-1.0, 1.0]) if flip else np.eye(2)
    quarter = np.array([[0.0, 1.0], [-1.0, 0.0]])
    return np.linalg.matrix_power(quarter, turns) @ m


def _vectors(rng_seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Random positive weights (a over rows, b over columns); the block hash is a^T B b, which
    is separable (two 1-D passes) and collides for different blocks with chance ~2^-28."""
    rng = np.random.default_rng(rng_seed)
    k = P.EXACT_BLOCK
    return rng.integers(1, 2 ** 14, size=k, dtype=np.int64), rng.integers(1, 2 ** 14, size=k, dtype=np.int64)


def symmetry_vectors(a: np.ndarray, b: np.ndarray, flip: bool, turns: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) weights u, v with u[dy] v[dx] = a[gy] b[gx] for (gx, gy) = g(dx, dy)
    (offsets centred, g = linear(flip, turns)): hashing a block with them equals hashing its
    g-transformed image with a, b. Every symmetry of the square sends rows to rows or to
    columns, so the weights stay separable."""
    c = len(a) // 2
    g = linear(flip, turns).astype(int)
    offs = np.arange(-c, c + 1)
    if g[0, 1] == 0:  # rows stay rows: gx depends on dx, gy on dy
        return a[g[1, 1] * offs + c], b[g[0, 0] * offs + c]
    # rows become columns: gx depends on dy, gy on dx
    return b[g[0, 1] * offs + c], a[g[1, 0] * offs + c]


def block_hashes(values: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """int64 hash sum_ij u[i] v[j] values[y + i, x + j] of every fitting k x k block:
    (h - k + 1, w - k + 1)."""
    k = len(u)
    h, wd = values.shape
    rows = np.zeros((h, wd - k + 1), np.int64)
    for j in range(k):
        rows += v[j] * values[:, j:j + wd - k + 1]
    out = np.zeros((h - k + 1, wd - k + 1), np.int64)
    for i in range(k):
        out += u[i] * rows[i:i + h - k + 1]
    return out


@dataclass(frozen=True)
class ExactCandidate:
    """A symmetry + shift under which at least ``EXACT_MIN_BLOCKS`` blocks recur exactly."""

    matrix: np.ndarray  # 2x3 source -> copy, pixels of the hashed image
    blocks: np.ndarray  # (n, 2) x, y centres of the source blocks that recur
    support: int


def exact_candidates(rgb: np.ndarray, excluded: np.ndarray, min_shift: float,
                     limit: int = P.MAX_HYPOTHESES) -> list[ExactCandidate]:
    """Up to ``limit`` candidates found by exact block hashing (``rgb`` at its own resolution)."""
    h, w = rgb.shape[:2]
    k = P.EXACT_BLOCK
    c = k // 2
    if h < 2 * k or w < 2 * k:
        return []
    channels = rgb.astype(np.int64)
    values = channels[:, :, 0] | (channels[:, :, 1] << 8) | (channels[:, :, 2] << 16)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(gray, (k, k))
    std = np.sqrt(np.maximum(cv2.blur(gray * gray, (k, k)) - mean * mean, 0))
    bad = cv2.dilate(excluded.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    ok = ((std >= P.EXACT_MIN_STD) & ~bad)[c:h - c, c:w - c]
    ys, xs = np.nonzero(ok)
    if len(ys) < P.EXACT_MIN_BLOCKS:
        return []
    a, b = _vectors()
    base = block_hashes(values, a, b)[ys, xs]
    order = np.argsort(base, kind="stable")
    sorted_base = base[order]
    # Probes on a 2-px grid: a copy still shows a quarter of its blocks, at a quarter of the cost.
    sub = np.flatnonzero((ys % 2 == 0) & (xs % 2 == 0))
    votes: dict = {}
    for flip, turns in SYMMETRIES:
        g = linear(flip, turns)
        hashes = (base if (not flip and turns == 0)
                  else block_hashes(values, *symmetry_vectors(a, b, flip, turns))[ys, xs])
        probe = hashes[sub]
        # look the probes up in sorted order (sequential memory access), then undo the order
        probe_order = np.argsort(probe, kind="stable")
        sorted_probe = probe[probe_order]
        lo = np.searchsorted(sorted_base, sorted_probe, side="left")
        hi = np.searchsorted(sorted_base, sorted_probe, side="right")
        # a block recurring more than EXACT_MAX_REPEATS times is a pattern (glyphs, rulings,
        # periodic texture), not a copy; skipping it also bounds the pairs to enumerate
        hit = np.flatnonzero((hi > lo) & (hi - lo <= P.EXACT_MAX_REPEATS))
        if len(hit) == 0:
            continue
        reps = hi[hit] - lo[hit]
        src_rep = sub[np.repeat(probe_order[hit], reps)]
        first = np.repeat(lo[hit] - (np.cumsum(reps) - reps), reps)
        dst = order[first + np.arange(int(reps.sum()))]
        keep = src_rep != dst
        src_rep, dst = src_rep[keep], dst[keep]
        p = np.stack([xs[src_rep] + c, ys[src_rep] + c], 1).astype(np.float64)
        q = np.stack([xs[dst] + c, ys[dst] + c], 1).astype(np.float64)
        t = q - p @ g.T
        shift = np.linalg.norm(q - p, axis=1)
        far = shift >= max(min_shift, k)
        p, t = p[far], np.rint(t[far]).astype(np.int64)
        if len(t) == 0:
            continue
        keys, inverse, counts = np.unique(t, axis=0, return_inverse=True, return_counts=True)
        for j in np.flatnonzero(counts >= P.EXACT_MIN_BLOCKS):
            pts = p[inverse.reshape(-1) == j]
            m = np.hstack([g, keys[j].reshape(2, 1).astype(np.float64)])
            if is_involution(m):  # both the source's and the copy's blocks voted: keep one side
                pts = pts[source_side(m, pts, side_direction(m, pts))]
                if len(pts) < P.EXACT_MIN_BLOCKS:
                    continue
            votes[(flip, turns, int(keys[j][0]), int(keys[j][1]))] = ExactCandidate(m, pts, len(pts))
    out = sorted(votes.values(), key=lambda e: -e.support)[:2 * limit]
    return _drop_inverses(out)[:limit]


def _drop_inverses(cands: list[ExactCandidate]) -> list[ExactCandidate]:
    """A copy is found both as A -> B and as B -> A (the inverse map); keep the first."""
    kept: list[ExactCandidate] = []
    for e in cands:
        inv = np.linalg.inv(np.vstack([e.matrix, [0, 0, 1]]))[:2]
        if not any(np.allclose(inv, k.matrix, atol=0.5) for k in kept):
            kept.append(e)
    return kept


def varied(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood is not one grey level: a photograph's pixels, even in its
    smooth areas (but for plateaus an enlarged image holds); not a page's or a flat fill's."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ker = np.ones((3, 3), np.uint8)
    return cv2.dilate(gray, ker) > cv2.erode(gray, ker)


def exact_region(rgb: np.ndarray, cand: ExactCandidate, excluded: np.ndarray, grow: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(source, copy) uint8 masks. The recurring blocks mark the copy's detailed parts; its flat
    parts (dark background between cells, membrane between bands) recur too but hash as flat.
    With ``grow``, the source extends from the blocks through pixels equal to their partners
    (4-connected: pixels equal by chance are too sparse to carry it far): inside the blocks'
    convex hull widened by ``EXACT_GROW_PX`` any equal pixel; beyond it only pixels that vary
    (``varied``: a smooth copy holds few blocks of detail but every one of its pixels; flat
    surroundings equal by nature stay out) where neither the pixel nor its partner is
    ``excluded`` (the page, where the frames of panels stacked in a column recur, and
    decorations)."""
    h, w = rgb.shape[:2]
    k = P.EXACT_BLOCK
    blocks = np.zeros((h, w), np.uint8)
    pts = np.rint(cand.blocks).astype(int)
    blocks[pts[:, 1], pts[:, 0]] = 1
    blocks = cv2.dilate(blocks, np.ones((k, k), np.uint8))
    src = blocks
    if grow:
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(blocks)), 1)
        near = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * P.EXACT_GROW_PX + 1,) * 2))
        flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        partner = cv2.warpAffine(rgb, cand.matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        inside = cv2.warpAffine(np.ones((h, w), np.uint8), cand.matrix, (w, h), flags=flags,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        equal = (np.abs(rgb.astype(np.int16) - partner.astype(np.int16)).max(axis=2) <= P.EXACT_TOL) & (inside > 0)
        off = (excluded > 0) | (cv2.warpAffine(excluded.astype(np.uint8), cand.matrix, (w, h), flags=flags,
                                               borderMode=cv2.BORDER_CONSTANT, borderValue=1) > 0)
        grows = equal & ((near > 0) | (varied(rgb) & ~off))
        n, labels = cv2.connectedComponents((grows | (blocks > 0)).astype(np.uint8), connectivity=4)
        keep = np.zeros(n, bool)
        keep[np.unique(labels[blocks > 0])] = True
        keep[0] = False
        src = keep[labels].astype(np.uint8)
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (P.EXACT_CLOSE_PX, P.EXACT_CLOSE_PX))
    src = ndimage.binary_fill_holes(cv2.morphologyEx(src, cv2.MORPH_CLOSE, close)).astype(np.uint8)
    copy = cv2.warpAffine(src, cand.matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    return src, copy
