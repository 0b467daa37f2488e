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

``outcome`` is one image's whole decision (``score_items`` and the Beam scoring job both call it):
its annotation and the evidence record a reviewer reads, with ``decided_by``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from preprocessing import rle
from preprocessing.hyperparams import Recorded, option
from preprocessing.matching import DecisionParams, decide, instances_of
from serving import matcher, postprocess
from serving.postprocess import NEVER, PostprocessConfig, Prediction
from serving.submission import ScoreResult, rows_with_errors

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


def outcome(a: matcher.Analysed, pred: Prediction, decision: DecisionParams, net_cfg: PostprocessConfig,
            params: FusedParams) -> tuple[str, dict]:
    """One image's matcher analysis and network output -> (its annotation, its evidence record with
    ``decided_by``). The record lists the matcher's pairs only when they decided."""
    pairs = decide(a.detection, decision)
    instances, source = fuse(pairs, instances_of(pairs, a.detection.shape), pred, net_cfg, params)
    record = matcher.evidence_record(a, pairs if source == "matcher" else [])
    return rle.encode(instances), dict(record, decided_by=source)


def score_items(items: Sequence[tuple[str, str]], model, decision: DecisionParams = DecisionParams(),
                net_cfg: Optional[PostprocessConfig] = None, params: FusedParams = FusedParams(),
                batch_size: int = 16, workers: int = 1, progress: bool = True) -> tuple[ScoreResult, list[dict]]:
    """Submission rows for every item (unreadable files ``authentic``) and the evidence records.

    The matcher runs first (``workers`` processes); the network (``model``, an exported model) then
    sees the readable images, with the matcher's evidence maps when it takes them. ``net_cfg``
    defaults to the export's post-processing.
    """
    from serving import network  # TensorFlow: only when the network runs

    analysed = {a.case_id: a for a in matcher.iter_analysed(items, matcher.config_for(model.uses_evidence),
                                                             workers, progress)}
    detections = {cid: a.detection for cid, a in analysed.items() if a.detection}
    errors: list[dict] = [a.error for a in analysed.values() if a.error]
    readable = [item for item in items if item[0] in detections]
    preds = network.iter_predictions(model, readable, batch_size, errors, progress, detections, workers)
    net_cfg = net_cfg or model.postprocess
    rows, evidence = {}, []
    for pred in preds:
        rows[pred.case_id], record = outcome(analysed[pred.case_id], pred, decision, net_cfg, params)
        evidence.append(record)
    return (ScoreResult(rows_with_errors(rows, errors), sorted(errors, key=lambda e: e["case_id"])),
            sorted(evidence, key=lambda e: e["case_id"]))
