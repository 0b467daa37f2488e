"""Evidence a reviewer can read: one sentence per copy pair."""
from __future__ import annotations

from preprocessing.matching.results import Box, CopyPair, Transform

# Angles within this many degrees of a round value are named by it ("turned 90 degrees").
ANGLE_SNAP_DEG = 2.0
# Scales within this of 1 are "same size".
SCALE_SNAP = 0.03


def _box(b: Box) -> str:
    x, y, w, h = b
    return f"(x={x}, y={y}, {w}x{h})"


def _near(angle: float, target: float) -> bool:
    return abs((angle - target + 180.0) % 360.0 - 180.0) <= ANGLE_SNAP_DEG


def _rotation(angle: float) -> str:
    for target, words in ((90.0, "turned 90 degrees counter-clockwise"), (-90.0, "turned 90 degrees clockwise"),
                          (180.0, "turned 180 degrees")):
        if _near(angle, target):
            return words
    sense = "counter-clockwise" if angle > 0 else "clockwise"
    return f"rotated {abs(angle):.0f} degrees {sense}"


def transform_words(t: Transform) -> list[str]:
    """Plain words for a transform: mirrors, turns, rotation and scale (empty for a plain shift)."""
    words = []
    if t.flip:
        if _near(t.angle, 0.0):
            words.append("mirrored left-right")
        elif _near(t.angle, 180.0):
            words.append("mirrored top-bottom")
        elif _near(t.angle, 90.0) or _near(t.angle, -90.0):
            words.append("mirrored across a diagonal")
        else:
            words += ["mirrored left-right", _rotation(t.angle)]
    elif not _near(t.angle, 0.0):
        words.append(_rotation(t.angle))
    if abs(t.scale - 1.0) > SCALE_SNAP:
        words.append(f"scaled x{t.scale:.2f}")
    return words


def describe(pair: CopyPair) -> str:
    """E.g. "regions at (x=120, y=40, 80x60) and (x=400, y=42, 80x60) match: the second is the
    first mirrored left-right, shift (+280, +2), in the same panel; found by keypoints (34
    keypoint inliers), correlation 0.97". Boxes are original pixels (x, y, width x height).
    Neutral on purpose: which of the two is the original cannot be told from the pixels (the
    pair's order is the fitted map's, not provenance)."""
    dx, dy = pair.shift
    words = transform_words(pair.transform) or ["unchanged"]
    evidence = [pair.method.replace("+", " and ")]
    if pair.inliers:
        evidence.append(f"{pair.inliers} keypoint inliers")
    if pair.exact_blocks:
        evidence.append(f"{pair.exact_blocks} identical blocks")
    where = "in the same panel" if pair.within_panel else "across panels"
    return (f"regions at {_box(pair.source.box)} and {_box(pair.copy.box)} match: the second is the first "
            f"{', '.join(words)}, shift ({dx:+.0f}, {dy:+.0f}), {where}; found by {evidence[0]}"
            + (f" ({', '.join(evidence[1:])})" if len(evidence) > 1 else "")
            + f", correlation {pair.correlation:.2f}")
