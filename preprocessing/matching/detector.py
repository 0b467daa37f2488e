"""The matcher's entry points: ``detect`` (expensive), ``decide`` (cheap), ``instances_of``.

    det = detect(rgb, MatcherConfig())      # panels, decorations, keypoint + dense candidates, verified
    pairs = decide(det, DecisionParams())   # the candidates that pass the decision parameters
    masks = instances_of(pairs, det.shape)  # source and copy of every pair, original resolution

``detect`` never raises on a valid image (uint8, (H, W) or (H, W, 3)): blank, flat or tiny
images give a Detection without candidates. Memory is bounded by the working resolution
(``WORK_MAX_SIDE``): see benchmarks/matcher_dev.py for the measured peak.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional, Sequence

import cv2
import numpy as np

from preprocessing.matching import params as P
from preprocessing.matching.decorations import DRAWING_KINDS
from preprocessing.matching.dense import dense_hypotheses
from preprocessing.matching.hypotheses import keypoint_hypotheses
from preprocessing.matching.keypoints import g2nn_matches, sift_features
from preprocessing.matching.layout import layout, to_original
from preprocessing.matching.panels import panel_index_map
from preprocessing.matching.params import DecisionParams, MatcherConfig
from preprocessing.matching.results import CopyPair, Detection, Panel, Transform, region_from_mask
from preprocessing.matching.verify import Verified, bandpass, verify
from preprocessing.matching.work import WorkImage, as_rgb8, to_work

# Flat images (no detail anywhere) hold no evidence; this grey-level spread means flat.
FLAT_MAX_STD = 1.0
# strength = correlation x textured share x area term: saturates once the region covers
# STRENGTH_AREA of the image, so a large, perfectly agreeing copy approaches 1.
STRENGTH_AREA = 0.01


def strength(correlation: float, textured: float, area: float) -> float:
    """Image-level evidence of one pair in [0, 1): how well and how much of it agrees."""
    return float(max(0.0, correlation) * textured * (1.0 - np.exp(-area / STRENGTH_AREA)))


def _scaled_matrix(m: np.ndarray, work: WorkImage) -> np.ndarray:
    """A working-pixel map in original pixels (pixel centres: x_work = (x + 0.5) r - 0.5)."""
    (h, w), (H, W) = work.work_shape, work.shape
    rx, ry = w / W, h / H
    to_work_ = np.array([[rx, 0, 0.5 * rx - 0.5], [0, ry, 0.5 * ry - 0.5], [0, 0, 1.0]])
    from_work = np.linalg.inv(to_work_)
    return (from_work @ np.vstack([m, [0, 0, 1.0]]) @ to_work_)[:2]


def _majority_panel(pmap: np.ndarray, mask: np.ndarray) -> int:
    labels = pmap[mask > 0].astype(np.int64) + 1
    return int(np.argmax(np.bincount(labels))) - 1 if len(labels) else -1


def _pair(v: Verified, m: np.ndarray, inliers: int, dense: bool, work: WorkImage, pmap: np.ndarray) -> Optional[CopyPair]:
    src, cpy = region_from_mask(v.source, work.shape), region_from_mask(v.copy, work.shape)
    if src is None or cpy is None:
        return None
    ps, pc = _majority_panel(pmap, v.source), _majority_panel(pmap, v.copy)
    area = min(src.area_fraction, cpy.area_fraction)
    return CopyPair(source=src, copy=cpy, transform=Transform.from_matrix(_scaled_matrix(m, work)),
                    inliers=int(inliers), correlation=v.correlation, dense=dense,
                    within_panel=bool(ps == pc and ps >= 0), strength=strength(v.correlation, v.textured, area))


def _same(a: CopyPair, b: CopyPair) -> bool:
    t = P.DUPLICATE_IOU
    return ((a.source.iou(b.source) >= t and a.copy.iou(b.copy) >= t)
            or (a.source.iou(b.copy) >= t and a.copy.iou(b.source) >= t))


def merge_duplicates(pairs: Sequence[CopyPair]) -> list[CopyPair]:
    """One pair per copy: the strongest, carrying the evidence of every duplicate (the most
    keypoint inliers any had, and whether the dense search found it)."""
    kept: list[CopyPair] = []
    for p in sorted(pairs, key=lambda p: -p.strength):
        for k, q in enumerate(kept):
            if _same(p, q):
                kept[k] = replace(q, inliers=max(p.inliers, q.inliers), dense=p.dense or q.dense)
                break
        else:
            kept.append(p)
    return kept


def _excluded(work: WorkImage, panels, deco: np.ndarray, cfg: MatcherConfig) -> np.ndarray:
    """Pixels that are never evidence: decorations, drawing panels, and the page around the
    panels with a margin (its step into each panel repeats from panel to panel)."""
    out = deco.copy() if cfg.decorations else np.zeros(work.work_shape, np.uint8)
    page = np.ones(work.work_shape, np.uint8)
    for (x, y, w, h), kind in panels:
        page[y:y + h, x:x + w] = 0
        if cfg.skip_charts and kind in DRAWING_KINDS:
            out[y:y + h, x:x + w] = 1
    if page.any():
        k = 2 * P.PAGE_MARGIN_PX + 1
        out |= cv2.dilate(page, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return out


def detect(image: np.ndarray, config: MatcherConfig = MatcherConfig()) -> Detection:
    """Verified candidate copy pairs of one RGB uint8 image, with panels and decorations."""
    rgb = as_rgb8(image)
    shape = tuple(rgb.shape[:2])
    t0 = time.perf_counter()
    work = to_work(rgb, config.work_max_side, config.work_min_side)
    if work is None:
        return Detection(shape=shape, work_shape=shape, stats={"empty": "too_small"})
    det = Detection(shape=shape, work_shape=work.work_shape)
    stats = det.stats
    panels, deco = layout(work)
    det.panels = [Panel(box, kind) for box, kind in to_original(panels, work.work_shape, shape)]
    det.packed_decorations = np.packbits(deco.reshape(-1))
    stats["t_layout"] = time.perf_counter() - t0
    if float(work.gray.std()) <= FLAT_MAX_STD:
        stats["empty"] = "flat"
        return det
    excluded = _excluded(work, panels, deco, config)
    band = bandpass(work.gray)

    min_shift = P.MIN_SHIFT_PX * min(1.0, work.scale)
    t1 = time.perf_counter()
    feats = sift_features(work.gray, (1 - excluded) * 255, config.sift_contrast, config.sift_max_features,
                          work.sift_zoom)
    matches = g2nn_matches(feats, config.g2nn_ratio)
    hyps = keypoint_hypotheses(feats, matches, config.ransac_px, config.max_scale, limit=config.max_hypotheses)
    stats.update(keypoints=len(feats), matches=len(matches), kp_hypotheses=len(hyps),
                 matches_on_decorations=_on_mask(feats.xy, matches, deco))
    stats["t_keypoints"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    if config.dense:
        dense = dense_hypotheses(band, excluded, min_shift)[:config.max_hypotheses]
        stats["dense_hypotheses"] = len(dense)
        hyps = hyps + dense
    stats["t_dense"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    pmap = panel_index_map(work.work_shape, panels)
    pairs = []
    for h in hyps:
        v = verify(band, excluded, h.matrix, h.src, config.agree_zncc, min_shift)
        if v is not None:
            dense = h.method == "dense"
            p = _pair(v, h.matrix, 0 if dense else h.support, dense, work, pmap)
            if p is not None:
                pairs.append(p)
    det.candidates = merge_duplicates(pairs)
    stats["t_verify"] = time.perf_counter() - t3
    stats["t_total"] = time.perf_counter() - t0
    return det


def _on_mask(xy: np.ndarray, matches, mask: np.ndarray) -> int:
    """Matches with either keypoint on the mask (for the decoration report)."""
    if len(matches) == 0:
        return 0
    h, w = mask.shape
    px = np.clip(np.round(xy).astype(int), 0, [w - 1, h - 1])
    on = mask[px[:, 1], px[:, 0]] > 0
    return int(np.count_nonzero(on[matches.i] | on[matches.j]))


def passes(p: CopyPair, params: DecisionParams) -> bool:
    """Whether one candidate passes the decision parameters."""
    if not (p.inliers >= params.min_inliers or (p.dense and params.use_dense)):
        return False
    return (p.correlation >= params.min_correlation and p.area >= params.min_area
            and p.strength >= params.min_strength)


def decide(det: Detection, params: DecisionParams = DecisionParams()) -> list[CopyPair]:
    """The candidates that pass ``params`` (pure and cheap: no image work)."""
    return [p for p in det.candidates if passes(p, params)]


def instances_of(pairs: Sequence[CopyPair], shape: tuple[int, int]) -> list[np.ndarray]:
    """(H, W) uint8 0/1 masks at the original resolution: each pair's source, then its copy."""
    out = []
    for p in pairs:
        for region in (p.source, p.copy):
            if tuple(region.shape) != tuple(shape):
                region = replace(region, shape=tuple(shape))
            out.append(region.mask())
    return out
