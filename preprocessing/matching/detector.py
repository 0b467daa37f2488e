"""The expensive half of the matcher: ``detect`` computes every verified candidate copy pair.

    det = detect(rgb, MatcherConfig())      # panels, decorations, candidates with their evidence
    pairs = decide(det, DecisionParams())   # (decision.py) the candidates that pass
    masks = instances_of(pairs, det.shape)  # (decision.py) source and copy masks, original size

Up to six searches propose transforms: keypoints (any similarity, mirrored too; optionally
denser in small or flat panels), the dense FFT search (plain and mirrored shifts, for low-texture
images), the dense field (``densefield``: rotation-invariant disk features matched over a grid),
blocks matched at the noise floor (``noiseblocks``: plain shifts in noisy images), lanes (blot
and gel panels lane by lane, ``lanes``) and exact block hashing (copies pasted without
resampling, down to a few hundred pixels). Keypoint, FFT, dense-field, block and lane proposals
are verified by local correlation (``verify``; lane pairs inside their two lanes; block pairs
must also stay within the noise floor); exact ones carry their own proof. ``detect`` never
raises on a valid image (uint8, (H, W) or (H, W, 3)): blank, flat or tiny images give a
Detection without candidates. Memory is bounded by the working resolution (``WORK_MAX_SIDE``)
and the exact search's size limit (``EXACT_MAX_PIXELS``).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Optional

import cv2
import numpy as np
from scipy.spatial import cKDTree

from preprocessing.matching import params as P
from preprocessing.matching.dense import dense_hypotheses
from preprocessing.matching.densefield import dense_field, field_hypotheses, field_planes
from preprocessing.matching.exact import exact_candidates, exact_region
from preprocessing.matching.hypotheses import Hypothesis, distinct, keypoint_hypotheses, mirrors
from preprocessing.matching.keypoints import (
    Features,
    Neighbours,
    concat,
    contrast_scale,
    descriptor_neighbours,
    features_by_region,
    g2nn_matches,
    guided_pairs,
    laned_mask,
    needs_dense_keypoints,
    panel_features,
)
from preprocessing.matching.lanes import lane_matches, regular_lanes
from preprocessing.matching.layout import layout, page_pixels, to_original
from preprocessing.matching.noiseblocks import MAX_FLOOR_RATIO, block_hypotheses, floor_ratio, noise_sigma
from preprocessing.matching.panels import DRAWING_KINDS, panel_index_map
from preprocessing.matching.params import MatcherConfig
from preprocessing.matching.repeats import legitimate_repeat
from preprocessing.matching.results import CopyPair, Detection, Panel, Transform, region_from_mask
from preprocessing.matching.verify import Verified, bandpass, verify
from preprocessing.matching.work import WorkImage, as_rgb8, to_work

RNG_SEED = 20240601
# Flat images (no detail anywhere) hold no evidence; this grey-level spread means flat.
FLAT_MAX_STD = 1.0
# strength = correlation x textured share x area term: saturates once the region covers
# STRENGTH_AREA of the image, so a large, perfectly agreeing copy approaches 1.
STRENGTH_AREA = 0.01


def strength(correlation: float, textured: float, area: float) -> float:
    """Image-level evidence of one pair in [0, 1): how well and how much of it agrees."""
    return float(max(0.0, correlation) * textured * (1.0 - np.exp(-area / STRENGTH_AREA)))


def scaled_matrix(m: np.ndarray, src_shape: tuple[int, int], dst_shape: tuple[int, int]) -> np.ndarray:
    """A map in the pixels of an image of ``src_shape`` expressed in the pixels of the same
    image at ``dst_shape`` (pixel centres: x_dst = (x_src + 0.5) r - 0.5)."""
    (h0, w0), (h1, w1) = src_shape, dst_shape
    rx, ry = w1 / w0, h1 / h0
    to_dst = np.array([[rx, 0, 0.5 * rx - 0.5], [0, ry, 0.5 * ry - 0.5], [0, 0, 1.0]])
    return (to_dst @ np.vstack([np.asarray(m, np.float64), [0, 0, 1.0]]) @ np.linalg.inv(to_dst))[:2]


def _majority_panel(pmap: np.ndarray, mask: np.ndarray) -> tuple[int, float]:
    """(the panel holding most of ``mask``, -1 for none or outside every panel; its share of ``mask``)."""
    labels = pmap[mask > 0].astype(np.int64) + 1
    if not len(labels):
        return -1, 0.0
    counts = np.bincount(labels)
    best = int(np.argmax(counts))
    return best - 1, counts[best] / len(labels)


def panel_parts(pmap: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """``mask``'s pixels in each panel holding at least ``PANEL_PART_SHARE`` of it (uint8 masks)."""
    labels = pmap[mask > 0]
    if not len(labels):
        return []
    panels, counts = np.unique(labels[labels >= 0], return_counts=True)
    keep = panels[counts >= P.PANEL_PART_SHARE * len(labels)]
    return [((mask > 0) & (pmap == k)).astype(np.uint8) for k in keep]


def _panel_box(pmap: np.ndarray, panel: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of panel ``panel`` in the panel index map."""
    return tuple(int(v) for v in cv2.boundingRect((pmap == panel).astype(np.uint8)))


def _in_one_panel(pmap: np.ndarray, mask: np.ndarray, share: float) -> bool:
    """Whether at least ``share`` of ``mask`` lies in one panel."""
    panel, held = _majority_panel(pmap, mask)
    return panel >= 0 and held >= share


def coarse_applies(h: Hypothesis) -> bool:
    """Whether a hypothesis the fine band did not verify is tried in the coarse band: keypoint
    and noise-floor block maps that do not mirror (a band's or a lane's halves mirror each other
    at that scale)."""
    return h.method in ("keypoints", "blocks") and not mirrors(h.matrix)


def verify_coarse(coarse: np.ndarray, excluded: np.ndarray, h: Hypothesis, pmap: np.ndarray, agree_zncc: float,
                  min_shift: float) -> Optional[Verified]:
    """A hypothesis (``coarse_applies``) verified in the coarse band (``COARSE_BAND_SIGMAS``),
    kept only when each region stays in one panel."""
    v = verify(coarse, excluded, h.matrix, h.src, agree_zncc, min_shift)
    if v is None or not all(_in_one_panel(pmap, m, P.COARSE_IN_PANEL) for m in (v.source, v.copy)):
        return None
    return v


def touching(source: np.ndarray, copy: np.ndarray) -> bool:
    """Whether source and copy share a boundary longer than ``MAX_CONTACT`` of their side: one
    object symmetric in itself (a lane, a band, a round cell: its halves mirror each other) or
    a texture continuing into itself, not a region pasted elsewhere."""
    contact = int(np.count_nonzero(cv2.dilate(source, np.ones((3, 3), np.uint8)) & copy))
    side = np.sqrt(max(1, min(int(source.sum()), int(copy.sum()))))
    return contact > P.MAX_CONTACT * side


def make_pair(source: np.ndarray, copy: np.ndarray, m: np.ndarray, work: WorkImage, pmap: np.ndarray,
              correlation: float, textured: float, inliers: int = 0, dense: bool = False,
              exact_blocks: int = 0, lane: float = 0.0, band: Optional[np.ndarray] = None,
              excluded: Optional[np.ndarray] = None) -> Optional[CopyPair]:
    """A CopyPair from working-resolution masks and a working-pixel map (None when source and
    copy touch, see ``touching``, or, given the band-passed image, repeat by design, see
    ``repeats``, which does not read the ``excluded`` pixels)."""
    if touching(source, copy):
        return None
    src, cpy = region_from_mask(source, work.shape), region_from_mask(copy, work.shape)
    if src is None or cpy is None:
        return None
    min_shift = P.MIN_SHIFT_PX * min(1.0, work.scale)
    (ps, _), (pc, _) = _majority_panel(pmap, source), _majority_panel(pmap, copy)
    layout = ((src.work_box, cpy.work_box, _panel_box(pmap, ps), _panel_box(pmap, pc))
              if ps != pc and min(ps, pc) >= 0 else None)
    if band is not None and legitimate_repeat(work.rgb, band, source, copy, m, min_shift, excluded,
                                              exact_blocks > 0 or lane > 0, layout, panel_parts(pmap, source)):
        return None
    area = min(src.area_fraction, cpy.area_fraction)
    transform = Transform.from_matrix(scaled_matrix(m, work.work_shape, work.shape))
    return CopyPair(source=src, copy=cpy, transform=transform,
                    inliers=int(inliers), correlation=float(correlation), dense=dense, exact_blocks=int(exact_blocks),
                    within_panel=bool(ps == pc and ps >= 0), strength=strength(correlation, textured, area),
                    lane=lane)


def _same(a: CopyPair, b: CopyPair) -> bool:
    t = P.DUPLICATE_IOU
    return ((a.source.iou(b.source) >= t and a.copy.iou(b.copy) >= t)
            or (a.source.iou(b.copy) >= t and a.copy.iou(b.source) >= t))


def merge_duplicates(pairs: Sequence[CopyPair]) -> list[CopyPair]:
    """One pair per copy: the strongest, carrying the evidence of every duplicate (the most
    keypoint inliers and exact blocks any had, and whether the dense or lane search found it)."""
    kept: list[CopyPair] = []
    for p in sorted(pairs, key=lambda p: -p.strength):
        for k, q in enumerate(kept):
            if _same(p, q):
                kept[k] = replace(q, inliers=max(p.inliers, q.inliers), dense=p.dense or q.dense,
                                  exact_blocks=max(p.exact_blocks, q.exact_blocks), lane=max(p.lane, q.lane))
                break
        else:
            kept.append(p)
    return kept


def excluded_mask(work: WorkImage, panels, deco: np.ndarray, page_px: np.ndarray, cfg: MatcherConfig) -> np.ndarray:
    """Pixels that are never evidence: decorations, drawing panels, and the page (outside the
    panels and page-coloured pixels inside them) with a margin: the step from page into a panel
    repeats from panel to panel, and tick marks sit on page."""
    out = deco.copy() if cfg.decorations else np.zeros(work.work_shape, np.uint8)
    page = page_px.copy()
    outside = np.ones(work.work_shape, np.uint8)
    for (x, y, w, h), kind in panels:
        outside[y:y + h, x:x + w] = 0
        if cfg.skip_charts and kind in DRAWING_KINDS:
            out[y:y + h, x:x + w] = 1
    page |= outside
    if page.any():
        k = 2 * P.PAGE_MARGIN_PX + 1
        out |= cv2.dilate(page, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return out


def _exact_pairs(rgb: np.ndarray, work: WorkImage, excluded: np.ndarray, min_shift: float,
                 pmap: np.ndarray, band: np.ndarray, limit: int) -> list[CopyPair]:
    """Pairs from exact block hashing on the original pixels (small enough images only)."""
    h, w = rgb.shape[:2]
    if h * w > P.EXACT_MAX_PIXELS:
        return []
    native_excluded = (excluded if excluded.shape == (h, w)
                       else cv2.resize(excluded, (w, h), interpolation=cv2.INTER_NEAREST))
    out = []
    for cand in exact_candidates(rgb, native_excluded, min_shift / min(1.0, work.scale), limit):
        src, cpy = exact_region(rgb, cand, native_excluded)
        if touching(src, cpy):  # grown into flat surroundings that meet: keep the blocks alone
            src, cpy = exact_region(rgb, cand, native_excluded, grow=False)
        if float((src & cpy).sum()) > P.MAX_SELF_OVERLAP * min(src.sum(), cpy.sum()):
            continue
        m = cand.matrix
        if (h, w) != work.work_shape:
            size = (work.work_shape[1], work.work_shape[0])
            src = cv2.resize(src, size, interpolation=cv2.INTER_NEAREST)
            cpy = cv2.resize(cpy, size, interpolation=cv2.INTER_NEAREST)
            m = scaled_matrix(m, (h, w), work.work_shape)
        p = make_pair(src, cpy, m, work, pmap, correlation=1.0, textured=1.0, exact_blocks=cand.support, band=band,
                      excluded=excluded)
        if p is not None:
            out.append(p)
    return out


def _lane_pairs(band: np.ndarray, work: WorkImage, excluded: np.ndarray, lanes: dict, pmap: np.ndarray,
                min_shift: float, config: MatcherConfig) -> list[CopyPair]:
    """Pairs from comparing the lanes of blot and gel panels (``lanes``: ``regular_lanes``),
    verified like the rest."""
    out = []
    for match in lane_matches(work.gray, excluded, lanes, min_shift):
        h = match.hypothesis
        v = verify(band, excluded | match.outside(excluded.shape), h.matrix, h.src, config.agree_zncc, min_shift)
        if v is not None:
            p = make_pair(v.source, v.copy, h.matrix, work, pmap, v.correlation, v.textured, lane=match.score,
                          band=band, excluded=excluded)
            if p is not None:
                out.append(p)
    return out


def keypoint_stage(work: WorkImage, excluded: np.ndarray, panels, lanes: dict, band: np.ndarray,
                   config: MatcherConfig, stats: Optional[dict] = None):
    """(features, matches, hypotheses) of the keypoint search on the working image, outside
    ``excluded``: SIFT at each region's contrast threshold (``lanes``: ``regular_lanes``), the
    small/flat-panel pass when on, g2NN matching and RANSAC hypotheses
    (``benchmarks/miss_analysis.py`` reuses it)."""
    allowed = (1 - excluded) * 255
    scale = contrast_scale(work.gray, allowed)
    feats = features_by_region(work.gray, allowed, list(lanes), config.sift_contrast * scale,
                               config.blot_sift_contrast * scale, config.sift_max_features, work.sift_zoom)
    if config.small_panels:
        extra = [panel_features(work.gray, allowed, box) for box, kind in panels
                 if kind not in DRAWING_KINDS and needs_dense_keypoints(box, band)]
        if stats is not None:
            stats["dense_keypoint_panels"] = len(extra)
        feats = concat([feats] + extra)
    near = descriptor_neighbours(feats) if len(feats) >= 2 else None
    matches = g2nn_matches(feats, config.g2nn_ratio, near=near)
    hyps = keypoint_hypotheses(feats, matches, config.ransac_px, config.max_scale, limit=config.max_hypotheses)
    if config.guided and near is not None:
        where = cKDTree(feats.xy)
        hyps = [with_guided_pairs(feats, near, where, h) for h in hyps]
    return feats, matches, hyps


def with_guided_pairs(feats: Features, near: Neighbours, where: cKDTree, h: Hypothesis) -> Hypothesis:
    """``h`` with the pairs guided matching finds (``keypoints.guided_pairs``) added to its
    inliers: more seeds for verification, and support counted over both (distinct positions)."""
    src, dst = guided_pairs(feats, near, where, h.matrix, h.src)
    if not len(src):
        return h
    src, dst = np.concatenate([h.src, src]), np.concatenate([h.dst, dst])
    return replace(h, src=src, dst=dst, support=max(h.support, min(distinct(src), distinct(dst))))


def detect(image: np.ndarray, config: MatcherConfig = MatcherConfig()) -> Detection:
    """Verified candidate copy pairs of one RGB uint8 image, with panels and decorations."""
    rgb = as_rgb8(image)
    shape = tuple(rgb.shape[:2])
    t0 = time.perf_counter()
    # FLANN's randomised trees and RANSAC draw from OpenCV's (per-thread) generator: seed it so
    # the same image always gives the same candidates.
    cv2.setRNGSeed(RNG_SEED)
    work = to_work(rgb, config.work_max_side, config.work_min_side, config.sift_halve_above)
    no_field = field_planes(None) if config.field_evidence else None  # computed: nothing there
    if work is None:
        return Detection(shape=shape, work_shape=shape, field_planes=no_field, stats={"empty": "too_small"})
    det = Detection(shape=shape, work_shape=work.work_shape, field_planes=no_field)
    stats = det.stats
    panels, deco, page = layout(work)
    det.panels = [Panel(box, kind) for box, kind in to_original(panels, work.work_shape, shape)]
    det.packed_decorations = np.packbits(deco.reshape(-1))
    stats["t_layout"] = time.perf_counter() - t0
    if float(work.gray.std()) <= FLAT_MAX_STD:
        stats["empty"] = "flat"
        return det
    excluded = excluded_mask(work, panels, deco, page_pixels(work.rgb, page), config)
    band = bandpass(work.gray)
    pmap = panel_index_map(work.work_shape, panels)
    min_shift = P.MIN_SHIFT_PX * min(1.0, work.scale)

    t1 = time.perf_counter()
    lanes = regular_lanes(work.gray, panels)
    feats, matches, hyps = keypoint_stage(work, excluded, panels, lanes, band, config, stats)
    stats.update(keypoints=len(feats), matches=len(matches), kp_hypotheses=len(hyps),
                 matches_on_decorations=_on_mask(feats.xy, matches, deco))
    stats["t_keypoints"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    if config.dense:
        dense = dense_hypotheses(band, excluded, min_shift)[:config.max_hypotheses]
        stats["dense_hypotheses"] = len(dense)
        hyps = hyps + dense
    stats["t_dense"] = time.perf_counter() - t2

    t_field = time.perf_counter()
    if config.dense_field or config.field_evidence:
        field = dense_field(work.gray, excluded, min_shift)
        if config.field_evidence:
            det.field_planes = field_planes(field)
        if config.dense_field:
            found = field_hypotheses(field, min_shift, config.max_scale, config.max_hypotheses)
            stats["densefield_hypotheses"] = len(found)
            hyps = hyps + found
    stats["t_densefield"] = time.perf_counter() - t_field

    t_blocks = time.perf_counter()
    sigma = 0.0
    if config.noise_blocks:
        sigma = noise_sigma(work.gray)
        blots = laned_mask([box for box, kind in panels if kind == "blot"], work.work_shape)
        off = excluded | blots  # bands are alike by nature
        found = block_hypotheses(work.gray, off, min_shift, sigma)[:config.max_hypotheses]
        stats.update(noise_sigma=round(sigma, 2), block_hypotheses=len(found))
        hyps = hyps + found
    stats["t_blocks"] = time.perf_counter() - t_blocks

    t3 = time.perf_counter()
    pairs = []
    coarse = None
    for h in hyps:
        v = verify(band, excluded, h.matrix, h.src, config.agree_zncc, min_shift)
        if v is None and coarse_applies(h):
            coarse = bandpass(work.gray, P.COARSE_BAND_SIGMAS) if coarse is None else coarse
            v = verify_coarse(coarse, excluded, h, pmap, config.agree_zncc, min_shift)
        if v is not None and h.method == "blocks" and floor_ratio(work.gray, v.copy, h.matrix, sigma) > MAX_FLOOR_RATIO:
            v = None  # look-alike texture: more than noise tells the two regions apart
        if v is not None:
            dense = h.method == "dense"
            p = make_pair(v.source, v.copy, h.matrix, work, pmap, v.correlation, v.textured,
                          inliers=0 if dense else h.support, dense=dense, band=band, excluded=excluded)
            if p is not None:
                pairs.append(p)
    stats["t_verify"] = time.perf_counter() - t3

    t5 = time.perf_counter()
    if config.lanes:
        pairs += _lane_pairs(band, work, excluded, lanes, pmap, min_shift, config)
        stats["lane_candidates"] = len(pairs)
    stats["t_lanes"] = time.perf_counter() - t5

    t4 = time.perf_counter()
    if config.exact:
        exact = _exact_pairs(rgb, work, excluded, min_shift, pmap, band, config.max_hypotheses)
        stats["exact_candidates"] = len(exact)
        pairs += exact
    stats["t_exact"] = time.perf_counter() - t4
    det.candidates = merge_duplicates(mark_laned(pairs, lanes, work.work_shape))
    stats["t_total"] = time.perf_counter() - t0
    return det


def mark_laned(pairs: list[CopyPair], lanes: dict, shape: tuple[int, int]) -> list[CopyPair]:
    """``pairs`` with ``laned`` set where both regions lie mostly in blot and gel panels with regular
    lanes (``lanes``: ``regular_lanes``), whose like lanes and bands match each other by nature."""
    if not lanes:
        return list(pairs)
    laned = laned_mask(lanes, shape)

    def inside(r) -> bool:
        x, y, w, h = r.work_box
        return 2 * int(np.count_nonzero(r.crop & laned[y:y + h, x:x + w])) >= r.work_area

    return [replace(p, laned=inside(p.source) and inside(p.copy)) for p in pairs]


def _on_mask(xy: np.ndarray, matches, mask: np.ndarray) -> int:
    """Matches with either keypoint on the mask (for the decoration report)."""
    if len(matches) == 0:
        return 0
    h, w = mask.shape
    px = np.clip(np.round(xy).astype(int), 0, [w - 1, h - 1])
    on = mask[px[:, 1], px[:, 0]] > 0
    return int(np.count_nonzero(on[matches.i] | on[matches.j]))
