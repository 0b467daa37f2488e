"""Ablation of the matcher's dense-field and small-panel stages (issue 22, stages 1 and 3).

    python -m benchmarks.dense_stages --work_dir /tmp/dense_bench --make
    python -m benchmarks.dense_stages --work_dir /tmp/dense_bench --split tune       # choose defaults
    python -m benchmarks.dense_stages --work_dir /tmp/dense_bench --split heldout    # report only
    python -m benchmarks.dense_stages --memory dense_field                           # 4000x3000 page
    python -m benchmarks.dense_stages --split heldout --timing 8                     # time vs baseline

Data: ``preprocessing.synth.generate`` test splits of both styles, ``--count`` images each; the
tuning split uses seed 1001 (the seed the decision defaults were tuned on), the held-out split uses
the shared held-out sets' seeds (``benchmarks.seeds.held_out_set_seed`` of run 0; until
2026-12-04 it was seed 3003, which has since served development and is a tuning seed now).
Every configuration is scored with the same
``DecisionParams()`` defaults by ``benchmarks.matcher_dev.score`` (oF1, authentic flagged, copies
found per transform and post-processing, seconds per image on one core).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import cv2

from benchmarks.matcher_dev import memory_report, run, score
from benchmarks.seeds import TUNE_SEED, held_out_set_seed
from preprocessing import synth
from preprocessing.images import read_rgb8
from preprocessing.matching import DecisionParams, MatcherConfig, detect

SPLITS = ("tune", "heldout")
STYLES = ("photos", "figures")
# each stage named alone (the other off), so the ablation does not depend on the current defaults
STAGES = {"baseline": {"dense_field": False, "small_panels": False},
          "dense_field": {"dense_field": True, "small_panels": False},
          "small_panels": {"dense_field": False, "small_panels": True},
          "both": {"dense_field": True, "small_panels": True}}


def folder(work_dir: str, split: str, style: str) -> str:
    return os.path.join(work_dir, f"{split}_{style}")


def make(work_dir: str, count: int) -> None:
    for split in SPLITS:
        for style in STYLES:
            seed = TUNE_SEED if split == "tune" else held_out_set_seed(0, style)
            out = folder(work_dir, split, style)
            if not os.path.exists(os.path.join(out, synth.SOLUTION_FILE)):
                synth.generate(out, num_train=0, num_test=count, seed=seed, style=style, show_progress=False)


def relative_time(image_dir: str, count: int) -> dict:
    """Seconds per image of every stage relative to the baseline, each stage run right after the
    others on the same image (one thread), so that a shared machine's load hits them alike."""
    cv2.setNumThreads(1)
    seconds = {name: 0.0 for name in STAGES}
    for path in sorted(glob.glob(os.path.join(image_dir, "*.png")))[:count]:
        image = read_rgb8(path)
        for name, overrides in STAGES.items():
            t = time.perf_counter()
            detect(image, MatcherConfig(**overrides))
            seconds[name] += time.perf_counter() - t
    out = {name: round(s / seconds["baseline"], 2) for name, s in seconds.items()}
    out["baseline_s_per_image"] = round(seconds["baseline"] / max(1, count), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work_dir", default="/tmp/dense_bench")
    ap.add_argument("--make", action="store_true")
    ap.add_argument("--count", type=int, default=40, help="test images per style (with --make)")
    ap.add_argument("--split", choices=list(SPLITS))
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ", ".join(STAGES))
    ap.add_argument("--memory", choices=list(STAGES), help="peak RSS of one 4000x3000 page (run in a fresh process)")
    ap.add_argument("--timing", type=int, default=0,
                    help="time every stage against the baseline on this many images of the --split figures")
    args = ap.parse_args()
    if args.make:
        make(args.work_dir, args.count)
    if args.split and args.timing:
        print(json.dumps(relative_time(os.path.join(folder(args.work_dir, args.split, "figures"), "test_images"),
                                       args.timing)))
    elif args.split:
        for name in args.stages.split(","):
            for style in STYLES:
                res = run(folder(args.work_dir, args.split, style), MatcherConfig(**STAGES[name]),
                          os.path.join(args.work_dir, f"det_{args.split}_{style}_{name}.pkl"))
                s = score(res, DecisionParams())
                print(json.dumps({"split": args.split, "stage": name, "style": style, **s}, default=float), flush=True)
    if args.memory:
        print(json.dumps({"stage": args.memory, **memory_report(config=MatcherConfig(**STAGES[args.memory]))}))


if __name__ == "__main__":
    main()
