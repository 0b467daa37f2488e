"""Copy-move operations: a region (rectangle, ellipse, polygon) copied, transformed and pasted
elsewhere in the same image, with its source and copy as separate instance masks."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import cv2
import numpy as np

from preprocessing.synth.base import MIN_REGION_STD

SHAPES = ("rectangle", "ellipse", "polygon")


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
    def from_dict(cls, d: dict) -> CopyMove:
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
