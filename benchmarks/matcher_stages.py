"""The matcher stage by stage (ablation) on held-out synthetic sets whose seeds are never tuning seeds.

    python -m benchmarks.matcher_stages --work_dir /tmp/matcher_stages [--num_test 16]
        [--sets photos,figures,hard,unseen] [--seed 0] [--configs base,+lanes,defaults] [--memory]
        [--decision '{"min_lane_score": 0.55}']

Sets (``preprocessing.synth``; seeds from ``benchmarks.seeds.held_out_seed``, disjoint from the
seeds the decision defaults were tuned on): ``photos``, ``figures``, ``hard`` (smooth, small,
lane, rotated and rescaled copies after JPEG/noise/blur, and authentic look-alikes) and
``unseen`` (the hard style from scikit-image samples the other styles never use).

Configurations: ``base`` (keypoints only: every stage switch off), ``+<stage>`` for each stage
switch of ``MatcherConfig`` (its boolean fields except the exclusion masks, found by name at run
time, so switches added later are measured too), ``defaults`` and ``all on``. Per set and
configuration: oF1, on forged / authentic images, image-level TP / FP / TN / FN, images per
second on one core (``cv2.setNumThreads(1)``), and the copies found (both instances at pixel F1
>= 0.5) per transform, placement and post-processing. Detections are cached per configuration.
``--decision`` also scores every configuration under other ``DecisionParams`` (JSON overrides of
the defaults) on the same detections: a decision change measured side by side, e.g. the bars
before 2026-12-06 with ``'{"min_exact_blocks_sized": 16, "min_lane_score": 0.55}'``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections import defaultdict

import numpy as np

from benchmarks.matcher_dev import copy_found, image_outcome, run
from benchmarks.seeds import HELD_OUT_SETS as SETS
from benchmarks.seeds import TUNING_SEEDS, held_out_set_seed
from preprocessing import synth
from preprocessing.matching import DecisionParams, MatcherConfig

# Boolean MatcherConfig fields that mask evidence rather than search for it: never ablated.
NOT_STAGES = ("decorations", "skip_charts")
NUM_TEST = 16  # images per set by default: a quick run (use 100+ for figures worth quoting)
MAX_SIZE = 1000  # largest image side / page width, as benchmarks/detectors.py


def stage_switches() -> list[str]:
    """The stage switches of ``MatcherConfig``, by field type (new switches join automatically)."""
    return [f.name for f in dataclasses.fields(MatcherConfig)
            if f.type in (bool, "bool") and f.name not in NOT_STAGES]


def configurations() -> dict[str, MatcherConfig]:
    """name -> config: base, +each stage, defaults, all on."""
    stages = stage_switches()
    base = MatcherConfig(**{s: False for s in stages})
    out = {"base": base}
    out.update({f"+{s}": dataclasses.replace(base, **{s: True}) for s in stages})
    out["defaults"] = MatcherConfig()
    out["all on"] = MatcherConfig(**{s: True for s in stages})
    return out


def make_set(work_dir: str, name: str, num_test: int, seed: int) -> str:
    style, sources = SETS[name]
    test_seed = held_out_set_seed(seed, name)
    assert test_seed not in TUNING_SEEDS
    out = os.path.join(work_dir, f"{name}_{test_seed}_{num_test}")
    if not os.path.exists(os.path.join(out, synth.SOLUTION_FILE)):
        synth.generate(out, num_train=0, num_test=num_test, seed=test_seed, max_size=MAX_SIZE, style=style,
                       sources=sources, show_progress=False, overwrite=True)
    return out


def transform_of(op: dict) -> str:
    """The copy's change in one word: the hard style and figures record it, photos are derived."""
    if isinstance(op.get("transform"), str):
        name = op["transform"].split("+")[0]
        return {"translation": "translate", "rotate": "rotation", "scale": "rescale", "brightness": "gain"}.get(
            name, name)
    for key, name in (("flip", "flip"), ("rot90", "rot90"), ("angle", "rotation")):
        if op.get(key):
            return name
    if op.get("scale", 1) != 1:
        return "rescale"
    return "gain" if op.get("gain", 1) != 1 or op.get("offset", 0) else "translate"


def placement_of(op: dict) -> str:
    """Where the copy is: the hard style's placement, a figure op's kind, else "textured"."""
    return op.get("placement") or {"lane": "lane"}.get(op.get("kind", ""), "textured")


def post_of(post: dict) -> str:
    if "kind" in post:
        return post["kind"]
    keys = (("jpeg", "jpeg_quality"), ("noise", "noise_sigma"), ("blur", "blur_sigma"))
    kinds = [k for k, key in keys if key in post]
    return "+".join(kinds) or "none"


def score(results: dict, params: DecisionParams = DecisionParams()) -> dict:
    """Image-level counts, oF1 and the copies found per breakdown key."""
    per, found = [], defaultdict(lambda: [0, 0])
    for r in results.values():
        keep, outcome = image_outcome(r, params)
        per.append(outcome)
        for k, op in enumerate(r["meta"]["ops"]):  # truth instances: (source, copy) per op
            hit = copy_found(r["f1"], k, keep)
            for key in (f"transform:{transform_of(op)}", f"placement:{placement_of(op)}",
                        f"post:{post_of(r['meta']['post'])}"):
                found[key][0] += hit
                found[key][1] += 1
    secs = sum(r["seconds"] for r in results.values())
    forged = [s for f, s, _ in per if f]
    auth = [s for f, s, _ in per if not f]
    return {"oF1": float(np.mean([s for _, s, _ in per])), "forged": float(np.mean(forged)) if forged else float("nan"),
            "authentic": float(np.mean(auth)) if auth else float("nan"),
            "TP": sum(p for f, _, p in per if f), "FN": sum(not p for f, _, p in per if f),
            "FP": sum(p for f, _, p in per if not f), "TN": sum(not p for f, _, p in per if not f),
            "images_per_s": len(per) / secs if secs else float("nan"), "found": dict(sorted(found.items()))}


def print_tables(scores: dict) -> None:
    for name, by_config in scores.items():
        print(f"\n{name}:")
        print("| configuration | oF1 | forged | authentic | TP | FP | TN | FN | images/s (1 core) |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for cfg, s in by_config.items():
            print(f"| {cfg} | {s['oF1']:.3f} | {s['forged']:.3f} | {s['authentic']:.3f} | {s['TP']} | {s['FP']} "
                  f"| {s['TN']} | {s['FN']} | {s['images_per_s']:.2f} |")
        keys = sorted({k for s in by_config.values() for k in s["found"]})
        if keys:
            print("\ncopies found (of all):")
            print("| configuration | " + " | ".join(keys) + " |")
            print("|---|" + "--:|" * len(keys))
            for cfg, s in by_config.items():
                cells = [("{}/{}".format(*s["found"][k]) if k in s["found"] else "-") for k in keys]
                print(f"| {cfg} | " + " | ".join(cells) + " |")


def decision_params(ap: argparse.ArgumentParser, text: str):
    """The ``DecisionParams`` of ``--decision`` (None when not given); a usage error names a bad field."""
    if not text:
        return None
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        ap.error(f"--decision: not JSON ({e})")
    if not isinstance(overrides, dict):
        ap.error("--decision: expected a JSON object of DecisionParams fields")
    known = {f.name for f in dataclasses.fields(DecisionParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        ap.error(f"--decision: unknown DecisionParams field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return DecisionParams(**overrides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work_dir", default="/tmp/matcher_stages")
    ap.add_argument("--num_test", type=int, default=NUM_TEST, help="images per held-out set")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--seed", type=int, default=0, help="run seed: every set's seed derives from it")
    ap.add_argument("--configs", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--memory", action="store_true", help="also peak RSS of one detect on a 4000 x 3000 page")
    ap.add_argument("--decision", default="", help="JSON of DecisionParams overrides: every configuration is also "
                    "scored under them, on the same detections")
    args = ap.parse_args()
    other = decision_params(ap, args.decision)
    os.makedirs(args.work_dir, exist_ok=True)
    configs = configurations()
    if args.configs:
        configs = {k: v for k, v in configs.items() if k in args.configs.split(",")}
    scores = {}
    for name in args.sets.split(","):
        folder = make_set(args.work_dir, name, args.num_test, args.seed)
        scores[name] = {}
        for cfg_name, cfg in configs.items():
            tag = cfg_name.replace("+", "plus_").replace(" ", "_")
            res = run(folder, cfg, os.path.join(folder, f"det_{tag}.pkl"))
            scores[name][cfg_name] = score(res)
            if other is not None:
                scores[name][f"{cfg_name}, decision {args.decision}"] = score(res, other)
    with open(os.path.join(args.work_dir, "matcher_stages.json"), "w") as f:
        json.dump({"configs": {k: v.to_dict() for k, v in configs.items()}, "scores": scores}, f, indent=1)
    print_tables(scores)
    if args.memory:
        from benchmarks.matcher_dev import memory_report

        print("\n4000 x 3000 page:", memory_report())


if __name__ == "__main__":
    main()
