"""Dense-field candidates: copies that keypoints cannot see (smooth areas, brightness changes).

After Cozzolino, Poggi and Verdoliva (IEEE TIFS 2015, "Efficient dense-field copy-move forgery
detection"), reimplemented with numpy, OpenCV and a scipy k-d tree:

1. Features: at every pixel, the magnitudes of the Zernike moments up to order
   ``ZERNIKE_ORDER`` of the disk around it (``cv2.filter2D`` with a small complex kernel bank).
   A magnitude does not change when the disk is rotated or mirrored. Each disk is standardised
   (mean removed, divided by its standard deviation), so a copy whose brightness or contrast
   was changed keeps its features; disks flatter than ``FLAT_STD`` carry no evidence (a truly
   flat area matches everywhere), while the sensor noise of a smooth area, where the image has
   it, is detail enough.
2. Offset field on a grid (every ``stride`` pixels): each point starts from its nearest far
   neighbour among the grid points (k-d tree; partners closer than ``min_shift`` are
   overlapping disks, not copies), then PatchMatch-style propagation (a neighbour's offset is
   tried here) and a one-pixel local search refine it to the pixel. A partner is kept only when
   clearly better than the best candidate elsewhere (``AMBIGUITY``): a periodic texture
   (gratings, grain fields, lattices of look-alike cells) matches itself at many offsets.
3. Median filtering of the field, then dense linear fitting: each point's local affine map is
   fitted to its neighbourhood, and the point is consistent when a large SHARE of its
   neighbours' raw offsets agree with the map (``FIT_SHARE``; a mean residual is wrecked by one
   outlier on a small copy).
4. Regions: connected consistent points, one affine map each by RANSAC; maps that shear or
   scale unevenly (``MAX_ANISOTROPY``), rescale beyond ``max_scale`` or mirror are refused (a
   copy is moved, turned or uniformly rescaled; uneven maps come from look-alike structures,
   mirrored ones from mirror-symmetric objects, see ``map_ok``).

Each region becomes a ``Hypothesis`` (its inlier points as seeds) that the detector verifies
and decides exactly like a keypoint candidate: the inlier count plays the role of keypoint
inliers, so the decision defaults apply unchanged. Separately, ``field_planes`` draws the field
itself (clarity and consistency of every point, nothing thresholded) as planes of the network's
evidence map (``evidence.py``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from math import factorial
from typing import Optional

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial import cKDTree

from preprocessing.matching import params as P
from preprocessing.matching.hypotheses import Hypothesis, distinct, to3

# Highest Zernike order, as in Cozzolino et al.: 11 magnitudes without the mean, close between a
# copy and its source after rotation, resampling and JPEG.
ZERNIKE_ORDER = 5
# Disk radius (working pixels): a 16 px disk holds enough detail to be distinctive and still
# fits several times inside a copy of 0.3% of a ~600 px image.
DISK_RADIUS = 8.0
# PatchMatch-style improvement of the k-d tree's offsets: iterations, and the jumps (grid
# steps) at which a neighbour's offset is tried (long jumps first spread a good offset fast).
PATCHMATCH_ITERS = 2
JUMPS = (4, 2, 1)
# Grid points per image at most: the stride grows with the image (at least ``MIN_STRIDE``) so
# that the neighbour search and PatchMatch are bounded whatever the page size.
MAX_POINTS = 40_000
MIN_STRIDE = 2
# A disk whose grey-level standard deviation is below this has no detail: no features, no
# evidence. Below the sensor noise of any camera or scanner (sigma >= ~1), above 8-bit rounding.
FLAT_STD = 0.5
# Neighbours retrieved per grid point (itself and partners too close are skipped; the rest also
# serve the ambiguity test).
NEIGHBOURS = 8
# The k-d tree (scipy) may return neighbours up to this relative distance farther than the true
# ones (faster; PatchMatch then refines the partner).
KD_EPS = 0.5
# A point's best partner must be this much closer (feature distance ratio) than the best partner
# elsewhere (farther than ``AMBIGUITY_PX`` from it): otherwise the texture matches itself at
# several offsets (periodic) or the point matches nothing in particular (noise of an authentic
# smooth area).
AMBIGUITY = 0.7
AMBIGUITY_PX = 6.0
# Median filter of the offset field (grid steps, odd): removes single wrong offsets inside a copy.
MEDIAN_STEPS = 3
# Dense linear fitting over the (2 FIT_RADIUS + 1)^2 grid neighbourhood of a point.
FIT_RADIUS = 2
# A neighbour agrees with the local affine map when its raw partner lies within FIT_TOL_PX plus
# FIT_TOL_STRIDE strides of the mapped position: partners are found to the pixel, but a rotated
# or rescaled copy's offsets change between grid points faster than the local search follows.
FIT_TOL_PX = 1.0
FIT_TOL_STRIDE = 0.25
# A point is consistent when at least FIT_SHARE of its valid neighbours, and at least
# FIT_MIN_AGREE of them, agree with its local map.
FIT_SHARE = 0.6
FIT_MIN_AGREE = 4
# A region needs this many consistent points to become a candidate (the decision then asks for
# ``DecisionParams.min_inliers`` distinct inlier positions, as for keypoints).
MIN_POINTS = 6
# A copy's map is a similarity: the ratio of its two singular values stays below this (uneven
# scale or shear comes from look-alike structures such as mirrored neighbouring bands).
MAX_ANISOTROPY = 1.15
# Points fed to RANSAC at most (spread over the region) and models tried per region.
MAX_FIT_POINTS = 2000
MODELS_PER_REGION = 3


def zernike_pairs(order: int = ZERNIKE_ORDER) -> list[tuple[int, int]]:
    """(n, m) with 1 <= n <= order, 0 <= m <= n, n - m even: the moments whose magnitude is
    informative (n = 0 is the mean, removed by standardisation)."""
    return [(n, m) for n in range(1, order + 1) for m in range(n % 2, n + 1, 2)]


def radial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """Zernike radial polynomial R_nm(rho)."""
    out = np.zeros_like(rho)
    for k in range((n - m) // 2 + 1):
        c = (-1) ** k * factorial(n - k) / (factorial(k) * factorial((n + m) // 2 - k) * factorial((n - m) // 2 - k))
        out += c * rho ** (n - 2 * k)
    return out


def kernel_bank(radius: float, half: int, order: int = ZERNIKE_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """(disk weights (D,), kernels (D, 2 * len(pairs))) over a (2 half + 1)^2 window flattened:
    the real and imaginary parts of (n + 1) conj(V_nm) / (disk pixels), so that a standardised
    patch times the kernels gives its Zernike moments."""
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    rho = np.sqrt(x * x + y * y) / radius
    disk = rho <= 1.0
    theta = np.arctan2(y, x)
    cols = []
    for n, m in zernike_pairs(order):
        v = radial(n, m, rho) * np.exp(-1j * m * theta) * (n + 1) / disk.sum()
        v[~disk] = 0
        cols += [v.real.ravel(), v.imag.ravel()]
    return (disk / disk.sum()).ravel().astype(np.float32), np.stack(cols, 1).astype(np.float32)


def grid_stride(shape: tuple[int, int]) -> int:
    """Grid step for an image of ``shape`` so that it holds at most ``MAX_POINTS`` points."""
    return max(MIN_STRIDE, int(np.ceil(np.sqrt(shape[0] * shape[1] / MAX_POINTS))))


def feature_maps(gray: np.ndarray, radius: float = DISK_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """((h, w, F) float32 standardised Zernike magnitudes of the disk around every pixel, (h, w)
    bool: the disk has detail), by filtering with the kernel bank (``cv2.filter2D``)."""
    half = int(np.ceil(radius))
    size = 2 * half + 1
    disk, bank = kernel_bank(radius, half)
    g = gray.astype(np.float32)

    def filt(img, k):
        return cv2.filter2D(img, cv2.CV_32F, k.reshape(size, size), borderType=cv2.BORDER_REFLECT)

    mean = filt(g, disk)
    std = np.sqrt(np.maximum(filt(g * g, disk) - mean * mean, 0))
    inv = 1.0 / np.maximum(std, 1e-6)
    mags = []
    for j in range(0, bank.shape[1], 2):
        re = filt(g, bank[:, j]) - mean * float(bank[:, j].sum())  # the moment of the mean removed
        im = filt(g, bank[:, j + 1]) - mean * float(bank[:, j + 1].sum())
        mags.append(cv2.magnitude(re, im) * inv)
    return np.stack(mags, -1), std >= FLAT_STD


def _cost(feats: np.ndarray, usable: np.ndarray, q: np.ndarray, cand: np.ndarray,
          min_shift: float) -> np.ndarray:
    """Feature distance between query pixels ``q`` and candidate partners ``cand`` ((N, 2) int
    x, y); inf where the partner is outside, flat, excluded or closer than ``min_shift``."""
    h, w = usable.shape
    inside = (cand[:, 0] >= 0) & (cand[:, 0] < w) & (cand[:, 1] >= 0) & (cand[:, 1] < h)
    cx, cy = np.clip(cand[:, 0], 0, w - 1), np.clip(cand[:, 1], 0, h - 1)
    d = np.linalg.norm(feats[cy, cx] - feats[q[:, 1], q[:, 0]], axis=1)
    far = np.hypot(*(cand - q).T) >= min_shift
    return np.where(inside & usable[cy, cx] & far, d, np.inf)


def offset_field(feats: np.ndarray, usable: np.ndarray, grid: tuple[np.ndarray, np.ndarray],
                 min_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """((gh, gw, 2) partner (x, y) of each grid point, NaN where it has none; (gh, gw) its
    clarity in [0, 1]: 1 - its feature distance / that of the best candidate elsewhere, 0 where
    it has none).

    Initialised by each point's nearest far neighbour among the grid points (k-d tree), then
    improved by PatchMatch-style propagation (a neighbour's offset tried here, at jumps of
    ``JUMPS`` grid steps) and a one-pixel local search, on the per-pixel feature maps (so a
    partner is found to the pixel, not to the grid). A partner is kept only when clearly better
    than the best candidate elsewhere (``AMBIGUITY``): periodic textures match at many offsets."""
    gy, gx = grid
    shape = gy.shape
    q = np.stack([gx.ravel(), gy.ravel()], 1)
    ok = usable[q[:, 1], q[:, 0]]
    out = np.full(shape + (2,), np.nan, np.float32)
    clarity = np.zeros(shape, np.float32)
    ids = np.flatnonzero(ok)
    if len(ids) < 2:
        return out, clarity
    f = feats[q[ids, 1], q[ids, 0]]
    k = min(NEIGHBOURS, len(ids))
    dist, nn = cKDTree(f).query(f, k=k, eps=KD_EPS)
    nn = np.where(nn < len(ids), nn, 0)
    pos = q[ids][nn]  # (n, k, 2) candidate partners
    far = (np.hypot(*(pos - q[ids][:, None, :]).transpose(2, 0, 1)) >= min_shift) & np.isfinite(dist)
    first = np.argmax(far, 1)
    rows = np.arange(len(ids))
    partner = np.full((len(q), 2), -10 ** 6, np.int64)
    cost = np.full(len(q), np.inf)
    has = far[rows, first]
    partner[ids[has]] = pos[rows[has], first[has]]
    cost[ids] = _cost(feats, usable, q[ids], partner[ids], min_shift)
    part = partner.reshape(shape + (2,))
    cst = cost.reshape(shape)
    qq = q.reshape(shape + (2,))
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    for _ in range(PATCHMATCH_ITERS):
        for jump in JUMPS:
            for dy, dx in steps + [(0, 0)]:
                if (dy, dx) == (0, 0):  # local search: one pixel around the current partner
                    cands = [part + np.array(o) for o in ((1, 0), (-1, 0), (0, 1), (0, -1))]
                else:
                    # the neighbour's offset (np.roll wraps at the borders: one more candidate, judged by its cost)
                    nb = np.roll(part - qq, (dy * jump, dx * jump), axis=(0, 1))
                    cands = [qq + nb]
                for c in cands:
                    cc = _cost(feats, usable, q, c.reshape(-1, 2), min_shift).reshape(shape)
                    better = (cc < cst) & ok.reshape(shape)
                    part[better], cst[better] = c[better], cc[better]
    # ambiguity: the best kNN candidate farther than AMBIGUITY_PX from the final partner
    fin = part.reshape(-1, 2)[ids]
    away = far & (np.hypot(*(pos - fin[:, None, :]).transpose(2, 0, 1)) > AMBIGUITY_PX)
    second = np.where(away.any(1), dist[rows, np.argmax(away, 1)], np.inf)
    best = cst.reshape(-1)[ids]
    clear = np.isfinite(best) & (best < AMBIGUITY * second)
    out.reshape(-1, 2)[ids[clear]] = fin[clear]
    with np.errstate(invalid="ignore", divide="ignore"):  # second may be inf (no candidate elsewhere): clarity 1
        clarity.reshape(-1)[ids[clear]] = 1.0 - np.nan_to_num(best[clear] / second[clear])
    return out, clarity


def nan_median(field: np.ndarray, size: int) -> np.ndarray:
    """Median over size x size grid neighbourhoods ignoring NaN; NaN stays NaN."""
    half = size // 2
    padded = np.pad(field, ((half, half), (half, half)), constant_values=np.nan)
    win = sliding_window_view(padded, (size, size)).reshape(field.shape + (-1,))
    with warnings.catch_warnings():  # all-NaN windows are expected (no partner anywhere around)
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(win, axis=-1)
    return np.where(np.isnan(field), np.nan, med)


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """a[y + dy, x + dx] (NaN outside)."""
    out = np.full_like(a, np.nan)
    h, w = a.shape[:2]
    ys, yd = slice(max(0, dy), min(h, h + dy)), slice(max(0, -dy), min(h, h - dy))
    xs, xd = slice(max(0, dx), min(w, w + dx)), slice(max(0, -dx), min(w, w - dx))
    out[yd, xd] = a[ys, xs]
    return out


def solve3(a: np.ndarray, b: np.ndarray, det: np.ndarray) -> np.ndarray:
    """x with a @ x = b for many 3 x 3 systems ((N, 3, 3), (N, 3, K), their determinants (N,)), by
    the adjugate: ``np.linalg.solve`` pays ~20 us per tiny system, this pays ~0.1."""
    adj = np.empty_like(a)
    for i in range(3):
        for j in range(3):
            r0, r1 = [r for r in range(3) if r != j]
            c0, c1 = [c for c in range(3) if c != i]
            adj[:, i, j] = (-1) ** (i + j) * (a[:, r0, c0] * a[:, r1, c1] - a[:, r0, c1] * a[:, r1, c0])
    return np.einsum("nij,njk->nik", adj, b) / det[:, None, None]


def local_agreement(target: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense linear fitting: ((gh, gw) agreeing neighbours, (gh, gw) their share). ``target``
    (gh, gw, 2) holds each grid point's partner (NaN: none). Each point's local affine map is
    fitted by least squares to the median-filtered partners of its neighbourhood; a neighbour
    agrees when its raw partner lies where the map puts it. The share is over the point's valid
    neighbours, and over at least ``FIT_MIN_AGREE`` (a point with three neighbours is no field);
    both are 0 where no map fits (share, not mean residual: one outlier wrecks a small copy's fit)."""
    smooth = np.stack([nan_median(target[..., c], MEDIAN_STEPS) for c in (0, 1)], -1)
    valid = ~np.isnan(target[..., 0])
    gh, gw = valid.shape
    offs = [(dy, dx) for dy in range(-FIT_RADIUS, FIT_RADIUS + 1) for dx in range(-FIT_RADIUS, FIT_RADIUS + 1)]
    normal = np.zeros((gh, gw, 3, 3))
    rhs = np.zeros((gh, gw, 3, 2))
    for dy, dx in offs:
        t = _shifted(smooth, dy, dx)
        ok = ~np.isnan(t[..., 0])
        basis = np.array([1.0, dx * stride, dy * stride])
        normal += ok[..., None, None] * np.outer(basis, basis)
        rhs += ok[..., None, None] * basis[:, None] * np.nan_to_num(t)[..., None, :]
    det = np.linalg.det(normal)
    solvable = valid & (np.abs(det) > 1e-6 * stride ** 4)
    coef = np.zeros_like(rhs)
    coef[solvable] = solve3(normal[solvable], rhs[solvable], det[solvable])
    agree = np.zeros((gh, gw))
    count = np.zeros((gh, gw))
    for dy, dx in offs:
        t = _shifted(target, dy, dx)
        ok = ~np.isnan(t[..., 0])
        pred = coef[..., 0, :] + coef[..., 1, :] * dx * stride + coef[..., 2, :] * dy * stride
        err = np.linalg.norm(np.nan_to_num(t) - pred, axis=-1)
        count += ok
        agree += ok & (err <= tolerance(stride))
    agree = np.where(solvable, agree, 0)
    return agree, agree / np.maximum(count, FIT_MIN_AGREE)


def tolerance(stride: int) -> float:
    """How far (working pixels) a grid point's partner may lie from where a map puts it."""
    return FIT_TOL_PX + FIT_TOL_STRIDE * stride


def map_ok(m: np.ndarray, max_scale: float) -> bool:
    """An unmirrored similarity within the scale limits: no shear, no uneven scale, no mirror.
    Zernike magnitudes cannot tell a disk from its mirror image, and natural structures (cells,
    bands, lanes) are often mirror-symmetric, so mirrored maps are left to the keypoint search
    (which has mirrored descriptors) and exact hashing."""
    linear = np.asarray(m, np.float64)[:, :2]
    s = np.linalg.svd(linear, compute_uv=False)
    return bool(np.all(np.isfinite(s)) and s[1] > 0 and s[0] / s[1] <= MAX_ANISOTROPY
                and np.linalg.det(linear) > 0 and 1.0 / max_scale <= np.sqrt(s[0] * s[1]) <= max_scale)


def _region_maps(src: np.ndarray, dst: np.ndarray, tol: float, min_shift: float,
                 max_scale: float) -> list[Hypothesis]:
    """Affine maps of one connected region by repeated RANSAC (a region may hold two copies
    side by side); each accepted map becomes a hypothesis."""
    out = []
    live = np.ones(len(src), bool)
    for _ in range(MODELS_PER_REGION):
        ids = np.flatnonzero(live)
        if len(ids) < MIN_POINTS:
            break
        pick = ids[np.linspace(0, len(ids) - 1, min(len(ids), MAX_FIT_POINTS)).astype(int)]
        m, inl = cv2.estimateAffine2D(src[pick].astype(np.float32), dst[pick].astype(np.float32), method=cv2.RANSAC,
                                      ransacReprojThreshold=tol, maxIters=500, confidence=0.99)
        if m is None or inl.sum() < MIN_POINTS:
            break
        err = np.linalg.norm(src[ids] @ m[:, :2].T + m[:, 2] - dst[ids], axis=1)
        agree = ids[err <= tol]
        live[agree] = False
        shift = float(np.median(np.linalg.norm(dst[agree] - src[agree], axis=1)))
        support = min(distinct(src[agree]), distinct(dst[agree]))
        if support >= MIN_POINTS and shift >= min_shift and map_ok(m, max_scale):
            out.append(Hypothesis(np.asarray(m, np.float64), src[agree], dst[agree], support, method="densefield"))
    return out


def _drop_inverses(hyps: list[Hypothesis]) -> list[Hypothesis]:
    """A copy is found from both sides (A -> B and B -> A): keep the better-supported one."""
    kept: list[Hypothesis] = []
    for h in sorted(hyps, key=lambda h: -h.support):
        inv = np.linalg.inv(to3(h.matrix))[:2]
        if not any(np.abs(inv[:, :2] - k.matrix[:, :2]).max() < 0.1 and np.abs(inv[:, 2] - k.matrix[:, 2]).max() < 8
                   for k in kept):
            kept.append(h)
    return kept


@dataclass(frozen=True)
class Field:
    """The dense field of one working image: each grid point's partner and how much to trust it."""

    grid: tuple[np.ndarray, np.ndarray]  # (gy, gx): working pixel of each grid point
    stride: int
    partner: np.ndarray  # (gh, gw, 2) float32 partner (x, y), NaN where none
    clarity: np.ndarray  # (gh, gw) in [0, 1]: how clearly the partner beats the best elsewhere
    agree: np.ndarray  # (gh, gw) neighbours agreeing with the point's local affine map
    share: np.ndarray  # (gh, gw) in [0, 1]: their share (``local_agreement``)

    def consistent(self) -> np.ndarray:
        """bool (gh, gw): the points whose neighbourhood fits one local affine map (at least
        ``FIT_MIN_AGREE`` agreeing neighbours and a share of at least ``FIT_SHARE``)."""
        return (self.agree >= FIT_MIN_AGREE) & (self.share >= FIT_SHARE)


def dense_field(gray: np.ndarray, excluded: np.ndarray, min_shift: float) -> Optional[Field]:
    """The dense field of a working-resolution grey image (steps 1-3 of the module docstring);
    pixels on ``excluded`` take no part. None for an image too small for a grid."""
    h, w = gray.shape
    stride = grid_stride((h, w))
    grid = np.mgrid[stride // 2:h:stride, stride // 2:w:stride]
    if grid[0].size < 4:
        return None
    feats, textured = feature_maps(cv2.GaussianBlur(gray.astype(np.float32), (0, 0), P.BAND_SIGMAS[0]))
    partner, clarity = offset_field(feats, textured & (excluded == 0), (grid[0], grid[1]),
                                    max(min_shift, 2 * DISK_RADIUS))
    agree, share = local_agreement(partner, stride)
    return Field((grid[0], grid[1]), stride, partner, clarity, agree, share)


def field_hypotheses(field: Optional[Field], min_shift: float, max_scale: float = P.MAX_SCALE,
                     limit: int = P.MAX_HYPOTHESES) -> list[Hypothesis]:
    """Candidate maps of a dense field (step 4 of the module docstring), most supported first."""
    if field is None:
        return []
    n, labels = cv2.connectedComponents(field.consistent().astype(np.uint8), connectivity=8)
    gy, gx = field.grid
    hyps: list[Hypothesis] = []
    for k in range(1, n):
        sel = labels == k
        if sel.sum() < MIN_POINTS:
            continue
        src = np.stack([gx[sel], gy[sel]], 1).astype(np.float64)
        hyps += _region_maps(src, field.partner[sel].astype(np.float64), tolerance(field.stride), min_shift,
                             max_scale)
    return _drop_inverses(hyps)[:limit]


def densefield_hypotheses(gray: np.ndarray, excluded: np.ndarray, min_shift: float,
                          max_scale: float = P.MAX_SCALE, limit: int = P.MAX_HYPOTHESES) -> list[Hypothesis]:
    """Candidate maps from the dense field of a working-resolution grey image (see the module
    docstring), most supported first; pixels on ``excluded`` take no part."""
    return field_hypotheses(dense_field(gray, excluded, min_shift), min_shift, max_scale, limit)


# The evidence planes of a field (``field_planes``), in this order: ``clarity`` and ``consistency``.
FIELD_PLANES = ("clarity", "consistency")


def field_planes(field: Optional[Field]) -> np.ndarray:
    """(gh, gw, 2) uint8 evidence on the field's grid, for the network (``FIELD_PLANES``): each
    point's partner clarity and its consistency (the share of its neighbours that agree with its
    local affine map), drawn at the point and at its partner, so both regions of a copy light up
    (the stronger value wins where they meet). Unlike the field's candidates, nothing is
    thresholded: the network learns which fields to trust. (1, 1, 2) zeros without a field."""
    if field is None:
        return np.zeros((1, 1, len(FIELD_PLANES)), np.uint8)
    gh, gw = field.share.shape
    has = ~np.isnan(field.partner[..., 0])
    values = np.stack([np.where(has, field.clarity, 0), np.where(has, field.share, 0)], -1)
    out = np.round(255 * np.clip(values, 0, 1)).astype(np.uint8)
    iy, ix = np.nonzero(has)
    at = np.round((field.partner[iy, ix] - field.stride // 2) / field.stride).astype(int)
    px, py = np.clip(at[:, 0], 0, gw - 1), np.clip(at[:, 1], 0, gh - 1)
    for c in range(out.shape[-1]):
        np.maximum.at(out[..., c], (py, px), out[iy, ix, c])
    return out
