"""The matcher detector: native-resolution matching (``preprocessing.matching``) over image files.

``detect`` (the expensive part: keypoints, dense search, verification) runs once per image, in a
pool of processes (``workers``, one image at a time each, so memory stays bounded by the matcher's
working resolution); ``decide`` (cheap) turns a Detection into pairs with the decision parameters,
so calibration can try many of them on cached detections. Every file is accounted for: a
Detection, or an error record ``{"case_id", "path", "reason"}``.

The evidence a reviewer reads (``<output stem>.evidence.jsonl``): per image the verdict and, per
copy pair, its two instances (their indices in the submission's annotation), the boxes, the
transform in words and numbers, inlier count, correlation and strength.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from tqdm import tqdm

from preprocessing import rle
from preprocessing.errors import BadInput
from preprocessing.images import read_rgb8
from preprocessing.matching import DecisionParams, Detection, MatcherConfig, decide, describe, detect, instances_of
from serving.submission import ScoreResult

CHUNK = 4  # images handed to a worker at a time: amortises the inter-process hop, keeps the bar moving


@dataclass
class Analysed:
    """One image through ``detect``: its Detection, or the error that kept it from being read."""

    case_id: str
    path: str
    detection: Optional[Detection] = None
    error: Optional[dict] = None


def analyse(item: tuple[str, str], config: MatcherConfig = MatcherConfig()) -> Analysed:
    """Read one file (preprocessing.images' conversion) and match it; a bad file is an error record."""
    case_id, path = item
    try:
        rgb = read_rgb8(path)
    except BadInput as exc:
        return Analysed(case_id, path, error={"case_id": case_id, "path": path, "reason": exc.reason})
    return Analysed(case_id, path, detection=detect(rgb, config))


def _analyse_star(args) -> Analysed:
    return analyse(*args)


def iter_analysed(items: Sequence[tuple[str, str]], config: MatcherConfig = MatcherConfig(), workers: int = 1,
                  progress: bool = True) -> Iterator[Analysed]:
    """``analyse`` every item, in order, in ``workers`` processes (1: in this process)."""
    bar = tqdm(total=len(items), desc="matching", unit="img", disable=not progress, file=sys.stderr)
    jobs = [(item, config) for item in items]
    if workers <= 1:
        for job in jobs:
            yield _analyse_star(job)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_analyse_star, jobs, chunksize=CHUNK):
                yield result
                bar.update(1)
    bar.close()


def detections_of(items: Sequence[tuple[str, str]], config: MatcherConfig = MatcherConfig(), workers: int = 1,
                  progress: bool = True) -> dict:
    """case_id -> Detection for every readable item (unreadable ones are left out: the caller's own
    checks record them)."""
    return {a.case_id: a.detection for a in iter_analysed(items, config, workers, progress) if a.detection}


@dataclass
class Verdict:
    """The decision for one image: its instances (source, copy, source, copy, ...) and the pairs."""

    case_id: str
    annotation: str
    pairs: list = field(default_factory=list)


def verdict(a: Analysed, params: DecisionParams) -> Verdict:
    pairs = decide(a.detection, params)
    return Verdict(a.case_id, rle.encode(instances_of(pairs, a.detection.shape)) if pairs else rle.AUTHENTIC, pairs)


def evidence_record(a: Analysed, pairs: Sequence) -> dict:
    """What a reviewer reads about one image (one line of the evidence file): its verdict and, per
    decided pair, its two instances (``2k`` source, ``2k + 1`` copy in the annotation)."""
    described = [{"source_instance": 2 * k, "copy_instance": 2 * k + 1, "description": describe(p), **p.to_dict()}
                 for k, p in enumerate(pairs)]
    det = a.detection
    return {"case_id": a.case_id, "path": a.path, "height": det.shape[0], "width": det.shape[1],
            "verdict": "forged" if pairs else "authentic", "pairs": described,
            "panels": [{"box": list(p.box), "kind": p.kind} for p in det.panels],
            "candidates": len(det.candidates)}


def outcome(a: Analysed, params: DecisionParams) -> tuple[str, dict]:
    """One analysed image -> (its annotation, its evidence record): the matcher detector's whole
    per-image decision (``score_items`` and the Beam scoring job both call it)."""
    v = verdict(a, params)
    return v.annotation, evidence_record(a, v.pairs)


def score_items(items: Sequence[tuple[str, str]], params: DecisionParams = DecisionParams(),
                config: MatcherConfig = MatcherConfig(), workers: int = 1,
                progress: bool = True) -> tuple[ScoreResult, list[dict]]:
    """Submission rows for every item (unreadable files ``authentic``) and the evidence records."""
    rows, errors, evidence = {}, [], []
    for a in iter_analysed(items, config, workers, progress):
        if a.error:
            errors.append(a.error)
            rows[a.case_id] = rle.AUTHENTIC
            continue
        rows[a.case_id], record = outcome(a, params)
        evidence.append(record)
    return ScoreResult(sorted(rows.items()), errors), sorted(evidence, key=lambda e: e["case_id"])
