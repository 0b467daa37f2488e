"""Single base images: crops of the scientific photographs scikit-image ships offline, drawn western
blots and gels, and simple panel grids (the ``photos`` style, and the pieces figures reuse)."""
from __future__ import annotations

import functools
from typing import Optional

import cv2
import numpy as np

# scikit-image sample images that ship with the package (the others need a network download).
SCIENCE_IMAGES = ("cell", "immunohistochemistry", "retina", "microaneurysms", "hubble_deep_field", "moon")
BASE_KINDS = ("photo", "blot", "gel", "panels")
BASE_WEIGHTS = (0.4, 0.25, 0.15, 0.2)
MIN_REGION_STD = 10.0  # a source region flatter than this is unlearnable background, so it is re-drawn


@functools.cache
def _science_image(name: str) -> Optional[np.ndarray]:
    """One skimage sample as uint8 (H,W) or (H,W,3); None when it cannot be loaded offline."""
    from skimage import data

    try:
        img = np.asarray(getattr(data, name)())
    except Exception:  # missing pooch / no network / older scikit-image: just skip it
        return None
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype.kind == "f":
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.ndim == 3:
        img = img[:, :, :3]
    img = np.ascontiguousarray(img.astype(np.uint8))
    img.setflags(write=False)
    return img


@functools.cache
def available_science_images() -> tuple[str, ...]:
    return tuple(n for n in SCIENCE_IMAGES if _science_image(n) is not None)


def photo_crop(rng: np.random.Generator, h: int, w: int, gray: bool,
               names: Optional[tuple] = None) -> tuple[np.ndarray, str]:
    """A random (h, w) crop of a scientific photograph (or of ``names``, scikit-image samples),
    rescaled so it covers the crop."""
    names = available_science_images() if names is None else tuple(n for n in names if _science_image(n) is not None)
    name = names[rng.integers(len(names))]
    src = _science_image(name)
    if gray and src.ndim == 3:
        src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
    k = int(rng.integers(4))
    src = np.rot90(src, k)
    sh, sw = src.shape[:2]
    lo = max(h / sh, w / sw)  # smallest scale that still covers the crop
    scale = lo * (1.0 + rng.uniform(0.0, 0.6)) if lo >= 1 else rng.uniform(lo, min(1.0, 2.5 * lo))
    if abs(scale - 1.0) > 1e-3:
        size = (max(w, int(round(sw * scale))), max(h, int(round(sh * scale))))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        src = cv2.resize(np.ascontiguousarray(src), size, interpolation=interpolation)
    for _ in range(4):  # avoid crops of mostly empty background (retina corners, dark sky)
        y = int(rng.integers(src.shape[0] - h + 1))
        x = int(rng.integers(src.shape[1] - w + 1))
        crop = src[y:y + h, x:x + w]
        if crop.std() >= 2 * MIN_REGION_STD:
            break
    return np.ascontiguousarray(crop), name


def _lane_pattern(rng: np.random.Generator, h: int, w: int, ladder: bool,
                  lanes: Optional[tuple[int, float, float]] = None) -> np.ndarray:
    """Band intensity in [0, ~1]: lanes (flat-topped across x) holding Gaussian bands along y.

    ``lanes`` = (count, side margin, lane width) in px fixes the lane geometry instead of
    drawing it, so a figure can align lane labels and lane boxes with the bands.
    """
    if lanes is None:
        n_lanes = int(rng.integers(3, 13))
        margin = w * rng.uniform(0.03, 0.1)
        pitch = (w - 2 * margin) / n_lanes
        lane_w = pitch * rng.uniform(0.55, 0.85)
    else:
        n_lanes, margin, lane_w = lanes
        pitch = (w - 2 * margin) / n_lanes
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    shared = rng.uniform(0.08, 0.95, size=int(rng.integers(1, 6))) * h  # positions common to many lanes
    out = np.zeros((h, w), np.float32)
    for lane in range(n_lanes):
        cx = margin + (lane + 0.5) * pitch + rng.normal(0, pitch * 0.03)
        x_prof = np.exp(-np.abs((xs - cx) / (lane_w / 2)) ** 6)
        if ladder and lane == 0:
            centres = np.linspace(0.1, 0.92, int(rng.integers(6, 12))) ** 1.3 * h
            strengths = rng.uniform(0.4, 0.8, len(centres))
        else:
            keep = rng.random(len(shared)) < 0.8
            extra = rng.uniform(0.05, 0.95, size=int(rng.integers(0, 3))) * h
            centres = np.concatenate([shared[keep] + rng.normal(0, h * 0.004, keep.sum()), extra])
            strengths = rng.uniform(0.15, 1.0, len(centres))
        y_prof = np.zeros(h, np.float32)
        for c, s in zip(centres, strengths):
            sigma = max(1.0, h * rng.uniform(0.006, 0.02))
            y_prof += s * np.exp(-0.5 * ((ys - c) / sigma) ** 2)
        out += np.outer(y_prof, x_prof)
    return out


def _smooth_field(rng: np.random.Generator, h: int, w: int, amplitude: float) -> np.ndarray:
    """Low-frequency background variation (uneven exposure / staining)."""
    coarse = rng.normal(0, 1, (4, 4)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * amplitude


def _finish(rng: np.random.Generator, img: np.ndarray, noise: float) -> np.ndarray:
    sigma = rng.uniform(0.6, 1.8)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def western_blot(rng: np.random.Generator, h: int, w: int, rgb: bool,
                 lanes: Optional[tuple[int, float, float]] = None) -> np.ndarray:
    """Dark bands on a light, slightly uneven membrane (``lanes`` as in ``_lane_pattern``)."""
    bands = _lane_pattern(rng, h, w, ladder=False, lanes=lanes)
    bg = rng.uniform(185, 245) + _smooth_field(rng, h, w, rng.uniform(2, 12))
    img = bg - np.clip(bands, 0, 1.3) * rng.uniform(110, 200)
    img = _finish(rng, img, rng.uniform(1.0, 5.0))
    if rgb:  # scanned film: a faint colour cast
        tint = rng.uniform(0.9, 1.0, 3)
        img = np.clip(np.rint(img[:, :, None] * tint), 0, 255).astype(np.uint8)
    return img


def gel(rng: np.random.Generator, h: int, w: int, rgb: bool,
        lanes: Optional[tuple[int, float, float]] = None) -> np.ndarray:
    """A DNA gel (bright bands on dark) or, in colour, a Coomassie-stained protein gel (blue bands);
    lane 0 is a size ladder (``lanes`` as in ``_lane_pattern``)."""
    bands = np.clip(_lane_pattern(rng, h, w, ladder=True, lanes=lanes), 0, 1.3)
    if not rgb:
        bg = rng.uniform(10, 45) + _smooth_field(rng, h, w, rng.uniform(2, 8))
        return _finish(rng, bg + bands * rng.uniform(120, 210), rng.uniform(1.0, 4.0))
    light = np.array([rng.uniform(200, 235), rng.uniform(205, 240), rng.uniform(215, 250)], np.float32)
    dark = np.array([rng.uniform(20, 60), rng.uniform(40, 80), rng.uniform(110, 160)], np.float32)
    field_ = _smooth_field(rng, h, w, rng.uniform(2, 8))
    a = np.clip(bands, 0, 1)[:, :, None]
    img = light + field_[:, :, None] + a * (dark - light)
    return _finish(rng, img, rng.uniform(1.0, 4.0))


def _image_size(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w) with h != w, sides in [min_size, max_size], aspect at most 1:3."""
    long = int(rng.integers(min_size, max_size + 1))
    short = int(rng.integers(max(min_size, long // 3), long + 1))
    if short == long and long > min_size:
        short -= 1
    elif short == long and long < max_size:
        long += 1  # only min_size == max_size stays square
    return (long, short) if rng.random() < 0.5 else (short, long)


def _single(rng: np.random.Generator, kind: str, h: int, w: int, rgb: bool,
            names: Optional[tuple] = None) -> tuple[np.ndarray, str]:
    """One photo crop (of one of ``names``, default any), blot or gel of exactly (h, w); ``rgb``
    is a preference photos may ignore."""
    if kind == "photo":
        img, name = photo_crop(rng, h, w, gray=not rgb, names=names)
        return img, f"photo:{name}"
    return (western_blot if kind == "blot" else gel)(rng, h, w, rgb), kind


def figure_panels(rng: np.random.Generator, h: int, w: int, rgb: bool) -> Optional[np.ndarray]:
    """A multi-panel figure: a grid of crops/blots/gels on white with gutters (duplicated panels
    and regions across panels are typical real forgeries). None when the panels would be tiny.

    Each photograph serves one panel at most: two crops of one photograph overlap more often
    than not (a 102 px sample covers every crop), and the overlap, turned and rescaled, is a
    duplicated region that an authentic label would deny. Once every photograph is used, the
    remaining photo panels become blots."""
    rows, cols = int(rng.integers(1, 3)), int(rng.integers(2, 4))
    if w < h:
        rows, cols = cols, rows
    gutter = max(2, min(h, w) // 40)
    ph, pw = (h - gutter * (rows + 1)) // rows, (w - gutter * (cols + 1)) // cols
    if min(ph, pw) < 24:
        return None
    out = np.full((h, w, 3) if rgb else (h, w), 255, np.uint8)
    unused = list(available_science_images())
    for r in range(rows):
        for c in range(cols):
            kind = BASE_KINDS[rng.choice(3, p=(0.6, 0.25, 0.15))]
            if kind == "photo" and not unused:
                kind = "blot"
            panel, name = _single(rng, kind, ph, pw, rgb, names=tuple(unused))
            if kind == "photo":
                unused.remove(name.partition(":")[2])
            if rgb and panel.ndim == 2:
                panel = np.repeat(panel[:, :, None], 3, axis=2)
            y, x = gutter + r * (ph + gutter), gutter + c * (pw + gutter)
            out[y:y + ph, x:x + pw] = panel
    return out


def make_base(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[np.ndarray, str]:
    """(uint8 image (H,W) or (H,W,3), kind) with H != W, sides in [min_size, max_size], aspect <= 1:3."""
    h, w = _image_size(rng, min_size, max_size)
    kind = BASE_KINDS[rng.choice(len(BASE_KINDS), p=BASE_WEIGHTS)]
    if kind == "panels":
        img = figure_panels(rng, h, w, rgb=bool(rng.random() < 0.6))
        if img is not None:
            return img, kind
        kind = "photo"
    rgb = bool(rng.random() < (0.75 if kind == "photo" else 0.35))
    return _single(rng, kind, h, w, rgb)
