"""The matcher's evidence as a picture for the network: one function for the Beam job and serving.

``evidence_map(detection)`` renders a Detection as uint8 planes at the image's own size, in the
order of ``preprocessing.constants.EVIDENCE_CHANNELS``:
- ``match``: every verified candidate pair's two regions, at 255 x its correlation (the strongest
  pair wins where regions overlap) — where a copy-move is, and how sure the matcher is;
- ``decoration``: 255 on labels, scale bars, arrows and other drawn marks (never evidence);
- ``present``: 255 everywhere: the map was computed (records written without one read as zeros,
  so the network can tell "no evidence" from "nothing found");
- ``field_clarity``, ``field_consistency``: the dense field (``densefield.field_planes``) at both
  ends of every match: how clearly a point's partner beats the best match elsewhere, and the share
  of its neighbours that move with it under one local affine map. They see what keypoints cannot
  (smooth areas, changed brightness) and are never thresholded: the network learns which to trust.
The Beam job stores it resized exactly as the image (``preprocessing.images.resize_image``, then
``preprocessing.model_input.upscale`` on the device for images that fit) and serving resizes it
with the same functions, so training and scoring see the same feature. All candidates are drawn,
not only those a decision would keep: the network learns which to trust.

A Detection carries the field's planes only when computed with ``EVIDENCE_CONFIG`` (the matcher's
defaults plus the field, which costs time and changes no verdict): ``evidence_map`` refuses any
other, rather than draw an empty field the network would read as "no copy".
"""
from __future__ import annotations

import cv2
import numpy as np

from preprocessing.constants import EVIDENCE_CHANNELS
from preprocessing.matching.densefield import FIELD_PLANES
from preprocessing.matching.detector import detect
from preprocessing.matching.params import MatcherConfig
from preprocessing.matching.results import Detection

FULL = 255  # uint8 value of certainty
# How every evidence map is computed: the matcher's defaults, plus the dense field's planes.
EVIDENCE_CONFIG = MatcherConfig(field_evidence=True)


def evidence_map(det: Detection) -> np.ndarray:
    """(H, W, len(EVIDENCE_CHANNELS)) uint8 for a Detection computed with ``EVIDENCE_CONFIG`` (see
    the module docstring); ``ValueError`` for one computed without the dense field."""
    if det.field_planes is None:
        raise ValueError("this Detection has no dense-field planes: compute it with "
                         "preprocessing.matching.evidence.EVIDENCE_CONFIG (MatcherConfig(field_evidence=True))")
    h, w = det.shape
    out = np.zeros((h, w, len(EVIDENCE_CHANNELS)), np.uint8)
    match = out[:, :, EVIDENCE_CHANNELS.index("match")]
    for pair in det.candidates:
        level = np.uint8(round(FULL * float(np.clip(pair.correlation, 0.0, 1.0))))
        for region in (pair.source, pair.copy):
            np.maximum(match, region.mask() * level, out=match)
    out[:, :, EVIDENCE_CHANNELS.index("decoration")] = det.decorations * FULL
    out[:, :, EVIDENCE_CHANNELS.index("present")] = FULL
    planes = cv2.resize(det.field_planes, (w, h), interpolation=cv2.INTER_NEAREST)
    for k, name in enumerate(FIELD_PLANES):
        out[:, :, EVIDENCE_CHANNELS.index("field_" + name)] = planes[..., k]
    return out


def evidence_of(rgb: np.ndarray) -> np.ndarray:
    """The evidence map of an RGB uint8 image: ``evidence_map(detect(rgb, EVIDENCE_CONFIG))``."""
    return evidence_map(detect(rgb, EVIDENCE_CONFIG))
