"""Dense candidates where keypoints are few: every plain or mirrored shift at once, by FFT.

A region copied by a shift d makes the image's fine detail correlate with itself at d. The
auto-correlation of the band-passed, spectrally whitened image has a peak at d whose height
is the copied detail's share of the image, whatever the texture: blot bands, smooth
micrographs and the sensor noise they carry are all copied with the pixels. The image's
mirror images need no second transform: for a real image, mirroring is an index reversal of
its spectrum, so one forward FFT serves the plain, left-right, top-bottom and 180 degree
searches. Everything runs at the working resolution: sensor noise, often the only detail of a
blot, decorrelates under any resampling.

The FFT is circular (no 2x padding, to stay fast), so a peak names a shift only modulo the
transform size; every unwrapped reading is checked on 16 px blocks (a cheap zero-mean
correlation of block sums), and the blocks that agree seed the full verification.
"""
from __future__ import annotations

import cv2
import numpy as np

from preprocessing.matching import params as P
from preprocessing.matching.hypotheses import Hypothesis, apply

# Width (frequency bins) of the average amplitude each frequency is divided by when whitening.
WHITEN_SIGMA = 4.0
# Raised-cosine ramp at the borders: the image edge would otherwise correlate with itself.
TAPER_PX = 12
# Length of the row / column whose mean a peak must stand above (ridges are not peaks).
RIDGE_PX = 31
# Block size of the cheap check; a copy of 0.1% of a 1 MP image still covers ~4 blocks.
BLOCK_PX = 16
# A block agrees when the correlation of its detail with its partner's is at least this.
BLOCK_ZNCC = 0.5
# Blocks with less detail than this (mean square of the band-passed image) are not judged.
BLOCK_MIN_ENERGY = 0.25
# Agreeing blocks needed (in one 8-connected group) before the full check runs.
MIN_BLOCKS = 3
# Seeds handed to the full check (spread over the agreeing blocks).
DENSE_SEEDS = 64


def _taper(shape: tuple[int, int]) -> np.ndarray:
    ramps = []
    for n in shape:
        r = np.ones(n, np.float32)
        k = min(TAPER_PX, n // 4)
        if k > 0:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
            r[:k], r[n - k:] = edge, edge[::-1]
        ramps.append(r)
    return np.outer(ramps[0], ramps[1])


def whitened_spectrum(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) spectrum of the tapered, zero-padded image, each frequency divided by the local
    average amplitude: a copy-free texture then auto-correlates to a single spike at zero."""
    padded = np.zeros(shape, np.float32)
    padded[:img.shape[0], :img.shape[1]] = img * _taper(img.shape)
    f = cv2.dft(padded, flags=cv2.DFT_COMPLEX_OUTPUT)
    amp = np.fft.fftshift(cv2.magnitude(f[..., 0], f[..., 1]))
    smooth = np.fft.ifftshift(cv2.GaussianBlur(amp, (0, 0), WHITEN_SIGMA, borderType=cv2.BORDER_REFLECT))
    return f / (smooth + 1e-3 * float(smooth.mean()) + 1e-9)[..., None]


def reverse(f: np.ndarray, axis: int) -> np.ndarray:
    """Spectrum of the circularly mirrored image b(x) = a(-x mod N) along ``axis``: F(-k)."""
    return np.roll(np.flip(f, axis=axis), 1, axis=axis)


def correlation(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """c(d) = sum_p a(p) b(p + d), circular."""
    prod = cv2.mulSpectrums(fb, fa, 0, conjB=True)
    return cv2.idft(prod, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)


def peaks(c: np.ndarray, count: int, exclude: float, half_plane: bool) -> list[tuple[int, int, float]]:
    """Up to ``count`` isolated maxima (dy, dx, height relative to c(0)) of a circular
    correlation. A peak's height is measured above the mean of the row and of the column
    through it (``RIDGE_PX`` long): straight structures (lane edges, rulings) make whole ridges
    of shifts along them agree, and a ridge is not a copy. Shifts under ``exclude`` pixels are
    left out; with ``half_plane`` (an auto-correlation, c(d) = c(-d)) only one of d, -d."""
    n0, n1 = c.shape
    score = (c / max(float(c[0, 0]), 1e-12)).astype(np.float32)
    dy = np.minimum(np.arange(n0), n0 - np.arange(n0))[:, None]
    dx = np.minimum(np.arange(n1), n1 - np.arange(n1))[None, :]
    if exclude > 0:
        score[(dy * dy + dx * dx) < exclude * exclude] = 0
    ridge = np.maximum(cv2.blur(score, (RIDGE_PX, 1), borderType=cv2.BORDER_REFLECT),
                       cv2.blur(score, (1, RIDGE_PX), borderType=cv2.BORDER_REFLECT))
    resid = score - ridge
    if half_plane:
        rows = np.arange(n0)[:, None]
        cols = np.arange(n1)[None, :]
        resid[(rows > n0 // 2) | ((rows == 0) & (cols > n1 // 2))] = 0
    local_max = resid >= cv2.dilate(resid, np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(local_max & (resid >= P.DENSE_MIN_PEAK))
    order = np.argsort(-resid[ys, xs])[:count]
    return [(int(ys[k]), int(xs[k]), float(resid[ys[k], xs[k]])) for k in order]


def _readings(shift: int, n: int, size: int) -> list[int]:
    """The unwrapped shifts (|s| < size) that a circular shift modulo ``n`` may stand for."""
    return [s for s in (shift, shift - n, shift + n) if abs(s) < size]


def _mirror_offsets(shift: int, n: int, size: int) -> list[int]:
    """Mirror constants c (copy x = c - x) that the circular correlation peak may stand for:
    a(p) ~ a(-(p + d)) gives c = -d modulo n, with 0 <= c <= 2 (size - 1)."""
    base = (-shift) % n
    return [c for c in (base, base + n, base - n) if 0 <= c <= 2 * (size - 1)]


def candidate_maps(img: np.ndarray, min_shift: float, count: int = P.DENSE_PEAKS) -> list[np.ndarray]:
    """Integer 2x3 source -> copy maps (plain shifts and the three mirrors) worth checking."""
    h, w = img.shape
    shape = (cv2.getOptimalDFTSize(h), cv2.getOptimalDFTSize(w))
    f = whitened_spectrum(img, shape)
    maps = []
    for dy, dx, _ in peaks(correlation(f, f), count, min_shift, half_plane=True):
        for sy in _readings(dy, shape[0], h):
            for sx in _readings(dx, shape[1], w):
                maps.append(np.array([[1.0, 0, sx], [0, 1.0, sy]]))
    for fy, fx, spec in ((1.0, -1.0, reverse(f, 1)), (-1.0, 1.0, reverse(f, 0)),
                         (-1.0, -1.0, reverse(reverse(f, 0), 1))):
        for dy, dx, _ in peaks(correlation(f, spec), count, 0.0, half_plane=False):
            ty = _mirror_offsets(dy, shape[0], h) if fy < 0 else _readings(-dy, shape[0], h)
            tx = _mirror_offsets(dx, shape[1], w) if fx < 0 else _readings(-dx, shape[1], w)
            for cy in ty:
                for cx in tx:
                    maps.append(np.array([[fx, 0, cx], [0, fy, cy]]))
    return maps


def block_agreement(img: np.ndarray, m: np.ndarray, min_shift: float) -> np.ndarray:
    """bool (h // BLOCK_PX, w // BLOCK_PX): blocks whose detail correlates with their partner's."""
    h, w = img.shape
    bh, bw = h // BLOCK_PX, w // BLOCK_PX
    if bh == 0 or bw == 0:
        return np.zeros((0, 0), bool)
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    partner = cv2.warpAffine(img, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpAffine(np.ones((h, w), np.float32), m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    crop = (slice(0, bh * BLOCK_PX), slice(0, bw * BLOCK_PX))

    def block_mean(x):
        return cv2.resize(np.ascontiguousarray(x[crop]), (bw, bh), interpolation=cv2.INTER_AREA)

    a = img * inside
    ab, aa, bb = block_mean(a * partner), block_mean(a * a), block_mean(partner * partner)
    full = block_mean(inside) > 0.99
    zncc = ab / np.sqrt(aa * bb + 1e-9)
    cy = (np.arange(bh) + 0.5) * BLOCK_PX
    cx = (np.arange(bw) + 0.5) * BLOCK_PX
    dx = (m[0, 0] - 1) * cx[None, :] + m[0, 1] * cy[:, None] + m[0, 2]
    dy = m[1, 0] * cx[None, :] + (m[1, 1] - 1) * cy[:, None] + m[1, 2]
    far = dx * dx + dy * dy >= (min_shift + BLOCK_PX) ** 2
    return full & far & (zncc >= BLOCK_ZNCC) & (np.minimum(aa, bb) >= BLOCK_MIN_ENERGY)


def dense_hypotheses(band: np.ndarray, excluded: np.ndarray, min_shift: float) -> list[Hypothesis]:
    """Shift / mirror candidates whose blocks agree, with seed points for the full check."""
    img = np.where(excluded > 0, 0, band).astype(np.float32)
    if float(np.abs(img).max()) <= 0:
        return []
    out = []
    for m in candidate_maps(img, min_shift):
        agree = block_agreement(img, m, min_shift).astype(np.uint8)
        if agree.sum() < MIN_BLOCKS:
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(agree, connectivity=8)
        big = 1 + np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= MIN_BLOCKS)
        if len(big) == 0:
            continue
        by, bx = np.nonzero(np.isin(labels, big))
        pick = np.linspace(0, len(bx) - 1, min(len(bx), DENSE_SEEDS)).astype(int)
        seeds = (np.stack([bx[pick], by[pick]], 1).astype(np.float64) + 0.5) * BLOCK_PX
        out.append(Hypothesis(m, seeds, apply(m, seeds), support=int(len(bx)), method="dense"))
    out.sort(key=lambda hy: -hy.support)
    return out
