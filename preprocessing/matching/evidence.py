"""The matcher's evidence as a picture for the network: one function for the Beam job and serving.

``evidence_map(detection)`` renders a Detection as uint8 planes at the image's own size, in the
order of ``preprocessing.constants.EVIDENCE_CHANNELS``:
- ``match``: every verified candidate pair's two regions, at 255 x its correlation (the strongest
  pair wins where regions overlap) — where a copy-move is, and how sure the matcher is;
- ``decoration``: 255 on labels, scale bars, arrows and other drawn marks (never evidence);
- ``present``: 255 everywhere: the map was computed (records written before it existed read as
  zeros, so the network can tell "no evidence" from "nothing found").
The Beam job stores it resized exactly as the image (``preprocessing.images.resize_image``, then
``preprocessing.model_input.upscale`` on the device for images that fit) and serving resizes it
with the same functions, so training and scoring see the same feature. All candidates are drawn,
not only those a decision would keep: the network learns which to trust.
"""
from __future__ import annotations

import numpy as np

from preprocessing.constants import EVIDENCE_CHANNELS
from preprocessing.matching.detector import detect
from preprocessing.matching.params import MatcherConfig
from preprocessing.matching.results import Detection

FULL = 255  # uint8 value of certainty


def evidence_map(det: Detection) -> np.ndarray:
    """(H, W, len(EVIDENCE_CHANNELS)) uint8 for a Detection (see the module docstring)."""
    h, w = det.shape
    out = np.zeros((h, w, len(EVIDENCE_CHANNELS)), np.uint8)
    match = out[:, :, EVIDENCE_CHANNELS.index("match")]
    for pair in det.candidates:
        level = np.uint8(round(FULL * float(np.clip(pair.correlation, 0.0, 1.0))))
        for region in (pair.source, pair.copy):
            np.maximum(match, region.mask() * level, out=match)
    out[:, :, EVIDENCE_CHANNELS.index("decoration")] = det.decorations * FULL
    out[:, :, EVIDENCE_CHANNELS.index("present")] = FULL
    return out


def evidence_of(rgb: np.ndarray, config: MatcherConfig = MatcherConfig()) -> np.ndarray:
    """The evidence map of an RGB uint8 image: ``evidence_map(detect(rgb))``."""
    return evidence_map(detect(rgb, config))
