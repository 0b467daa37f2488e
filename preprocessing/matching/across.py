"""Copies across images: a panel of one image reused (whole, cropped, mirrored, turned, rescaled or
with its brightness changed) in a panel of another image of the same document.

Two stages keep a 40-figure paper tractable:
1. ``panel_keys`` + ``candidate_pairs``: each panel's RootSIFT keypoints (the matcher's features,
   with its decoration and page masks, mirrored descriptors included) are pooled in one index per
   document; each keypoint votes for the panels of *other* images holding its nearest neighbours.
   A panel is described by its bag of keypoints rather than one global vector, because a crop
   shares only part of a panel: a whole-panel vector (histogram, moments) would miss it.
2. ``match_panels(panel_a, panel_b)``: a pure function of two panels' pixels that runs the
   matcher's own verification on them: the two panels side by side on one canvas, keypoint
   hypotheses (RANSAC similarity, mirrors too), local correlation on the band-pass image
   (``verify``), and the matcher's decision (``passes``) with its default parameters. A
   corpus-scale search (an index of many papers' panels, candidates verified in Beam) can call it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

from preprocessing.matching.decision import passes
from preprocessing.matching.detector import FLAT_MAX_STD, excluded_mask, make_pair
from preprocessing.matching.hypotheses import keypoint_hypotheses, to3
from preprocessing.matching.keypoints import Features, Matches, features_by_region
from preprocessing.matching.lanes import laned_boxes
from preprocessing.matching.layout import layout, page_pixels
from preprocessing.matching.panels import MATCHED_KINDS
from preprocessing.matching.params import DecisionParams, MatcherConfig
from preprocessing.matching.results import Box, Transform
from preprocessing.matching.verify import bandpass, verify
from preprocessing.matching.work import WorkImage, to_work

# Panels are compared at most this large (long side, px): a reused panel is found at any size
# the keypoints survive, and the canvas of two panels stays small (a few MB).
ACROSS_MAX_SIDE = 640
# SIFT sees every panel smaller than the matcher's WORK_MIN_SIDE at this fixed enlargement (the
# matcher's own rule enlarges each image to that side, so two copies of a panel at different sizes
# would be resampled differently and share few keypoints; a fixed factor keeps their scale ratio).
ACROSS_SIFT_ZOOM = 2.0
# Keypoints are kept evenly over a GRID x GRID grid of the panel (see ``keypoints.spread``).
GRID = 8
# Keypoints kept per panel for the document index: memory per panel is 2 x this x 128 half floats
# (~128 kB), so a 40-figure paper with 240 panels holds ~30 MB of descriptors.
ACROSS_MAX_FEATURES = 500
# Keypoints per panel when verifying a candidate pair (more than the index holds, fewer than the
# matcher's whole-image budget: two 360 x 300 panels verify in 0.7 s of CPU).
VERIFY_MAX_FEATURES = 1000
# Panels smaller than this (either side, original px) are labels or icons, not reusable pictures.
ACROSS_MIN_PANEL_PX = 40
# Nearest neighbours looked up per keypoint: enough that neighbours from its own image (a texture
# resembles itself, and a symmetric blob its own mirror) leave room for the other images'. A
# foreign neighbour votes when its distance is below VOTE_RATIO of the farthest neighbour's (the
# generalised 2NN idea: true matches stand out from the background of unrelated keypoints).
NEIGHBOURS = 32
VOTE_RATIO = 0.6
# A panel pair is verified when this many distinct keypoints vote for it (the matcher's
# ``min_inliers`` default: fewer votes cannot give that many inliers) ...
CANDIDATE_MIN_VOTES = 8
# Keypoints looked up at a time (bounds the neighbour tables: 4096 x 32 entries).
QUERY_CHUNK = 4096
# ... and, per panel, only its best few partners (a reused panel has one or two).
CANDIDATES_PER_PANEL = 4
# Gap between the two panels on the verification canvas (px): wider than the correlation
# windows, so nothing of one panel is compared with the other's border.
CANVAS_GAP = 32
# A match at the same size and orientation (scale within 3%, no turn or mirror) that correlates
# this well is "identical": logos, banners and templates repeat that way (see ``identical``). A
# JPEG-compressed logo on three pages of a synthetic paper correlated at 0.969-1.0.
IDENTICAL_MIN_CORRELATION = 0.9


@dataclass(frozen=True)
class PanelKeys:
    """One panel's keypoints for the document index (no pixels)."""

    image: int  # index of the image in its document
    panel: int  # index of the panel in its image
    box: Box  # (x, y, w, h) in the image's pixels
    desc: np.ndarray  # (N, 128) float16 RootSIFT
    mirror: np.ndarray  # (N, 128) float16 RootSIFT of the mirrored patches


@dataclass(frozen=True)
class Prepared:
    """A panel as the matcher sees it: working image, never-evidence mask, features."""

    work: WorkImage
    excluded: np.ndarray
    features: Features


def prepare(panel: np.ndarray, config: MatcherConfig = MatcherConfig(),
            max_features: int = ACROSS_MAX_FEATURES) -> Optional[Prepared]:
    """The matcher's view of one panel (its layout, decorations and page masked, SIFT features),
    or None for a panel too small or flat to hold evidence."""
    work = to_work(panel, min(config.work_max_side, ACROSS_MAX_SIDE), config.work_min_side, 0)
    if work is None or float(work.gray.std()) <= FLAT_MAX_STD:
        return None
    work = replace(work, sift_zoom=ACROSS_SIFT_ZOOM if work.sift_zoom > 1 else work.sift_zoom)
    panels, deco, page = layout(work)
    excluded = excluded_mask(work, panels, deco, page_pixels(work.rgb, page), config)
    feats = features_by_region(work.gray, (1 - excluded) * 255, laned_boxes(work.gray, panels), config.sift_contrast,
                               config.blot_sift_contrast, max_features, work.sift_zoom, GRID)
    return Prepared(work, excluded, feats)


def panel_keys(rgb: np.ndarray, panels, image: int, config: MatcherConfig = MatcherConfig()) -> list[PanelKeys]:
    """Keys of the comparable panels of one image (``panels``: the Detection's (box, kind) list)."""
    out = []
    for k, (box, kind) in enumerate(panels):
        x, y, w, h = box
        if kind not in MATCHED_KINDS or min(w, h) < ACROSS_MIN_PANEL_PX:
            continue
        prep = prepare(rgb[y:y + h, x:x + w], config)
        if prep is None or len(prep.features) < CANDIDATE_MIN_VOTES:
            continue
        f = prep.features
        out.append(PanelKeys(image, k, tuple(box), f.desc.astype(np.float16), f.mirror.astype(np.float16)))
    return out


def candidate_pairs(keys: list[PanelKeys], comparable=lambda a, b: a != b) -> list[tuple[int, int, int]]:
    """(i, j, votes) over ``keys`` indices, i < j, most votes first: panel pairs of two images
    (``comparable(image_a, image_b)``) that share enough keypoints to be worth verifying."""
    if len(keys) < 2:
        return []
    owner = np.concatenate([np.full(len(k.desc), n, np.int32) for n, k in enumerate(keys)])
    base = np.concatenate([k.desc for k in keys] + [k.mirror for k in keys]).astype(np.float32)
    n = len(owner)
    k = min(NEIGHBOURS, len(base))
    index = cv2.flann_Index(base, {"algorithm": 1, "trees": 4})
    allowed = np.array([[comparable(ka.image, kb.image) for kb in keys] for ka in keys])
    votes: dict = defaultdict(set)
    for start in range(0, n, QUERY_CHUNK):  # in chunks: the neighbour tables stay small for a long paper
        idx, dist2 = index.knnSearch(base[start:min(n, start + QUERY_CHUNK)], k, params={"checks": 64})
        dist = np.sqrt(np.maximum(dist2, 0))
        other = owner[np.where(idx >= 0, idx % n, 0)]
        query = owner[start:start + len(idx), None]
        votes_ok = (dist < VOTE_RATIO * dist[:, -1:]) & allowed[query, other] & (idx >= 0)
        rows, cols = np.nonzero(votes_ok)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a, b = int(query[r, 0]), int(other[r, c])
            votes[(min(a, b), max(a, b))].add((a, start + r))
    scored = sorted(((a, b, len(v)) for (a, b), v in votes.items() if len(v) >= CANDIDATE_MIN_VOTES),
                    key=lambda t: -t[2])
    taken: dict = defaultdict(int)
    out = []
    for a, b, v in scored:
        if taken[a] < CANDIDATES_PER_PANEL and taken[b] < CANDIDATES_PER_PANEL:
            out.append((a, b, v))
            taken[a] += 1
            taken[b] += 1
    return out


@dataclass(frozen=True)
class PanelMatch:
    """Two regions that match: ``box_a`` in panel a and ``box_b`` in panel b (each panel's own
    pixels); ``transform`` maps a's pixels onto b's. Which one is the original is not known."""

    box_a: Box
    box_b: Box
    transform: Transform
    inliers: int
    correlation: float
    strength: float

    @property
    def identical(self) -> bool:
        """A pixel-for-pixel repeat at the same size and orientation (see ``IDENTICAL_MIN_CORRELATION``)."""
        t = self.transform
        return (self.correlation >= IDENTICAL_MIN_CORRELATION and not t.flip and abs(t.scale - 1) <= 0.03
                and abs((t.angle + 180) % 360 - 180) <= 2)


def _cross_matches(fa: Features, fb: Features, ratio: float) -> Matches:
    """Keypoints of a matched to b's (and b's mirrors) by the 2NN ratio test; j indexes b after a."""
    if len(fa) < 2 or len(fb) < 2:
        z = np.zeros(0, np.int64)
        return Matches(z, z, np.zeros(0, bool))
    base = np.concatenate([fb.desc, fb.mirror])
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(fa.desc, base, k=2)
    i, j, flip = [], [], []
    for row in knn:
        if len(row) == 2 and row[0].distance < ratio * row[1].distance:
            i.append(row[0].queryIdx)
            j.append(len(fa) + row[0].trainIdx % len(fb))
            flip.append(row[0].trainIdx >= len(fb))
    return Matches(np.array(i, np.int64), np.array(j, np.int64), np.array(flip, bool))


def _canvas(a: Prepared, b: Prepared) -> tuple[np.ndarray, np.ndarray, int]:
    """Band-pass images of a and b side by side (each filtered on its own, so no border of one
    leaks into the other), the excluded mask (everything outside the two panels), and b's x offset."""
    (ha, wa), (hb, wb) = a.work.work_shape, b.work.work_shape
    off = wa + CANVAS_GAP
    band = np.zeros((max(ha, hb), off + wb), np.float32)
    excluded = np.ones(band.shape, np.uint8)
    band[:ha, :wa], band[:hb, off:] = bandpass(a.work.gray), bandpass(b.work.gray)
    excluded[:ha, :wa], excluded[:hb, off:] = a.excluded, b.excluded
    return band, excluded, off


def _features_on_canvas(a: Features, b: Features, off: int) -> Features:
    return Features(np.concatenate([a.xy, b.xy + np.float32([off, 0])]), np.concatenate([a.angle, b.angle]),
                    np.concatenate([a.size, b.size]), np.concatenate([a.desc, b.desc]),
                    np.concatenate([a.mirror, b.mirror]))


def _to_panel(m: np.ndarray, a: WorkImage, b: WorkImage, off: int) -> np.ndarray:
    """A canvas map (a's part -> b's part) in the two panels' own pixels."""
    sa, sb = a.work_shape[1] / a.shape[1], b.work_shape[1] / b.shape[1]
    a_to_canvas = np.diag([sa, sa, 1.0])
    canvas_to_b = np.linalg.inv(np.array([[sb, 0, off], [0, sb, 0], [0, 0, 1.0]]))
    return (canvas_to_b @ to3(m) @ a_to_canvas)[:2]


def _box_in_panel(box: Box, work: WorkImage, off: int) -> Box:
    x, y, w, h = box
    s = work.shape[1] / work.work_shape[1]
    x0, y0 = int(np.floor((x - off) * s)), int(np.floor(y * s))
    return (max(0, x0), max(0, y0), min(work.shape[1], int(np.ceil((x - off + w) * s))) - max(0, x0),
            min(work.shape[0], int(np.ceil((y + h) * s))) - max(0, y0))


def strict_inliers(params: DecisionParams) -> DecisionParams:
    """``params`` with ``min_inliers`` under every map: a document's panels are compared with each
    other at any turn and scale, so look-alike panels get far more chances than the pairs within one
    image; the lower bar for unambiguous maps (``decision.enough_inliers``) was chosen within images
    and is not carried over (``benchmarks/screening.py`` gave the same findings either way)."""
    return replace(params, min_inliers_unambiguous=params.min_inliers)


def match_panels(panel_a: np.ndarray, panel_b: np.ndarray, config: MatcherConfig = MatcherConfig(),
                 params: DecisionParams = DecisionParams()) -> Optional[PanelMatch]:
    """The strongest verified match between two panels (RGB uint8 crops of two images), or None.

    Verified as the matcher verifies a copy within an image, and judged by its decision
    (``passes`` with ``params``); the map is expressed a -> b whichever way RANSAC fitted it."""
    return match_prepared(prepare(panel_a, config, VERIFY_MAX_FEATURES), prepare(panel_b, config, VERIFY_MAX_FEATURES),
                          config, params)


def match_prepared(a: Optional[Prepared], b: Optional[Prepared], config: MatcherConfig = MatcherConfig(),
                   params: DecisionParams = DecisionParams()) -> Optional[PanelMatch]:
    """``match_panels`` on panels already through ``prepare`` (``VERIFY_MAX_FEATURES`` keypoints), so a
    panel met in several candidate pairs is prepared once."""
    if a is None or b is None:
        return None
    params = strict_inliers(params)
    band, excluded, off = _canvas(a, b)
    feats = _features_on_canvas(a.features, b.features, off)
    hyps = keypoint_hypotheses(feats, _cross_matches(a.features, b.features, config.g2nn_ratio), config.ransac_px,
                               config.max_scale, limit=config.max_hypotheses)
    shape = band.shape
    canvas = WorkImage(rgb=np.zeros(shape + (3,), np.uint8), gray=np.zeros(shape, np.uint8), shape=shape)
    pmap = np.full(shape, -1, np.int16)
    pmap[:, :off] = 0
    pmap[:, off:] = 1
    best = None
    for h in hyps:
        v = verify(band, excluded, h.matrix, h.src, config.agree_zncc, 1.0)
        if v is None:
            continue
        pair = make_pair(v.source, v.copy, h.matrix, canvas, pmap, v.correlation, v.textured, inliers=h.support)
        if pair is None or not passes(pair, params) or (best is not None and pair.strength <= best[0].strength):
            continue
        best = (pair, h.matrix)
    if best is None:
        return None
    pair, m = best
    src, cpy = pair.source.work_box, pair.copy.work_box
    if src[0] >= off:  # fitted b -> a: turn it round so the map reads a -> b
        m, src, cpy = np.linalg.inv(to3(m))[:2], cpy, src
    return PanelMatch(box_a=_box_in_panel(src, a.work, 0), box_b=_box_in_panel(cpy, b.work, off),
                      transform=Transform.from_matrix(_to_panel(m, a.work, b.work, off)),
                      inliers=pair.inliers, correlation=pair.correlation, strength=pair.strength)
