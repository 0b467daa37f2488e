"""A training-free copy-move matcher for scientific figures (numpy + OpenCV only).

    from preprocessing.matching import MatcherConfig, DecisionParams, detect, decide, instances_of, describe
    det = detect(rgb, MatcherConfig())       # expensive: panels, decorations, verified candidates
    pairs = decide(det, DecisionParams())    # cheap and pure: the candidates that pass
    masks = instances_of(pairs, det.shape)   # source and copy of each pair, original resolution
    text = describe(pairs[0])                # "regions at (x=.., y=.., w x h) and (..) match: ..."

Layers: imports numpy, scipy, OpenCV and other ``preprocessing`` modules only (``serving``
wraps it as a detector; never the reverse).
"""
from preprocessing.matching.decision import decide, decided, instances_of, passes
from preprocessing.matching.describe import describe
from preprocessing.matching.detector import detect
from preprocessing.matching.params import DecisionParams, MatcherConfig
from preprocessing.matching.results import CopyPair, Detection, Panel, Region, Transform

__all__ = ["CopyPair", "DecisionParams", "Detection", "MatcherConfig", "Panel", "Region", "Transform", "decide",
           "decided", "describe", "detect", "instances_of", "passes"]
