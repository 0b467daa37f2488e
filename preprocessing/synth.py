"""Synthetic copy-move forgeries in the competition layout: the built-in default dataset.

    python -m preprocessing.synth --output_dir DIR --num_train 200 --num_test 50 --seed 0 [--style mixed]

writes
    DIR/train_images/authentic/<case_id>.png   DIR/train_images/forged/<case_id>.png
    DIR/train_masks/<case_id>.npy               uint8 (N, H, W): the source and each copy are instances
    DIR/test_images/<case_id>.png               DIR/test_solution.csv (case_id,annotation,height,width)
    DIR/synth_meta.json                         every case and every copy-move operation

``--style``: ``photos`` (single images, described next), ``figures`` (compound scientific
figures with panel letters, scale bars, blots, gels and charts: ``preprocessing.figures``) or
``mixed`` (the default: each case is a figure or a photo, half and half).

Photos are crops of the scientific photographs scikit-image ships offline
(micrographs, immunohistochemistry, retina, astronomy) and procedurally drawn
western blots and gels. A forged image gets 1-3 copy-move operations: a region
(rectangle, ellipse or polygon) pasted elsewhere in the same image, sometimes
flipped / rotated / rescaled / brightened / feathered. As in the competition,
many forged case ids also exist as the untouched authentic image. Some images
(authentic too, so it is no give-away) are re-saved through JPEG or get noise.

Everything is a pure function of ``seed``: each case draws from its own
``SeedSequence`` child, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import cv2
import numpy as np

from serving import rle

META_FILE = "synth_meta.json"
SOLUTION_FILE = "test_solution.csv"
VERSION = 1

# scikit-image sample images that ship with the package (the others need a network download).
SCIENCE_IMAGES = ("cell", "immunohistochemistry", "retina", "microaneurysms", "hubble_deep_field", "moon")
BASE_KINDS = ("photo", "blot", "gel", "panels")
BASE_WEIGHTS = (0.4, 0.25, 0.15, 0.2)
SHAPES = ("rectangle", "ellipse", "polygon")

PAIRED_FRACTION = 0.6  # forged training cases whose authentic twin is also written
JPEG_PROB, NOISE_PROB = 0.25, 0.15
GRAY_16BIT_PROB = 0.1  # of grayscale images, saved as 16-bit PNG (value * 257, exact under to_rgb8)
MIN_REGION_STD = 10.0  # a source region flatter than this is unlearnable background, so it is re-drawn
BASE_ATTEMPTS = 5  # base images drawn for a forged case before accepting flat regions
STYLES = ("mixed", "figures", "photos")
FIGURE_FRACTION = 0.5  # of ``mixed`` cases drawn as compound figures


# ----------------------------------------------------------------------------- base images

@functools.lru_cache(maxsize=None)
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


@functools.lru_cache(maxsize=None)
def available_science_images() -> tuple[str, ...]:
    return tuple(n for n in SCIENCE_IMAGES if _science_image(n) is not None)


def photo_crop(rng: np.random.Generator, h: int, w: int, gray: bool) -> tuple[np.ndarray, str]:
    """A random (h, w) crop of a scientific photograph, rescaled so it covers the crop."""
    names = available_science_images()
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
        src = cv2.resize(np.ascontiguousarray(src), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
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


def _single(rng: np.random.Generator, kind: str, h: int, w: int, rgb: bool) -> tuple[np.ndarray, str]:
    """One photo crop, blot or gel of exactly (h, w); ``rgb`` is a preference photos may ignore."""
    if kind == "photo":
        img, name = photo_crop(rng, h, w, gray=not rgb)
        return img, f"photo:{name}"
    return (western_blot if kind == "blot" else gel)(rng, h, w, rgb), kind


def figure_panels(rng: np.random.Generator, h: int, w: int, rgb: bool) -> Optional[np.ndarray]:
    """A multi-panel figure: a grid of crops/blots/gels on white with gutters (duplicated panels
    and regions across panels are typical real forgeries). None when the panels would be tiny."""
    rows, cols = int(rng.integers(1, 3)), int(rng.integers(2, 4))
    if w < h:
        rows, cols = cols, rows
    gutter = max(2, min(h, w) // 40)
    ph, pw = (h - gutter * (rows + 1)) // rows, (w - gutter * (cols + 1)) // cols
    if min(ph, pw) < 24:
        return None
    out = np.full((h, w, 3) if rgb else (h, w), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            kind = BASE_KINDS[rng.choice(3, p=(0.6, 0.25, 0.15))]
            panel, _ = _single(rng, kind, ph, pw, rgb)
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


# ----------------------------------------------------------------------------- copy-move

@dataclass(frozen=True)
class CopyMove:
    """One copy-move: everything needed to re-apply it to the same base image.

    ``src_box``/``dst_box`` are (y, x, h, w), each the tight box of its region, so an
    exact copy is ``image[dst] = image[src]`` where the region is set; ``vertices`` are
    polygon points (x, y) relative to the source box. The copy is the source patch flipped, then rotated
    by ``rot90`` quarter turns, then by ``angle`` degrees and scaled by ``scale``,
    then ``gain * v + offset``, then pasted with edges blurred by ``feather`` px.
    """

    shape: str
    src_box: tuple[int, int, int, int]
    dst_box: tuple[int, int, int, int] = (0, 0, 0, 0)
    vertices: tuple[tuple[int, int], ...] = ()
    flip: str = ""  # "", "h" or "v"
    rot90: int = 0
    angle: float = 0.0
    scale: float = 1.0
    gain: float = 1.0
    offset: float = 0.0
    feather: float = 0.0

    @property
    def exact(self) -> bool:
        """The copy is pixel-identical to its source (no geometric or photometric change)."""
        return (not self.flip and self.rot90 % 4 == 0 and self.angle == 0 and self.scale == 1
                and self.gain == 1 and self.offset == 0 and self.feather == 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exact"] = self.exact
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CopyMove":
        """Inverse of ``to_dict`` (JSON lists back to tuples), to replay an op from synth_meta.json."""
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("src_box", "dst_box"):
            kw[k] = tuple(int(v) for v in kw[k])
        kw["vertices"] = tuple((int(a), int(b)) for a, b in kw.get("vertices", ()))
        return cls(**kw)


def region_mask(shape: str, h: int, w: int, vertices=()) -> np.ndarray:
    """The (h, w) uint8 0/1 mask of a region inside its bounding box."""
    if shape == "rectangle":
        return np.ones((h, w), np.uint8)
    if shape == "ellipse":
        yy, xx = np.mgrid[0:h, 0:w]
        ry, rx = h / 2.0, w / 2.0
        return ((((yy + 0.5 - ry) / ry) ** 2 + ((xx + 0.5 - rx) / rx) ** 2) <= 1.0).astype(np.uint8)
    if shape == "polygon":
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.asarray(vertices, np.int32).reshape(-1, 1, 2)], 1)
        return m
    raise ValueError(f"unknown region shape {shape!r}")


def transform_patch(patch: np.ndarray, mask: np.ndarray, op: CopyMove) -> tuple[np.ndarray, np.ndarray]:
    """Apply the op's geometry to a patch and its mask; both cropped to the mask's bounding box."""
    if op.flip == "h":
        patch, mask = patch[:, ::-1], mask[:, ::-1]
    elif op.flip == "v":
        patch, mask = patch[::-1], mask[::-1]
    patch, mask = np.rot90(patch, op.rot90), np.rot90(mask, op.rot90)
    patch, mask = np.ascontiguousarray(patch), np.ascontiguousarray(mask)
    if op.angle != 0 or op.scale != 1:
        h, w = mask.shape
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), op.angle, op.scale)
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
        m[0, 2] += nw / 2.0 - w / 2.0
        m[1, 2] += nh / 2.0 - h / 2.0
        patch = cv2.warpAffine(patch, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        soft = cv2.warpAffine(mask.astype(np.float32), m, (nw, nh), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = (soft >= 0.5).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return patch[:0, :0], mask[:0, :0]
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return patch[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def apply_copy_move(image: np.ndarray, op: CopyMove) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forged image, source instance, copy instance) for one copy-move; ``image`` is not modified.

    ``op.dst_box`` must have the size ``transform_patch`` gives for this op.
    """
    y, x, h, w = op.src_box
    local = region_mask(op.shape, h, w, op.vertices)
    patch, mask = transform_patch(image[y:y + h, x:x + w], local, op)
    dy, dx, dh, dw = op.dst_box
    if mask.shape != (dh, dw):
        raise ValueError(f"dst_box {op.dst_box} does not match the transformed region {mask.shape}")
    out = image.copy()
    src_inst = np.zeros(image.shape[:2], np.uint8)
    src_inst[y:y + h, x:x + w] = local
    dst_inst = np.zeros(image.shape[:2], np.uint8)
    dst_inst[dy:dy + dh, dx:dx + dw] = mask

    values = patch.astype(np.float32)
    if op.gain != 1 or op.offset != 0:
        values = values * op.gain + op.offset
    if op.feather > 0:
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), op.feather) * mask
    else:
        alpha = mask.astype(np.float32)
    if values.ndim == 3:
        alpha = alpha[:, :, None]
    target = out[dy:dy + dh, dx:dx + dw].astype(np.float32)
    blended = alpha * values + (1.0 - alpha) * target
    out[dy:dy + dh, dx:dx + dw] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out, src_inst, dst_inst


def _disjoint(box, boxes, gap: int) -> bool:
    y, x, h, w = box
    return all(y + h + gap <= by or by + bh + gap <= y or x + w + gap <= bx or bx + bw + gap <= x
               for by, bx, bh, bw in boxes)


def _random_polygon(rng: np.random.Generator, h: int, w: int) -> tuple[tuple[int, int], ...]:
    """An irregular star-shaped (so never self-intersecting) polygon touching all four sides of an (h, w) box."""
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.5, 1.0, n)
    xs, ys = radii * np.cos(angles), radii * np.sin(angles)
    xs = np.rint((xs - xs.min()) / max(np.ptp(xs), 1e-6) * (w - 1))
    ys = np.rint((ys - ys.min()) / max(np.ptp(ys), 1e-6) * (h - 1))
    return tuple((int(a), int(b)) for a, b in zip(xs, ys))


def _draw_transform(rng: np.random.Generator) -> dict:
    """Geometric / photometric changes; about 40% of copies are exact."""
    if rng.random() < 0.4:
        return {}
    t = {}
    if rng.random() < 0.3:
        t["flip"] = "h" if rng.random() < 0.5 else "v"
    if rng.random() < 0.3:
        t["rot90"] = int(rng.integers(1, 4))
    if rng.random() < 0.2:
        t["angle"] = float(np.round(rng.uniform(-30, 30), 1))
    if rng.random() < 0.25:
        t["scale"] = float(np.round(rng.uniform(0.75, 1.3), 2))
    if rng.random() < 0.25:
        t["gain"] = float(np.round(rng.uniform(0.85, 1.15), 2))
        t["offset"] = float(np.round(rng.uniform(-12, 12), 1))
    if rng.random() < 0.25:
        t["feather"] = float(np.round(rng.uniform(1.0, 3.0), 1))
    return t


def draw_copy_move(rng: np.random.Generator, image: np.ndarray, occupied: list, tries: int = 40,
                   min_frac: float = 0.03, max_frac: float = 0.15,
                   min_std: float = MIN_REGION_STD, src_area: Optional[tuple] = None,
                   dst_area: Optional[tuple] = None, transform=_draw_transform) -> Optional[CopyMove]:
    """A random copy-move whose source and copy boxes avoid each other and ``occupied``; None if none fits.

    The source lies in ``src_area`` and the copy in ``dst_area`` (y, x, h, w boxes; default the
    whole image: a figure passes panel boxes). The region covers ``min_frac``-``max_frac`` of
    ``src_area`` so it is big enough to learn, and its source must be textured (copying flat
    background is not a visible forgery). ``transform(rng)`` draws the CopyMove's changes.
    """
    H, W = image.shape[:2]
    sy, sx, sh, sw = src_area or (0, 0, H, W)
    ty, tx, th_max, tw_max = dst_area or (0, 0, H, W)
    gap = max(1, min(sh, sw) // 50)
    for _ in range(tries):
        shape = SHAPES[rng.integers(len(SHAPES))]
        fill = {"rectangle": 1.0, "ellipse": np.pi / 4, "polygon": 0.7}[shape]
        area = rng.uniform(min_frac, max_frac) * sh * sw / fill
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        h = int(np.clip(round(np.sqrt(area * aspect)), 4, sh // 2))
        w = int(np.clip(round(np.sqrt(area / aspect)), 4, sw // 2))
        y, x = sy + int(rng.integers(sh - h + 1)), sx + int(rng.integers(sw - w + 1))
        src = (y, x, h, w)
        if not _disjoint(src, occupied, gap):
            continue
        vertices = _random_polygon(rng, h, w) if shape == "polygon" else ()
        op = CopyMove(shape=shape, src_box=src, vertices=vertices, **transform(rng))
        local = region_mask(shape, h, w, vertices)
        if not (local.any(axis=0).all() and local.any(axis=1).all()):
            continue  # the region must span its box (degenerate polygon)
        if image[y:y + h, x:x + w][local.astype(bool)].std() < min_std:
            continue
        _, tmask = transform_patch(image[y:y + h, x:x + w], local, op)
        th, tw = tmask.shape
        if th == 0 or th > th_max or tw > tw_max:
            continue
        for _ in range(10):
            dst = (ty + int(rng.integers(th_max - th + 1)), tx + int(rng.integers(tw_max - tw + 1)), th, tw)
            if _disjoint(dst, occupied + [src], gap):
                return replace(op, dst_box=dst)
    return None


def forge(rng: np.random.Generator, image: np.ndarray, min_std: float = MIN_REGION_STD
          ) -> tuple[np.ndarray, list[np.ndarray], list[CopyMove]]:
    """1-3 copy-moves on ``image``: (forged image, instance masks, ops); no ops if none fits."""
    n_ops = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    out, instances, ops, occupied = image, [], [], []
    for k in range(n_ops):
        op = draw_copy_move(rng, out, occupied, max_frac=0.15 if k == 0 else 0.08, min_std=min_std)
        if op is None and k == 0:  # first op: retry with smaller regions
            op = draw_copy_move(rng, out, occupied, tries=100, max_frac=0.06, min_std=min_std)
        if op is None:
            continue
        out, src_inst, dst_inst = apply_copy_move(out, op)
        instances += [src_inst, dst_inst]
        ops.append(op)
        occupied += [op.src_box, op.dst_box]
    return out, instances, ops


# ----------------------------------------------------------------------------- post-processing and files

def draw_post(rng: np.random.Generator) -> dict:
    """Re-save through JPEG and/or add noise (applied after the forgery, to authentic images too)."""
    post = {}
    if rng.random() < JPEG_PROB:
        post["jpeg_quality"] = int(rng.integers(75, 96))
    if rng.random() < NOISE_PROB:
        post["noise_sigma"] = float(np.round(rng.uniform(1.0, 4.0), 2))
        post["noise_seed"] = int(rng.integers(2**31))
    return post


def post_process(image: np.ndarray, post: dict) -> np.ndarray:
    """Noise then JPEG round trip; the same ``post`` gives the same change on a before/after pair."""
    out = image
    if "noise_sigma" in post:
        noise = np.random.default_rng(post["noise_seed"]).standard_normal(out.shape, dtype=np.float32)
        noise *= np.float32(post["noise_sigma"])
        out = np.clip(np.rint(out + noise), 0, 255).astype(np.uint8)
    if "jpeg_quality" in post:
        bgr = out[:, :, ::-1] if out.ndim == 3 else out
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, post["jpeg_quality"]])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        out = dec[:, :, ::-1] if dec.ndim == 3 else dec
    return np.ascontiguousarray(out)


def write_png(path: str, image: np.ndarray, bit16: bool = False) -> None:
    """RGB or grayscale uint8 -> PNG (grayscale stays single-channel; ``bit16`` stores v * 257)."""
    arr = image
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]
    elif bit16:
        arr = arr.astype(np.uint16) * 257
    if not cv2.imwrite(path, np.ascontiguousarray(arr)):
        raise OSError(f"could not write {path}")


@dataclass
class SynthCase:
    split: str  # "train" or "test"
    case_id: str
    forged: bool
    paired: bool = False  # forged train case whose authentic twin is written too
    kind: str = ""
    height: int = 0
    width: int = 0
    channels: int = 0
    bit16: bool = False
    post: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    figure: Optional[dict] = None  # a compound figure's panels and decorations

    def to_dict(self) -> dict:
        """As stored in synth_meta.json (photo cases have no ``figure`` key, as before figures)."""
        d = asdict(self)
        if d["figure"] is None:
            del d["figure"]
        return d


def _plan(rng: np.random.Generator, num_train: int, num_test: int) -> list[SynthCase]:
    """Which cases exist: half of each split forged, ~60% of forged train cases paired, unique ids."""
    n_forged = num_train // 2
    n_auth = num_train - n_forged
    n_pairs = min(int(round(PAIRED_FRACTION * n_forged)), n_auth)
    n_cases = n_forged + n_auth - n_pairs + num_test
    ids = [str(v) for v in rng.choice(np.arange(10_000, 10_000 + max(100_000, 20 * n_cases)), n_cases, replace=False)]
    plan = []
    for i in range(n_forged):
        plan.append(SynthCase("train", ids.pop(), forged=True, paired=i < n_pairs))
    for _ in range(n_auth - n_pairs):
        plan.append(SynthCase("train", ids.pop(), forged=False))
    test_forged = rng.permutation(num_test) < num_test // 2
    for f in test_forged:
        plan.append(SynthCase("test", ids.pop(), forged=bool(f)))
    return plan


def _photo_case(case: SynthCase, rng: np.random.Generator, min_size: int, max_size: int):
    """(base, image, instances or None, op dicts) for a single-image case."""
    for attempt in range(BASE_ATTEMPTS):
        base, case.kind = make_base(rng, min_size, max_size)
        if not case.forged:
            return base, base, None, []
        # A base too flat for a textured copy is re-drawn; the last attempt takes any texture.
        image, instances, ops = forge(rng, base, MIN_REGION_STD if attempt < BASE_ATTEMPTS - 1 else 0.0)
        if ops:
            return base, image, instances, [op.to_dict() for op in ops]
    raise RuntimeError(f"case {case.case_id}: no copy-move fits a {base.shape} image")


def _figure_case(case: SynthCase, rng: np.random.Generator, min_size: int, max_size: int):
    """(base, image, instances or None, op dicts) for a compound-figure case."""
    from preprocessing import figures

    for attempt in range(BASE_ATTEMPTS):
        fig = figures.make_figure(rng, min_size, max_size)
        case.kind, case.figure = "figure", fig.meta()
        if not case.forged:
            return fig.image, fig.image, None, []
        image, instances, ops = figures.forge(rng, fig, MIN_REGION_STD if attempt < BASE_ATTEMPTS - 1 else 0.0)
        if ops:
            return fig.image, image, instances, ops
    raise RuntimeError(f"case {case.case_id}: no copy-move fits a {fig.image.shape} figure")


def figures_fit(max_size: int) -> bool:
    """Whether pages of at most ``max_size`` px can hold a figure (else ``mixed`` makes photos only)."""
    from preprocessing.figures_layout import FIGURE_MIN_SIDE

    return max_size >= FIGURE_MIN_SIDE


def _make_case(case: SynthCase, rng: np.random.Generator, min_size: int, max_size: int, style: str = "photos"):
    """(images to write as {relative path: array}, mask instances or None) for one planned case."""
    if style == "mixed":
        style = "figures" if rng.random() < FIGURE_FRACTION and figures_fit(max_size) else "photos"
    draw = _figure_case if style == "figures" else _photo_case
    base, image, instances, case.ops = draw(case, rng, min_size, max_size)
    case.height, case.width = base.shape[:2]
    case.channels = 1 if base.ndim == 2 else 3
    case.bit16 = base.ndim == 2 and bool(rng.random() < GRAY_16BIT_PROB)
    case.post = draw_post(rng)
    files = {}
    if case.split == "test":
        files[os.path.join("test_images", case.case_id + ".png")] = post_process(image, case.post)
    else:
        label = "forged" if case.forged else "authentic"
        files[os.path.join("train_images", label, case.case_id + ".png")] = post_process(image, case.post)
        if case.paired:
            files[os.path.join("train_images", "authentic", case.case_id + ".png")] = post_process(base, case.post)
    return files, instances


def generate(output_dir: str, num_train: int, num_test: int, seed: int, min_size: int = 100,
             max_size: int = 1500, show_progress: Optional[bool] = None, style: str = "mixed") -> dict:
    """Write a synthetic dataset in the competition layout; returns a summary (also in synth_meta.json).

    ``style`` is ``photos``, ``figures`` or ``mixed`` (module docstring). Photos have both sides in
    [min_size, max_size]; a figure page is 400-1500 px wide by default (``figures_layout`` gives
    the rule for other bounds) and needs max_size >= 128: below that ``mixed`` makes photos only.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError("num_train and num_test must be >= 0")
    if not 16 <= min_size <= max_size:
        raise ValueError(f"need 16 <= min_size <= max_size, got {min_size}, {max_size}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "figures" and not figures_fit(max_size):
        raise ValueError(f"style 'figures' needs a larger max_size than {max_size} (pages of at least 128 px)")
    if not available_science_images():
        raise RuntimeError("no scikit-image sample image could be loaded")
    for sub in ("train_images/authentic", "train_images/forged", "train_masks", "test_images"):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)

    root = np.random.SeedSequence(seed)
    plan_seq, cases_seq = root.spawn(2)
    plan = _plan(np.random.default_rng(plan_seq), num_train, num_test)
    case_seqs = cases_seq.spawn(len(plan))
    if show_progress is None:
        show_progress = num_train + num_test > 50
    iterator = plan
    if show_progress:
        from tqdm import tqdm

        iterator = tqdm(plan, desc="synth", unit="case")

    solution_rows = []
    for case, seq in zip(iterator, case_seqs):
        files, instances = _make_case(case, np.random.default_rng(seq), min_size, max_size, style)
        for rel, img in files.items():
            write_png(os.path.join(output_dir, rel), img, case.bit16)
        if case.split == "train" and case.forged:
            np.save(os.path.join(output_dir, "train_masks", case.case_id + ".npy"), np.stack(instances))
        if case.split == "test":
            annotation = rle.encode(instances) if case.forged else rle.AUTHENTIC
            solution_rows.append((case.case_id, annotation, case.height, case.width))

    with open(os.path.join(output_dir, SOLUTION_FILE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "annotation", "height", "width"])
        writer.writerows(sorted(solution_rows))

    train = [c for c in plan if c.split == "train"]
    test = [c for c in plan if c.split == "test"]
    summary = {
        "version": VERSION,
        "seed": seed,
        "options": {"num_train": num_train, "num_test": num_test, "min_size": min_size, "max_size": max_size},
        "style": style,
        "train": {"images": num_train, "forged": sum(c.forged for c in train),
                  "authentic": sum(not c.forged for c in train) + sum(c.paired for c in train),
                  "pairs": sum(c.paired for c in train)},
        "test": {"images": len(test), "forged": sum(c.forged for c in test),
                 "authentic": sum(not c.forged for c in test)},
        "operations": sum(len(c.ops) for c in plan),
        "science_images": list(available_science_images()),
        "cases": [c.to_dict() for c in plan],
    }
    with open(os.path.join(output_dir, META_FILE), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    s = generate(f.output_dir, f.num_train, f.num_test, f.seed, f.min_size, f.max_size, style=f.style)
    print(f"wrote {f.output_dir}: train {s['train']}  test {s['test']}  copy-moves {s['operations']}")


def _define_flags() -> None:
    """Flags are defined only when run as a script, so importing this module never clashes with
    another entry point's flags of the same name (e.g. --output_dir)."""
    from absl import flags

    flags.DEFINE_string("output_dir", None, "Where to write the dataset.", required=True)
    flags.DEFINE_integer("num_train", 200, "Training images (about half forged).")
    flags.DEFINE_integer("num_test", 50, "Test images (about half forged), scored by test_solution.csv.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives identical files.")
    flags.DEFINE_integer("min_size", 100, "Smallest image side in pixels.")
    flags.DEFINE_integer("max_size", 1500, "Largest image side in pixels.")
    flags.DEFINE_enum("style", "mixed", list(STYLES), "photos: single images; figures: compound scientific "
                      "figures (panels, labels, scale bars, blots, charts); mixed: half of each.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
