"""Probability map -> instance masks at the original size -> the image-level decision.

One implementation, used by scoring, calibration and the trainer's validation oF1. It is split in
the steps calibration needs separately: ``find_components`` (once per threshold: calibration caches
it), ``kept_labels`` (min area, max instances), ``evidence`` and ``masks_at``; ``instances`` is them
in sequence.

Seed defaults: threshold 0.45, 4-connected components, minimum area 32 (in model pixels). On top of
the seed: an image-level bar. The competition scores an authentic image predicted forged as 0, so
an image is called forged only if its evidence (the image-level head's score when the model has
one, else the highest probability inside a surviving component) reaches ``image_threshold``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from preprocessing import rle
from preprocessing.hyperparams import Recorded, option

NEVER = 1.01  # an image-level bar above every probability: everything authentic


@dataclass(frozen=True)
class PostprocessConfig(Recorded):
    threshold: float = option(0.45, "Pixel probability above which a pixel is forged.", lower=0.0, upper=1.0)
    min_area: int = option(32, "Components smaller than this many model pixels are dropped.", lower=0)
    image_threshold: float = option(0.0, "Evidence an image needs to be called forged (0: any component).",
                                    lower=0.0, upper=NEVER)
    max_instances: int = option(0, "Keep the K largest components (0: all).", lower=0)


@dataclass
class Components:
    """The 4-connected components of ``prob > threshold``: a label image and each label's area."""

    labels: np.ndarray  # int32 (H, W); 0 = background, k = component k
    areas: np.ndarray  # areas[k - 1] is the area of label k


def find_components(prob: np.ndarray, threshold: float) -> Components:
    binary = (np.asarray(prob, np.float32) > threshold).astype(np.uint8)
    if not binary.any():
        return Components(np.zeros(binary.shape, np.int32), np.zeros(0, np.int64))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4, ltype=cv2.CV_32S)
    return Components(labels, stats[1:n, cv2.CC_STAT_AREA])


def kept_labels(comps: Components, min_area: int, max_instances: int = 0) -> list[int]:
    """Labels of the components of at least ``min_area`` pixels, largest first (ties: label order)."""
    keep = [int(k) + 1 for k in np.argsort(-comps.areas, kind="stable") if comps.areas[k] >= min_area]
    return keep[:max_instances] if max_instances > 0 else keep


def evidence(prob: np.ndarray, comps: Components, keep: list[int], image_score: Optional[float]) -> float:
    """How strongly the image looks forged: the image head's score, else the peak inside a kept component."""
    if image_score is not None:
        return float(image_score)
    if not keep:
        return 0.0
    return float(np.asarray(prob)[np.isin(comps.labels, keep)].max())


def masks_at(comps: Components, keep: list[int], orig_hw: tuple[int, int]) -> list[np.ndarray]:
    """The kept components as uint8 masks at the original (H, W) (nearest neighbour); empty ones dropped."""
    masks = [(comps.labels == k).astype(np.uint8) for k in keep]
    h, w = int(orig_hw[0]), int(orig_hw[1])
    if not masks or masks[0].shape == (h, w):
        return masks
    resized = [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]
    return [m for m in resized if m.any()]


def instances(prob: np.ndarray, orig_hw: tuple[int, int], cfg: PostprocessConfig,
              image_score: Optional[float] = None) -> list[np.ndarray]:
    """Predicted instance masks at the original (H, W); ``[]`` means authentic."""
    prob = np.asarray(prob, np.float32).reshape(np.asarray(prob).shape[:2])
    comps = find_components(prob, cfg.threshold)
    keep = kept_labels(comps, cfg.min_area, cfg.max_instances)
    if not keep or evidence(prob, comps, keep, image_score) < cfg.image_threshold:
        return []
    return masks_at(comps, keep, orig_hw)


@dataclass
class Prediction:
    """The model's output for one image, before post-processing."""

    case_id: str
    orig_hw: tuple[int, int]
    prob: np.ndarray  # (S, S) float32
    image_score: Optional[float]


def annotation(pred: Prediction, cfg: PostprocessConfig) -> str:
    """The competition annotation of one prediction: its instances in RLE, or ``authentic``."""
    return rle.encode(instances(pred.prob, pred.orig_hw, cfg, pred.image_score))


def union_instances(union: np.ndarray) -> list[np.ndarray]:
    """Ground truth from a union mask (records store only the union): its 4-connected components,
    the same connectivity as ``find_components``. Touching source and copy become one instance."""
    n, labels = cv2.connectedComponents((np.asarray(union) > 0).astype(np.uint8), connectivity=4)
    return [(labels == k).astype(np.uint8) for k in range(1, n)]
