"""Where the matcher loses each copy: the stage-by-stage fate of every true copy of a synthetic set.

    python -m benchmarks.miss_analysis --sets DIR[,DIR...] [--config '{"sift_contrast": 0.01}']

For every copy (source and copy instance from the generator's solution and metadata), the first
stage that loses it:
- ``found``: a decided pair matches both instances (pixel F1 >= 0.5, ``matcher_dev.FOUND_F1``);
- ``no_keypoint_match``: fewer than 2 keypoint matches join the two instances;
- ``no_hypothesis``: matches, but no RANSAC hypothesis maps one instance's centre onto the other's;
- ``not_verified``: a hypothesis, but dense verification grows no region from it;
- ``below_bar``: verified, but ``decide`` (``DecisionParams()``) rejects it, or its masks miss the
  instances; the exact-hashing, lane and dense stages may still find copies keypoints lose, so a
  copy counted here under a keypoint stage can be ``found`` all the same.
Run it on TUNING sets (``benchmarks.seeds.TUNING_SEEDS``), never on the held-out ones you report.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict

import cv2
import numpy as np
import pandas as pd

from benchmarks.matcher_dev import FOUND_F1
from benchmarks.matcher_stages import post_of, transform_of
from preprocessing import rle, synth
from preprocessing.images import read_rgb8
from preprocessing.matching import MatcherConfig, decide, detect
from preprocessing.matching import params as P
from preprocessing.matching.detector import excluded_mask, keypoint_stage
from preprocessing.matching.hypotheses import apply
from preprocessing.matching.lanes import regular_lanes
from preprocessing.matching.layout import layout, page_pixels
from preprocessing.matching.verify import bandpass, verify
from preprocessing.matching.work import to_work
from serving.metric import pair_f1

STAGES = ("found", "no_keypoint_match", "no_hypothesis", "not_verified", "below_bar")
CENTRE_TOL = 0.15  # a hypothesis explains a copy when it maps one centre within this x sqrt(area) (+3 px) of the other


def _found(pairs, a: np.ndarray, b: np.ndarray) -> bool:
    return any(pair_f1([p.source.mask(), p.copy.mask()], [a, b]) >= FOUND_F1 for p in pairs)


def fate(rgb: np.ndarray, truth: list, config: MatcherConfig) -> list[str]:
    """The stage that loses each (source, copy) instance pair of ``truth`` (see the module docstring)."""
    pairs = decide(detect(rgb, config))
    work = to_work(rgb, config.work_max_side, config.work_min_side, config.sift_halve_above)
    panels, deco, page = layout(work)
    excluded = excluded_mask(work, panels, deco, page_pixels(work.rgb, page), config)
    band = bandpass(work.gray)
    feats, matches, hyps = keypoint_stage(work, excluded, panels, regular_lanes(work.gray, panels), band, config)
    h, w = work.work_shape
    xy = np.clip(np.round(feats.xy).astype(int), 0, [w - 1, h - 1])
    out = []
    for a, b in zip(truth[0::2], truth[1::2]):
        if _found(pairs, a, b):
            out.append("found")
            continue
        am, bm = (cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool) for m in (a, b))
        ina, inb = am[xy[:, 1], xy[:, 0]], bm[xy[:, 1], xy[:, 0]]
        joined = np.count_nonzero((ina[matches.i] & inb[matches.j]) | (inb[matches.i] & ina[matches.j])) \
            if len(matches) else 0
        if joined < 2:
            out.append("no_keypoint_match")
            continue
        ca, cb = (np.array([np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()]) for m in (am, bm))
        tol = CENTRE_TOL * np.sqrt(am.sum()) + 3
        explaining = [hyp for hyp in hyps for s, d in ((ca, cb), (cb, ca))
                      if np.linalg.norm(apply(hyp.matrix, s) - d) < tol]
        if not explaining:
            out.append("no_hypothesis")
            continue
        best = max(explaining, key=lambda hyp: hyp.support)
        v = verify(band, excluded, best.matrix, best.src, config.agree_zncc, P.MIN_SHIFT_PX * min(1.0, work.scale))
        out.append("not_verified" if v is None else "below_bar")
    return out


def analyse(folder: str, config: MatcherConfig) -> dict:
    """{breakdown key: Counter of stages} over the forged test images of a synthetic set."""
    solution = pd.read_csv(os.path.join(folder, synth.SOLUTION_FILE), dtype={"case_id": str})
    meta = {c["case_id"]: c for c in json.load(open(os.path.join(folder, synth.META_FILE)))["cases"]}
    table: dict = defaultdict(Counter)
    for row in solution.itertuples(index=False):
        truth = rle.decode(row.annotation, row.height, row.width)
        if not truth:
            continue
        rgb = read_rgb8(os.path.join(folder, "test_images", row.case_id + ".png"))
        case = meta[row.case_id]
        for op, stage in zip(case["ops"], fate(rgb, truth, config)):
            for key in ("all", f"transform:{transform_of(op)}", f"post:{post_of(case['post'])}"):
                table[key][stage] += 1
    return table


def print_table(name: str, table: dict) -> None:
    print(f"\n{name}:\n| copies | {' | '.join(STAGES)} |\n|---|{'--:|' * len(STAGES)}")
    for key in sorted(table, key=lambda k: (k != "all", k)):
        print(f"| {key} ({sum(table[key].values())}) | " + " | ".join(str(table[key][s]) for s in STAGES) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", required=True, help="comma-separated synthetic set folders (tuning seeds)")
    ap.add_argument("--config", default="{}", help="MatcherConfig overrides as JSON")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    config = MatcherConfig(**json.loads(args.config))
    folders = args.sets.split(",")
    for folder in folders:
        if not os.path.isfile(os.path.join(folder, synth.SOLUTION_FILE)):
            ap.error(f"{folder}: not a synthetic set (no {synth.SOLUTION_FILE}; make one with "
                     "python -m preprocessing.synth)")
    for folder in folders:
        print_table(os.path.basename(folder.rstrip("/")), analyse(folder, config))


if __name__ == "__main__":
    main()
