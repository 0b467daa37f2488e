"""What the matcher returns: regions, copy pairs and the per-image detection.

Masks are kept compactly (a crop at the working resolution) and brought to the original
resolution only when asked (``Region.mask``), so thousands of cached detections fit in memory
for calibration. Boxes are (x, y, w, h) in original pixels; transforms map source pixel
coordinates (x, y) to copy coordinates, also in original pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class Region:
    """A region of the image: ``crop`` (uint8 0/1) covers ``work_box`` of the working image."""

    work_box: Box
    crop: np.ndarray = field(repr=False)
    work_shape: tuple[int, int]  # (h, w) of the working image
    shape: tuple[int, int]  # (H, W) of the original image

    @property
    def ratio(self) -> tuple[float, float]:
        """Original pixels per working pixel, (x, y)."""
        return self.shape[1] / self.work_shape[1], self.shape[0] / self.work_shape[0]

    @property
    def box(self) -> Box:
        """Tight (x, y, w, h) box in original pixels."""
        x, y, w, h = self.work_box
        rx, ry = self.ratio
        x0, y0 = int(np.floor(x * rx)), int(np.floor(y * ry))
        x1 = min(self.shape[1], int(np.ceil((x + w) * rx)))
        y1 = min(self.shape[0], int(np.ceil((y + h) * ry)))
        return x0, y0, max(1, x1 - x0), max(1, y1 - y0)

    @property
    def work_area(self) -> int:
        return int(self.crop.sum())

    @property
    def area_fraction(self) -> float:
        return self.work_area / float(self.work_shape[0] * self.work_shape[1])

    def mask(self) -> np.ndarray:
        """(H, W) uint8 0/1 at the original resolution (each original pixel samples the crop
        at its centre, bilinear, kept where >= 0.5)."""
        out = np.zeros(self.shape, np.uint8)
        bx, by, bw, bh = self.box
        x, y, _, _ = self.work_box
        rx, ry = self.ratio
        # original crop pixel (u, v) -> working crop coordinate ((bx + u + 0.5) / rx - 0.5 - x, ...)
        m = np.array([[1 / rx, 0, (bx + 0.5) / rx - 0.5 - x], [0, 1 / ry, (by + 0.5) / ry - 0.5 - y]], np.float64)
        soft = cv2.warpAffine(self.crop.astype(np.float32), m, (bw, bh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[by:by + bh, bx:bx + bw] = soft >= 0.5
        return out

    def overlap(self, other: Region) -> int:
        """Working-resolution pixels the two regions share (same image)."""
        ax, ay, aw, ah = self.work_box
        bx, by, bw, bh = other.work_box
        x0, y0, x1, y1 = max(ax, bx), max(ay, by), min(ax + aw, bx + bw), min(ay + ah, by + bh)
        if x1 <= x0 or y1 <= y0:
            return 0
        a = self.crop[y0 - ay:y1 - ay, x0 - ax:x1 - ax]
        b = other.crop[y0 - by:y1 - by, x0 - bx:x1 - bx]
        return int(np.count_nonzero(a & b))

    def iou(self, other: Region) -> float:
        """Intersection over union at the working resolution (same image)."""
        inter = self.overlap(other)
        union = self.work_area + other.work_area - inter
        return inter / union if union else 0.0

    def inside(self, other: Region) -> float:
        """The share of this region that ``other`` covers (1: wholly inside it)."""
        return self.overlap(other) / self.work_area if self.work_area else 0.0


def region_from_mask(mask: np.ndarray, shape: tuple[int, int]) -> Optional[Region]:
    """The compact ``Region`` of a full working-resolution 0/1 mask; None when it is empty."""
    pts = cv2.findNonZero(mask)
    if pts is None:
        return None
    x, y, w, h = cv2.boundingRect(pts)
    crop = np.ascontiguousarray(mask[y:y + h, x:x + w], dtype=np.uint8)
    return Region((x, y, w, h), crop, tuple(mask.shape[:2]), tuple(shape))


@dataclass(frozen=True)
class Transform:
    """Source -> copy in original pixels: mirror left-right (if ``flip``) about x = 0, then rotate
    by ``angle`` degrees counter-clockwise as seen on screen, scale by ``scale``, then shift.
    ``matrix`` is the same map as a 2x3 affine (x_copy, y_copy) = M @ (x, y, 1)."""

    matrix: tuple[tuple[float, float, float], tuple[float, float, float]]
    flip: bool
    angle: float
    scale: float

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> Transform:
        m = np.asarray(m, np.float64).reshape(2, 3)
        a = m[:, :2]
        flip = bool(np.linalg.det(a) < 0)
        r = a @ np.diag([-1.0, 1.0]) if flip else a  # undo the mirror: r = s * rotation
        scale = float(np.sqrt(abs(np.linalg.det(r))))
        # OpenCV's rotation for a counter-clockwise (on screen) angle t is [[c, s], [-s, c]].
        angle = float(np.degrees(np.arctan2(r[0, 1], r[0, 0])))
        return cls(tuple(tuple(float(v) for v in row) for row in m), flip, angle, scale)

    def apply(self, xy) -> np.ndarray:
        p = np.asarray(xy, np.float64).reshape(-1, 2)
        m = np.asarray(self.matrix)
        return p @ m[:, :2].T + m[:, 2]


@dataclass(frozen=True)
class CopyPair:
    """One copy-move: ``copy`` is ``source`` under ``transform``, with the evidence for it."""

    source: Region
    copy: Region
    transform: Transform
    inliers: int  # distinct keypoint inliers of the transform (0 when keypoints did not find it)
    correlation: float  # mean local correlation of the region with its transformed partner
    dense: bool  # found by the dense (FFT shift / mirror) search
    exact_blocks: int  # blocks that recur pixel for pixel (0 unless the copy is exact)
    within_panel: bool  # source and copy lie in the same panel
    strength: float  # image-level evidence in [0, 1): see detector.strength
    lane: float = 0.0  # lane-residual correlation when found lane by lane (lanes.py), else 0
    laned: bool = False  # both regions lie in blot or gel panels with regular lanes (like lanes and bands)

    @property
    def method(self) -> str:
        """The searches that found it, joined by "+": "keypoints", "dense" (FFT shift / mirror
        search), "exact" (block hashing), "lanes" (lane by lane)."""
        found = [name for name, hit in (("keypoints", self.inliers > 0), ("dense", self.dense),
                                        ("exact", self.exact_blocks > 0), ("lanes", self.lane > 0)) if hit]
        return "+".join(found) or "dense"

    @property
    def area(self) -> float:
        """The smaller of the two regions, as a fraction of the image area."""
        return min(self.source.area_fraction, self.copy.area_fraction)

    @property
    def shift(self) -> tuple[float, float]:
        """Copy centre minus source centre, original pixels (dx, dy)."""
        (sx, sy), (cx, cy) = _centre(self.source.box), _centre(self.copy.box)
        return cx - sx, cy - sy

    def to_dict(self) -> dict:
        t = self.transform
        dx, dy = self.shift
        return {
            "source_box": list(self.source.box), "copy_box": list(self.copy.box),
            "transform": {"dx": round(dx, 1), "dy": round(dy, 1), "angle": round(t.angle, 1),
                          "scale": round(t.scale, 3), "flip": t.flip,
                          "matrix": [[round(v, 4) for v in row] for row in t.matrix]},
            "inliers": int(self.inliers), "exact_blocks": int(self.exact_blocks),
            "correlation": round(float(self.correlation), 3),
            "area": round(float(self.area), 5), "method": self.method,
            "within_panel": bool(self.within_panel), "strength": round(float(self.strength), 4),
            "lane": round(float(self.lane), 3),
        }


def _centre(box: Box) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2.0, y + h / 2.0


@dataclass(frozen=True)
class Panel:
    box: Box  # original pixels
    kind: str  # "photo", "blot", "chart", "text"

    def __iter__(self):  # unpacks as (box, kind)
        return iter((self.box, self.kind))


@dataclass
class Detection:
    """Everything ``detect`` found in one image; ``decide`` turns it into a verdict."""

    shape: tuple[int, int]  # (H, W) original
    work_shape: tuple[int, int]
    candidates: list = field(default_factory=list)  # CopyPair, strongest first
    panels: list = field(default_factory=list)  # Panel
    packed_decorations: Optional[np.ndarray] = field(default=None, repr=False)  # bit-packed working mask
    # the dense field's evidence on its grid (densefield.field_planes), None unless the config asked for it
    field_planes: Optional[np.ndarray] = field(default=None, repr=False)
    stats: dict = field(default_factory=dict)  # counts and timings for benchmarks

    @property
    def score(self) -> float:
        """Image-level evidence: the strongest candidate's strength (0 when there is none)."""
        return max((c.strength for c in self.candidates), default=0.0)

    def work_decorations(self) -> np.ndarray:
        h, w = self.work_shape
        if self.packed_decorations is None:
            return np.zeros((h, w), np.uint8)
        return np.unpackbits(self.packed_decorations, count=h * w).reshape(h, w)

    @property
    def decorations(self) -> np.ndarray:
        """(H, W) uint8 0/1 mask of labels, scale bars, arrows and other drawn marks."""
        small = self.work_decorations()
        if small.shape == tuple(self.shape):
            return small
        return cv2.resize(small, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_NEAREST)
