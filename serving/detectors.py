"""The three detectors behind ``serving.score --detector``: one call that scores image files.

- ``network``: the exported model (``serving.network``) with its calibrated post-processing;
- ``matcher``: native-resolution matching (``serving.matcher``) with its decision parameters;
- ``fused``: the matcher's instances confirmed and refined by the network (``serving.fused``).

Each module owns its decision and has one shape, ``score_items(items, ...)`` -> (rows and errors,
evidence records); this module only picks one and hands it its settings.

Their settings live in the export's metadata.json (``Settings``): ``postprocess``, ``matcher``,
``fused`` and ``detector``, the one that scored best on validation data when ``serving.calibrate``
ran. ``auto`` means that detector (the network for an export never calibrated for the others, the
matcher when there is no model at all).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from preprocessing.errors import UsageError
from preprocessing.matching import DecisionParams
from serving import fused, matcher
from serving.fused import FusedParams
from serving.postprocess import PostprocessConfig
from serving.submission import ScoreResult

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


def score_items(detector: str, items: Sequence[tuple[str, str]], model=None, settings: Settings = Settings(),
                workers: int = 1, batch_size: int = 16, progress: bool = True) -> tuple[ScoreResult, list[dict]]:
    """Submission rows for every item and the evidence records a reviewer reads (none from the
    network): ``detector``'s own ``score_items`` with its settings."""
    if detector == "matcher":
        return matcher.score_items(items, settings.matcher, workers=workers, progress=progress)
    if detector == "network":
        from serving import network  # TensorFlow: only for a detector that needs it

        return network.score_items(items, model, settings.postprocess, batch_size, workers, progress)
    return fused.score_items(items, model, settings.matcher, settings.postprocess, settings.fused, batch_size,
                             workers, progress)
