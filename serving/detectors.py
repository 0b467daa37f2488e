"""The three detectors behind ``serving.score --detector``: one call that scores image files.

- ``network``: the exported model (``serving.network``) with its calibrated post-processing;
- ``matcher``: native-resolution matching (``serving.matcher``) with its decision parameters;
- ``fused``: the matcher's instances confirmed and refined by the network (``serving.fused``).

Their settings live in the export's metadata.json (``Settings``): ``postprocess``, ``matcher``,
``fused`` and ``detector``, the one that scored best on validation data when ``serving.calibrate``
ran. ``auto`` means that detector (the network for an export never calibrated for the others, the
matcher when there is no model at all).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from preprocessing import rle
from preprocessing.errors import UsageError
from preprocessing.matching import DecisionParams, decide, instances_of
from serving import matcher
from serving.fused import FusedParams, fuse
from serving.postprocess import PostprocessConfig, Prediction
from serving.submission import ScoreResult, rows_with_errors

DETECTORS = ("network", "matcher", "fused")
AUTO = "auto"


@dataclass(frozen=True)
class Settings:
    """Everything the detectors' decisions depend on, as metadata.json records it."""

    detector: str = "network"
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    matcher: DecisionParams = field(default_factory=DecisionParams)
    fused: FusedParams = field(default_factory=FusedParams)

    @classmethod
    def from_metadata(cls, meta: Optional[dict]) -> Settings:
        meta = meta or {}
        return cls(detector=meta.get("detector", "network"),
                   postprocess=PostprocessConfig.from_dict(meta.get("postprocess")),
                   matcher=DecisionParams.from_dict(meta.get("matcher")),
                   fused=FusedParams.from_dict(meta.get("fused")))


def resolve(detector: str, settings: Optional[Settings], has_model: bool) -> str:
    """The detector ``auto`` stands for, and a clear error for one that cannot run."""
    if detector == AUTO:
        return settings.detector if has_model and settings else "matcher"
    if detector not in DETECTORS:
        raise UsageError(f"unknown detector {detector!r}; expected one of {DETECTORS + (AUTO,)}")
    if detector in ("network", "fused") and not has_model:
        raise UsageError(f"--detector {detector} needs --model_dir (an exported model)")
    return detector


def fused_outcome(a, pred: Prediction, settings: Settings) -> tuple[str, dict]:
    """One image's matcher analysis (``serving.matcher.Analysed``) and network output -> (its
    annotation, its evidence record, with ``decided_by``): the fused detector's whole per-image
    decision (``serving.score`` and ``serving.beam_score`` both call it)."""
    pairs = decide(a.detection, settings.matcher)
    instances, source = fuse(pairs, instances_of(pairs, a.detection.shape), pred, settings.postprocess,
                             settings.fused)
    annotation = rle.encode(instances)
    kept = pairs if source == "matcher" else []
    record = matcher.evidence_record(a, matcher.Verdict(pred.case_id, annotation, kept))
    return annotation, dict(record, decided_by=source)


def score_items(detector: str, items: Sequence[tuple[str, str]], model=None, settings: Settings = Settings(),
                workers: int = 1, batch_size: int = 16, progress: bool = True) -> tuple[ScoreResult, list[dict]]:
    """Submission rows for every item and, for the matcher and the fused detector, the evidence
    records a reviewer reads (``serving.matcher.evidence_record``)."""
    if detector == "matcher":
        return matcher.score_items(items, settings.matcher, workers=workers, progress=progress)
    from serving import network  # TensorFlow: only for a detector that needs it

    if detector == "network":
        return network.score_images(model, "", batch_size, settings.postprocess, progress, items, workers), []
    analysed = {a.case_id: a for a in matcher.iter_analysed(items, workers=workers, progress=progress)}
    detections = {cid: a.detection for cid, a in analysed.items() if a.detection}
    errors: list[dict] = [a.error for a in analysed.values() if a.error]
    readable = [item for item in items if item[0] in detections]
    preds = network.iter_predictions(model, readable, batch_size, errors, progress, detections, workers)
    rows, evidence = {}, []
    for pred in preds:
        rows[pred.case_id], record = fused_outcome(analysed[pred.case_id], pred, settings)
        evidence.append(record)
    return ScoreResult(rows_with_errors(rows, errors), sorted(errors, key=lambda e: e["case_id"])), \
        sorted(evidence, key=lambda e: e["case_id"])
