"""Per-image measurements for the dataset report: header facts, error-level analysis, instance
shapes and a template-matching peek at each instance's copy. Pure functions of arrays and bytes."""
from __future__ import annotations

import io
import re
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from preprocessing.images import image_header
from preprocessing.report import figures as figs

ELA_QUALITY, ELA_SCALE = 95, 10  # the first seed's error-level analysis
PEEK_MAX_SIDE = 384  # template matching runs on a downscaled copy (the seed used scale 0.5)


UNKNOWN_MODE = "unknown to Pillow"  # the colour mode of the few images only OpenCV reads


def header_info(data: bytes, path: str) -> dict:
    """Width, height, colour mode and bits per sample from the file header (no pixel decoding)."""
    height, width, fmt = image_header(data, path)  # the one header check: its reasons name the file
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, rawmode = im.mode, im.tile[0][3] if im.tile else ""
    except Exception:  # a TIFF Pillow cannot open (float32 RGB), sized from its directory: depth unknown
        return {"width": width, "height": height, "mode": UNKNOWN_MODE, "format": fmt, "bits": 0}
    return {"width": width, "height": height, "mode": mode, "format": fmt, "bits": bits_per_sample(mode, rawmode)}


def bits_per_sample(mode: str, rawmode) -> int:
    """PIL reports 16-bit RGB PNG/TIFF as mode RGB; the raw mode ("RGB;16B") keeps the true depth."""
    raw = rawmode[0] if isinstance(rawmode, tuple) and rawmode else rawmode
    found = re.search(r";(\d+)", raw if isinstance(raw, str) else "") or re.search(r";(\d+)", mode)
    if found:
        return int(found.group(1))
    return {"1": 1, "I": 32, "F": 32}.get(mode, 8)



def error_level(rgb: np.ndarray, quality: int = ELA_QUALITY, scale: float = ELA_SCALE) -> np.ndarray:
    """Error-level analysis as the first seed computes it: |image - JPEG(q)| averaged over channels, x scale."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    recompressed = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.abs(bgr.astype(np.float32) - recompressed.astype(np.float32)).mean(axis=2) * scale


def instance_metrics(mask: np.ndarray) -> dict:
    """Area, bounding box, aspect (w/h) and compactness (perimeter^2 / area) of one instance."""
    ys, xs = np.nonzero(mask)
    x1, x2, y1, y2 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    w, h = x2 - x1 + 1, y2 - y1 + 1
    area = int(len(xs))
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    perimeter = float(sum(cv2.arcLength(c, True) for c in contours))
    return {"area_px": area, "area_fraction": area / mask.size, "bbox_x": x1, "bbox_y": y1,
            "bbox_w": w, "bbox_h": h, "bbox_fraction": w * h / mask.size, "aspect": w / h,
            "compactness": perimeter ** 2 / area}


def bbox(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


def template_peek(rgb: np.ndarray, instances, max_side: int = PEEK_MAX_SIDE) -> tuple[np.ndarray, list[dict]]:
    """Search each instance's bounding-box patch elsewhere in the image (cv2.matchTemplate).

    Windows overlapping the patch's own box by more than half its width and
    height are masked out, so the best hit is the copy, not the patch itself.
    ``on_other_instance`` says whether that hit lands on another instance's box
    (IoU >= 0.5): the copy-move signature the annotation predicts.
    """
    small, insts, _ = figs.thumbnail(rgb, instances, max_side)
    boxes = [bbox(m) for m in insts]
    H, W = small.shape[:2]
    hits = []
    for k, box in enumerate(boxes):
        if box is None:
            continue
        x, y, w, h = box
        if w < 4 or h < 4 or w >= W or h >= H:
            continue  # too small to match, or no room for a copy of that size
        res = cv2.matchTemplate(small, small[y:y + h, x:x + w], cv2.TM_CCOEFF_NORMED)
        res = np.nan_to_num(res, nan=-1.0, posinf=-1.0, neginf=-1.0)  # flat patches give NaN
        res[max(0, y - h // 2):y + h // 2 + 1, max(0, x - w // 2):x + w // 2 + 1] = -np.inf
        if not np.isfinite(res).any():
            continue
        hy, hx = np.unravel_index(int(np.argmax(res)), res.shape)
        hit = (int(hx), int(hy), w, h)
        others = [b for j, b in enumerate(boxes) if j != k and b is not None]
        hits.append({"instance": k, "source": box, "hit": hit, "score": float(res[hy, hx]),
                     "on_other_instance": any(box_iou(hit, b) >= 0.5 for b in others)})
    return small, hits


def sample_pixels(rng: np.random.Generator, values: np.ndarray, where: np.ndarray, n: int) -> np.ndarray:
    picked = values[where]
    if len(picked) > n:
        picked = rng.choice(picked, n, replace=False)
    return picked.astype(np.float32)
