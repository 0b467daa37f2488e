"""One verdict from two detectors: the matcher's instances, confirmed by the network.

The matcher sees native resolution and exact geometry but is fooled by legitimate repeats it was
not told about, and draws region edges by rule; the network learns what a forgery in this corpus
looks like but, at 128-256 px, cannot see most copies. The fused decision (``FusedParams``, a few
numbers calibrated on validation data with the pessimistic rule of ``serving.tuning``):

1. the matcher's pairs (``preprocessing.matching.decide`` with its calibrated parameters) make the
   image forged only if the network agrees: its image-level evidence (the image head's score, or
   the peak probability inside a component) reaches ``confirm_bar`` — unless a pair is so strong
   (``matcher_sure``) that it needs no confirmation;
2. each confirmed instance is refined by the network's probability map in a band of
   ``REFINE_BAND_PX`` around its edge, where ``refine_threshold`` > 0 (the matcher's rule-drawn
   edges meet the network's learned ones);
3. without a matcher pair, the network's own instances count only when it is very confident
   (``network_only_bar``).
The defaults reproduce the matcher alone: calibration moves off them only on evidence.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from preprocessing.cli import Recorded, option
from serving import postprocess
from serving.postprocess import NEVER, PostprocessConfig, Prediction

REFINE_BAND_PX = 6  # the edge band (original pixels) in which the network may move a matcher region's edge


@dataclass(frozen=True)
class FusedParams(Recorded):
    confirm_bar: float = option(0.0, "Network image-level evidence a matcher-flagged image needs (0: the "
                                "matcher alone decides).", lower=0.0, upper=NEVER)
    matcher_sure: float = option(NEVER, "Matcher pair strength that needs no confirmation by the network.",
                                 lower=0.0, upper=NEVER)
    refine_threshold: float = option(0.0, "Network probability that moves a matcher region's edge within its "
                                     "edge band (0: the matcher's masks as drawn).", lower=0.0, upper=1.0)
    network_only_bar: float = option(NEVER, "Network image-level evidence that flags an image the matcher found "
                                     "nothing in (with the network's own instances).", lower=0.0, upper=NEVER)


def network_evidence(pred: Prediction, cfg: PostprocessConfig) -> float:
    """The network's image-level evidence: its head's score, else the peak inside a component."""
    if pred.image_score is not None:
        return float(pred.image_score)
    comps = postprocess.find_components(pred.prob, cfg.threshold)
    return postprocess.evidence(pred.prob, comps, postprocess.kept_labels(comps, cfg.min_area), None)


def probability_at(pred: Prediction) -> np.ndarray:
    """The network's probability map at the image's original size (bilinear)."""
    h, w = pred.orig_hw
    return cv2.resize(np.asarray(pred.prob, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def refine(instance: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    """A matcher region whose edge band follows the network: the inside (eroded) stays, the band
    (dilated minus eroded) keeps the pixels where the network's probability exceeds ``threshold``."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * REFINE_BAND_PX + 1, 2 * REFINE_BAND_PX + 1))
    inner, outer = cv2.erode(instance, k), cv2.dilate(instance, k)
    band = (outer > 0) & (inner == 0)
    out = inner.copy()
    out[band & (prob > threshold)] = 1
    return out if out.any() else instance


def fuse(pairs: Sequence, matcher_instances: Sequence[np.ndarray], pred: Prediction, net_cfg: PostprocessConfig,
         params: FusedParams, prob: Optional[np.ndarray] = None) -> tuple[list[np.ndarray], str]:
    """(instances at the original size, which detector decided: "matcher", "network" or "none").

    ``pairs`` and ``matcher_instances``: the matcher's decided pairs and their instances (source,
    copy, ...); ``pred``: the network's output for the same image; ``prob``: its probability map at
    the original size, if already computed (calibration caches it).
    """
    if pairs:
        sure = max(p.strength for p in pairs) >= params.matcher_sure
        if sure or network_evidence(pred, net_cfg) >= params.confirm_bar:
            if params.refine_threshold <= 0:
                return list(matcher_instances), "matcher"
            prob = probability_at(pred) if prob is None else prob
            return [refine(m, prob, params.refine_threshold) for m in matcher_instances], "matcher"
        return [], "none"
    if network_evidence(pred, net_cfg) >= params.network_only_bar:
        own = postprocess.instances(pred.prob, pred.orig_hw, net_cfg, pred.image_score)
        if own:
            return own, "network"
    return [], "none"
