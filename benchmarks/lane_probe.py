"""The numbers behind the lane stage's decision bar (DecisionParams.min_lane_score).

    python -m benchmarks.lane_probe

1. Copied lanes: in 120 x 360 blots of 8 lanes (seeds 0-3), lane 1 (100 rows) pasted over lane 5
   re-exposed (gain 0.9, +5) or mirrored left-right after JPEG 85, plain after JPEG 80, rescaled
   0.9 after JPEG 90, mirrored up-down with gain 1.1; found = a decided pair matching both
   instances at pixel F1 >= 0.5, with and without the lane stage.
2. Authentic blots and gels (40, sizes 80-200 x 200-500, every third after JPEG 85): how many the
   default matcher flags, and the lane scores of the lane candidates it computed.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from preprocessing import synth
from preprocessing.matching import MatcherConfig, decide, detect
from preprocessing.synth.figure_blots import lane_boxes
from serving.metric import f1_matrix

LANES = (8, 12.0, 30.0)
CHANGES = {"gain": ({"gain": 0.9, "offset": 5.0}, {"jpeg_quality": 85}),
           "flip": ({"flip": "h"}, {"jpeg_quality": 85}),
           "plain": ({}, {"jpeg_quality": 80}),
           "rescale": ({"scale": 0.9}, {"jpeg_quality": 90}),
           "vflip+gain": ({"flip": "v", "gain": 1.1}, {})}


def copied_lane(seed: int, change: dict, post: dict) -> tuple[np.ndarray, list]:
    blot = synth.western_blot(np.random.default_rng(seed), 120, 360, rgb=False, lanes=LANES)
    a, b = (lane_boxes((0, 0, 120, 360), LANES)[k] for k in (1, 5))
    op = synth.CopyMove("rectangle", (a[0] + 5, a[1], 100, a[3]), (b[0] + 5, b[1], 0, 0), **change)
    y, x, h, w = op.src_box
    _, mask = synth.transform_patch(blot[y:y + h, x:x + w], synth.region_mask("rectangle", h, w), op)
    out, src, dst = synth.apply_copy_move(blot, dataclasses.replace(op, dst_box=op.dst_box[:2] + mask.shape))
    return np.repeat(synth.post_process(out, post)[:, :, None], 3, axis=2), [src, dst]


def best_f1(image: np.ndarray, truth: list, config: MatcherConfig) -> float:
    best = 0.0
    for p in decide(detect(image, config)):
        f = f1_matrix([p.source.mask(), p.copy.mask()], truth)
        best = max(best, max(min(f[0, 0], f[1, 1]), min(f[0, 1], f[1, 0])))
    return best


def main() -> None:
    cv2.setNumThreads(1)
    for lanes in (False, True):
        f1s = {name: [round(best_f1(*copied_lane(s, *CHANGES[name]), MatcherConfig(lanes=lanes)), 2) for s in range(4)]
               for name in CHANGES}
        found = sum(f >= 0.5 for v in f1s.values() for f in v)
        print(f"lanes={lanes}: found {found}/{4 * len(CHANGES)}; pixel F1 per change (seeds 0-3): {f1s}")
    flagged, scores = 0, []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        make = synth.western_blot if seed % 2 else synth.gel
        img = make(rng, int(rng.integers(80, 200)), int(rng.integers(200, 500)), rgb=False)
        img = synth.post_process(img, {"jpeg_quality": 85} if seed % 3 == 0 else {})
        det = detect(np.repeat(img[:, :, None], 3, axis=2))
        flagged += bool(decide(det))
        scores += [round(c.lane, 2) for c in det.candidates if c.lane > 0]
    print(f"authentic blots and gels: {flagged}/40 flagged; lane candidates' scores {sorted(scores, reverse=True)}")


if __name__ == "__main__":
    main()
