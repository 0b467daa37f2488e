"""Development measurements of the native-resolution matcher (preprocessing.matching).

    python -m benchmarks.matcher_dev --work_dir /tmp/matcher_bench --make        # tuning + report sets
    python -m benchmarks.matcher_dev --work_dir /tmp/matcher_bench --run tune    # detect, cache, score
    python -m benchmarks.matcher_dev --work_dir /tmp/matcher_bench --grid        # decision defaults
    python -m benchmarks.matcher_dev --work_dir /tmp/matcher_bench --run report  # held-out numbers
    python -m benchmarks.matcher_dev --work_dir /tmp/matcher_bench --ablation report --decorations --memory

Data: ``preprocessing.synth.generate`` test splits, style ``photos`` and ``figures``; the tuning
sets (seed 1001, 120 images each) choose ``DecisionParams`` defaults, the report sets (seed 2002,
200 images each) are only scored. Everything runs single-threaded (``cv2.setNumThreads(1)``) so
images/s is per core. Detections are cached (pickle) so the grid and the scoring re-use them.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import resource
import time
from collections import defaultdict

import cv2
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from benchmarks import seeds
from preprocessing import rle, synth
from preprocessing.images import read_rgb8
from preprocessing.matching import DecisionParams, MatcherConfig, decide, decided, detect
from preprocessing.synth import base as synth_base
from serving.metric import f1_matrix

SPLITS = {"tune": (seeds.TUNE_SEED, 120), "report": (seeds.REPORT_SEED, 200)}
STYLES = ("photos", "figures")
GRID = dict(min_inliers=[5, 6, 8, 10, 14], min_correlation=[0.7, 0.8, 0.85, 0.9],
            min_area=[0.0005, 0.001, 0.002, 0.004], min_exact_blocks=[6, 10, 16, 30],
            min_dense_correlation=[0.85, 0.9, 0.95, 0.99])
ABLATIONS = {"keypoints": dict(exact=False, dense=False), "keypoints+exact": dict(exact=True, dense=False),
             "keypoints+exact+fft": dict(exact=True, dense=True)}


def data_dir(work_dir: str, split: str, style: str) -> str:
    return os.path.join(work_dir, f"{split}_{style}")


def make(work_dir: str) -> None:
    for split, (seed, n) in SPLITS.items():
        for style in STYLES:
            out = data_dir(work_dir, split, style)
            if not os.path.exists(os.path.join(out, synth.SOLUTION_FILE)):
                synth.generate(out, num_train=0, num_test=n, seed=seed, style=style, show_progress=False)
            print(f"{out}: {n} test images ({style}, seed {seed})")


def transform_kinds(op: dict) -> list[str]:
    kinds = [k for k, on in (("flip", op["flip"]), ("rot90", op["rot90"] % 4), ("angle", op["angle"]),
                             ("scale", op["scale"] != 1), ("gain", op["gain"] != 1 or op["offset"] != 0),
                             ("feather", op["feather"])) if on]
    return kinds or ["plain"]


def run(folder: str, config: MatcherConfig, cache: str) -> dict:
    """Detect every test image of ``folder`` (cached in ``cache``); per image: detection, truth,
    seconds, case metadata, and the F1 of every candidate's masks against every true instance."""
    if os.path.exists(cache):
        with open(cache, "rb") as f:
            return pickle.load(f)
    cv2.setNumThreads(1)
    solution = pd.read_csv(os.path.join(folder, synth.SOLUTION_FILE), dtype={"case_id": str})
    meta = {c["case_id"]: c for c in json.load(open(os.path.join(folder, synth.META_FILE)))["cases"]}
    out = {}
    for row in solution.itertuples(index=False):
        image = read_rgb8(os.path.join(folder, "test_images", row.case_id + ".png"))
        t = time.perf_counter()
        det = detect(image, config)
        seconds = time.perf_counter() - t
        truth = rle.decode(row.annotation, row.height, row.width)
        masks = [m for p in det.candidates for m in (p.source.mask(), p.copy.mask())]
        f1 = f1_matrix(masks, truth)[:len(masks)] if truth and masks else None
        out[row.case_id] = dict(det=det, n_truth=len(truth), seconds=seconds, meta=meta[row.case_id], f1=f1,
                                pixels=image.shape[0] * image.shape[1])
    with open(cache, "wb") as f:
        pickle.dump(out, f)
    return out


def image_of1(n_truth: int, keep: list, f1) -> float:
    """The competition's per-image score from precomputed candidate F1s (serving.metric's rule)."""
    if n_truth == 0:
        return 0.0 if keep else 1.0
    if not keep:
        return 0.0
    rows = [2 * k + j for k in keep for j in (0, 1)]
    m = np.zeros((max(len(rows), n_truth), n_truth))
    m[:len(rows)] = f1[rows]
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].mean() * n_truth / max(len(rows), n_truth))


FOUND_F1 = 0.5  # a copy is found when one kept pair matches both its instances this well


def copy_found(f1: np.ndarray, k: int, keep: list) -> bool:
    """Whether a kept pair (rows 2j, 2j + 1 of ``f1``) matches truth copy ``k`` (columns 2k, 2k + 1:
    source, copy) with F1 >= ``FOUND_F1`` on both instances, either way round."""
    return any(min(f1[2 * j, 2 * k], f1[2 * j + 1, 2 * k + 1]) >= FOUND_F1
               or min(f1[2 * j, 2 * k + 1], f1[2 * j + 1, 2 * k]) >= FOUND_F1 for j in keep)


def image_outcome(r: dict, params: DecisionParams) -> tuple[list, tuple[bool, float, bool]]:
    """One cached image's kept pairs and (forged, its oF1, flagged) under ``params``."""
    keep = decided(r["det"], params)
    return keep, (r["n_truth"] > 0, image_of1(r["n_truth"], keep, r["f1"]), bool(keep))


def score(results: dict, params: DecisionParams) -> dict:
    per, found = [], defaultdict(lambda: [0, 0])
    for r in results.values():
        keep, outcome = image_outcome(r, params)
        per.append(outcome)
        for k, op in enumerate(r["meta"]["ops"]):  # truth instances come in (source, copy) order
            hit = copy_found(r["f1"], k, keep)
            for kind in transform_kinds(op) + (["jpeg"] if "jpeg_quality" in r["meta"]["post"] else []) \
                    + (["noise"] if "noise_sigma" in r["meta"]["post"] else []) + ["all"]:
                found[kind][0] += hit
                found[kind][1] += 1
    forged = [s for f, s, _ in per if f]
    auth = [s for f, s, _ in per if not f]
    secs = [r["seconds"] for r in results.values()]
    return {"oF1": np.mean([s for _, s, _ in per]), "oF1_forged": np.mean(forged), "oF1_authentic": np.mean(auth),
            "authentic_flagged": sum(p for f, _, p in per if not f), "authentic": len(auth), "forged": len(forged),
            "all_authentic_baseline": len(auth) / len(per),
            "found": {k: f"{a}/{b}" for k, (a, b) in sorted(found.items())},
            "s_per_image": float(np.mean(secs)), "images_per_s": 1.0 / float(np.mean(secs)),
            "s_max": float(np.max(secs))}


def grid(results_sets: list[dict]) -> list:
    keys = list(GRID)
    rows = []
    for values in itertools.product(*GRID.values()):
        params = DecisionParams(**dict(zip(keys, values)))
        scores = [score_quick(r, params) for r in results_sets]
        rows.append((float(np.mean([s for s, _ in scores])), scores, dict(zip(keys, values))))
    rows.sort(key=lambda r: -r[0])
    return rows


def score_quick(results: dict, params: DecisionParams) -> tuple[float, int]:
    outcomes = [image_outcome(r, params)[1] for r in results.values()]
    return float(np.mean([s for _, s, _ in outcomes])), sum(p for f, _, p in outcomes if not f)


def decorations_report(folder: str) -> dict:
    """Keypoint matches touching a decoration, and decided pairs, on the authentic figures: with
    the decoration mask ignored and with it applied (the mask is computed either way)."""
    cv2.setNumThreads(1)
    solution = pd.read_csv(os.path.join(folder, synth.SOLUTION_FILE), dtype={"case_id": str})
    out = {}
    for name, cfg in (("without", MatcherConfig(decorations=False, skip_charts=False)), ("with", MatcherConfig())):
        on, total, flagged = 0, 0, 0
        for row in solution[solution.annotation == rle.AUTHENTIC].itertuples(index=False):
            det = detect(read_rgb8(os.path.join(folder, "test_images", row.case_id + ".png")), cfg)
            on += det.stats.get("matches_on_decorations", 0)
            total += det.stats.get("matches", 0)
            flagged += bool(decide(det))
        out[name] = {"matches_on_decorations": on, "matches": total, "authentic_flagged": flagged}
    return out


def memory_report(side: tuple[int, int] = (3000, 4000), config: MatcherConfig = MatcherConfig()) -> dict:
    """Peak resident memory (of this process, so run it in a fresh one) and time of one detect
    on a fully textured page of ``side`` (h, w) pixels holding one plain copy."""
    cv2.setNumThreads(1)
    base = synth_base._science_image("immunohistochemistry")
    page = cv2.resize(base, (side[1], side[0]), interpolation=cv2.INTER_CUBIC)
    h, w = side
    ch, cw = h // 4, w // 4  # one plain copy of a quarter-side block
    page[h // 10:h // 10 + ch, w // 10:w // 10 + cw] = page[h // 2:h // 2 + ch, w // 2:w // 2 + cw]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    det = detect(page, config)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"pixels": f"{side[1]}x{side[0]}", "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 1024, 1),
            "rss_growth_mb": round((peak - before) / 1024, 1), "pairs": len(decide(det)), "work_shape": det.work_shape}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work_dir", default="/tmp/matcher_bench")
    ap.add_argument("--make", action="store_true")
    ap.add_argument("--run", choices=list(SPLITS))
    ap.add_argument("--grid", action="store_true", help="decision grid on the cached tuning detections")
    ap.add_argument("--ablation", choices=list(SPLITS))
    ap.add_argument("--decorations", action="store_true")
    ap.add_argument("--memory", action="store_true", help="peak RSS and time of one detect (run in a fresh process)")
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    if args.make:
        make(args.work_dir)
    if args.run:
        for style in STYLES:
            res = run(data_dir(args.work_dir, args.run, style), MatcherConfig(),
                      os.path.join(args.work_dir, f"det_{args.run}_{style}.pkl"))
            print(style, json.dumps(score(res, DecisionParams()), indent=1, default=float))
    if args.grid:
        sets = [run(data_dir(args.work_dir, "tune", s), MatcherConfig(),
                    os.path.join(args.work_dir, f"det_tune_{s}.pkl")) for s in STYLES]
        for mean, scores, params in grid(sets)[:10]:
            print(round(mean, 4), [(round(s, 3), f) for s, f in scores], params)
        print("defaults", [(round(s, 3), f) for s, f in (score_quick(r, DecisionParams()) for r in sets)])
    if args.ablation:
        for name, overrides in ABLATIONS.items():
            for style in STYLES:
                res = run(data_dir(args.work_dir, args.ablation, style), MatcherConfig(**overrides),
                          os.path.join(args.work_dir, f"det_{args.ablation}_{style}_{name}.pkl"))
                s = score(res, DecisionParams(use_dense=overrides["dense"]))
                print(name, style, {k: s[k] for k in ("oF1", "oF1_forged", "authentic_flagged", "s_per_image")},
                      s["found"]["all"])
    if args.decorations:
        print("decorations (authentic report figures):",
              decorations_report(data_dir(args.work_dir, "report", "figures")))
    if args.memory:
        print(memory_report())


if __name__ == "__main__":
    main()
