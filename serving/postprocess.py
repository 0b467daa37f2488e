"""Probability map -> instance masks at the original size -> the image-level decision.

One implementation used by scoring, calibration and the trainer's validation oF1.
Seed defaults: threshold 0.45, 4-connected components, minimum area 32 (in
model pixels). On top of the seed: an image-level bar. The competition scores
an authentic image predicted forged as 0, so an image is called forged only if
its evidence (the image-level head's score when the model has one, else the
highest probability inside a surviving component) reaches ``image_threshold``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

import cv2
import numpy as np

from serving import rle


@dataclass(frozen=True)
class PostprocessConfig:
    threshold: float = 0.45  # pixel probability -> forged pixel
    min_area: int = 32  # components smaller than this (model pixels) are dropped
    image_threshold: float = 0.0  # evidence needed to call the image forged (0: any component)
    max_instances: int = 0  # keep the K largest components (0: all)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "PostprocessConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def components(prob: np.ndarray, cfg: PostprocessConfig) -> list[np.ndarray]:
    """Binary masks (model size) of the 4-connected components that pass threshold and min area."""
    binary = (np.asarray(prob, np.float32) > cfg.threshold).astype(np.uint8)
    if not binary.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4, ltype=cv2.CV_32S)
    keep = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= cfg.min_area]
    keep.sort(key=lambda k: -stats[k, cv2.CC_STAT_AREA])
    if cfg.max_instances > 0:
        keep = keep[: cfg.max_instances]
    return [(labels == k).astype(np.uint8) for k in keep]


def union_instances(union: np.ndarray) -> list[np.ndarray]:
    """Ground truth from a union mask (records store only the union): its 4-connected components,
    the same connectivity as ``components``. Touching source and copy become one instance."""
    n, labels = cv2.connectedComponents((np.asarray(union) > 0).astype(np.uint8), connectivity=4)
    return [(labels == k).astype(np.uint8) for k in range(1, n)]


def evidence(prob: np.ndarray, comps: list[np.ndarray], image_score: Optional[float]) -> float:
    """How strongly the image looks forged: the image head's score, else the peak inside a component."""
    if image_score is not None:
        return float(image_score)
    if not comps:
        return 0.0
    union = np.any(np.stack(comps), axis=0)
    return float(np.asarray(prob)[union].max())


def instances(prob: np.ndarray, orig_hw: tuple[int, int], cfg: PostprocessConfig,
              image_score: Optional[float] = None) -> list[np.ndarray]:
    """Predicted instance masks at the original (H, W); ``[]`` means authentic."""
    prob = np.asarray(prob, np.float32).reshape(np.asarray(prob).shape[:2])
    comps = components(prob, cfg)
    if not comps or evidence(prob, comps, image_score) < cfg.image_threshold:
        return []
    h, w = int(orig_hw[0]), int(orig_hw[1])
    if comps[0].shape == (h, w):
        return comps
    resized = [cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST) for c in comps]
    return [m for m in resized if m.any()]


def annotate(prob: np.ndarray, orig_hw: tuple[int, int], cfg: PostprocessConfig,
             image_score: Optional[float] = None) -> str:
    """Competition annotation for one probability map."""
    return rle.encode(instances(prob, orig_hw, cfg, image_score))
