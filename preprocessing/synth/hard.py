"""The ``hard`` style: the cases issue 22 names, each recorded so a benchmark can break results down.

Forged cases carry one copy-move chosen by *placement* and *transform*, then one
*post-processing*; authentic cases are look-alikes (``lookalikes``: channel panels with their
Merge, coloured labels, cell fields, insets, lattices), so tuning and benchmarks see the
legitimate repeats too. Every op record in synth_meta.json holds ``placement`` (textured,
smooth, small, lane) and ``transform`` (translate, flip, rot90, rotation, rescale, gain); every
case's ``post`` holds ``kind`` (none, jpeg, noise, blur) and its parameters.

``sources="unseen"`` draws photographs from scikit-image images the other styles never use
(coins, bricks, household photos: image kinds the tuning never saw) and lays out no figure text,
for a held-out set of unfamiliar sources.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from preprocessing.synth import base, copymove, lookalikes
from preprocessing.synth.figure_blots import lane_boxes

PLACEMENTS = ("textured", "smooth", "small", "lane")
TRANSFORMS = ("translate", "flip", "rot90", "rotation", "rescale")
POSTS = ("none", "jpeg", "noise", "blur")
BLUR_SIGMA = (0.6, 1.2)  # a figure resampled or blurred once: edges spread over 1-2 px
SOURCES = ("seen", "unseen")
# scikit-image samples no other style crops from (offline, textured enough to crop).
UNSEEN_IMAGES = ("coins", "brick", "coffee", "chelsea", "rocket", "astronaut", "camera", "text")
AUTHENTIC_LOOKALIKE_PROB = 0.8  # the other authentic cases are plain crops of the same sources
REGION_FRAC = {"textured": (0.01, 0.05), "smooth": (0.01, 0.05), "small": (0.002, 0.005)}
SMOOTH_MAX_STD = 12.0  # a smooth source region: grey-level spread below this ...
SMOOTH_MIN_STD = 2.0  # ... but some detail (a flat one holds no evidence anywhere)
PLACE_TRIES = 60
PHOTO_ATTEMPTS = 8  # photographs drawn for a placement; the last attempt falls back to "textured"
LANES = (8, 12.0, 30.0)  # lane geometry of the blots lane copies are made in (as figure_blots)
LANE_STRIP = (120, 360)


def draw_transform(rng: np.random.Generator, name: str) -> dict:
    """CopyMove keyword arguments for one named transform (the issue's ranges)."""
    if name == "flip":
        return {"flip": "h" if rng.random() < 0.5 else "v"}
    if name == "rot90":
        return {"rot90": int(rng.choice([1, 2, 3]))}
    if name == "rotation":
        return {"angle": float(np.round(rng.choice([-1, 1]) * rng.uniform(5, 30), 1))}
    if name == "rescale":
        return {"scale": float(np.round(rng.choice([rng.uniform(0.8, 0.95), rng.uniform(1.05, 1.25)]), 2))}
    return {}


def draw_post(rng: np.random.Generator) -> dict:
    """One post-processing, recorded by ``kind`` (dataset.post_process applies it)."""
    kind = POSTS[int(rng.integers(len(POSTS)))]
    if kind == "jpeg":
        return {"kind": kind, "jpeg_quality": int(rng.integers(70, 91))}
    if kind == "noise":
        return {"kind": kind, "noise_sigma": float(np.round(rng.uniform(2.0, 5.0), 2)),
                "noise_seed": int(rng.integers(2**31))}
    if kind == "blur":
        return {"kind": kind, "blur_sigma": float(np.round(rng.uniform(*BLUR_SIGMA), 2))}
    return {"kind": kind}


def _place(rng: np.random.Generator, image: np.ndarray, placement: str, transform: dict
           ) -> Optional[copymove.CopyMove]:
    """A rectangle or ellipse copy-move whose source fits ``placement``; None if none fits."""
    H, W = image.shape[:2]
    lo, hi = REGION_FRAC[placement]
    for _ in range(PLACE_TRIES):
        area = rng.uniform(lo, hi) * H * W
        aspect = np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
        h, w = int(max(6, round(np.sqrt(area * aspect)))), int(max(6, round(np.sqrt(area / aspect))))
        if h >= H // 2 or w >= W // 2:
            continue
        y, x = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
        std = float(image[y:y + h, x:x + w].std())
        if placement == "smooth":
            if not SMOOTH_MIN_STD <= std <= SMOOTH_MAX_STD:
                continue
        elif std < base.MIN_REGION_STD:
            continue
        shape = "ellipse" if rng.random() < 0.3 else "rectangle"
        op = copymove.CopyMove(shape=shape, src_box=(y, x, h, w), **transform)
        _, mask = copymove.transform_patch(image[y:y + h, x:x + w], copymove.region_mask(shape, h, w), op)
        th, tw = mask.shape
        if th == 0 or th >= H or tw >= W:
            continue
        for _ in range(10):
            dst = (int(rng.integers(H - th + 1)), int(rng.integers(W - tw + 1)), th, tw)
            if copymove._disjoint(dst, [op.src_box], 2):
                return replace(op, dst_box=dst)
    return None


def _lane_case(rng: np.random.Generator, transform: dict) -> tuple[np.ndarray, copymove.CopyMove]:
    """A blot with lane ``a`` (most of its height, or a band group) pasted over lane ``b``."""
    h, w = LANE_STRIP
    blot = base.western_blot(rng, h, w, rgb=False, lanes=LANES)
    boxes = lane_boxes((0, 0, h, w), LANES)
    a, b = (boxes[int(k)] for k in rng.choice(len(boxes), 2, replace=False))
    rows = int(rng.integers(40, 101))
    top = int(rng.integers(0, h - rows + 1))
    op = copymove.CopyMove("rectangle", (top, a[1], rows, a[3]), **transform)
    _, mask = copymove.transform_patch(blot[top:top + rows, a[1]:a[1] + a[3]], np.ones((rows, a[3]), np.uint8), op)
    th, tw = mask.shape
    y = int(np.clip(top + rng.integers(-3, 4), 0, h - th))
    x = int(np.clip(b[1] + (b[3] - tw) // 2, 0, w - tw))
    return blot, copymove.CopyMove("rectangle", (top, a[1], rows, a[3]), (y, x, th, tw), **transform)


def _photo(rng: np.random.Generator, sources: str, min_size: int, max_size: int) -> tuple[np.ndarray, str]:
    """(crop, "photo:<sample name>")."""
    h, w = base._image_size(rng, min_size, max_size)
    names = UNSEEN_IMAGES if sources == "unseen" else None
    image, name = base.photo_crop(rng, h, w, gray=bool(rng.random() < 0.3), names=names)
    return image, f"photo:{name}"


def hard_case(rng: np.random.Generator, forged: bool, min_size: int, max_size: int, sources: str = "seen"):
    """(base image, image, instances or None, op records, kind) for one case of the hard style."""
    if not forged:
        if rng.random() < AUTHENTIC_LOOKALIKE_PROB:
            kind = lookalikes.LOOKALIKES[int(rng.integers(len(lookalikes.LOOKALIKES)))]
            image, record = lookalikes.lookalike(rng, kind)
            return image, image, None, [], f"lookalike:{record['lookalike']}"
        image, kind = _photo(rng, sources, min_size, max_size)
        return image, image, None, [], kind
    placement = PLACEMENTS[int(rng.integers(len(PLACEMENTS)))]
    name = ("translate", "flip", "rescale")[int(rng.integers(3))] if placement == "lane" else \
        TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
    transform = draw_transform(rng, name)
    if placement == "lane":
        image, op = _lane_case(rng, transform)
        kind = "blot"
    else:
        op = None
        for attempt in range(PHOTO_ATTEMPTS):
            image, kind = _photo(rng, sources, min_size, max_size)
            op = _place(rng, image, placement if attempt < PHOTO_ATTEMPTS - 1 else "textured", transform)
            if op is not None:
                placement = placement if attempt < PHOTO_ATTEMPTS - 1 else "textured"
                break
        if op is None:
            raise RuntimeError(f"no {placement} copy-move fits {PHOTO_ATTEMPTS} photographs")
    out, src, dst = copymove.apply_copy_move(image, op)
    record = {**op.to_dict(), "placement": placement, "transform": name}
    return image, out, [src, dst], [record], kind
