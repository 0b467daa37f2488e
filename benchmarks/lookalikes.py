"""How many authentic look-alikes the matcher flags, sharp and blurred.

    python -m benchmarks.lookalikes [--start 9100] [--num 40] [--kinds channel_merge,coloured_labels]

One look-alike per seed (``synth.lookalikes``: channel panels with their Merge, coloured labels,
cell fields, insets, lattices), judged as drawn (``none``) and after blur of a sigma drawn from
the hard style's range (``blur``). Every one is authentic, so every flag is a false positive. The
seeds must stay clear of ``seeds.LOOKALIKE_DESIGN_SEEDS``, which rules were designed on.
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.seeds import LOOKALIKE_DESIGN_SEEDS, LOOKALIKE_HELD_OUT
from preprocessing.matching import decide, detect
from preprocessing.synth import hard, lookalikes
from preprocessing.synth.dataset import post_process

POSTS = ("none", "blur")


def flagged(kind: str, seeds: range, post: str) -> int:
    """Look-alikes of ``kind`` (one per seed) the default matcher flags after ``post``."""
    out = 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        image, _ = lookalikes.lookalike(rng, kind)
        if post == "blur":
            image = post_process(image, {"blur_sigma": float(rng.uniform(*hard.BLUR_SIGMA))})
        out += bool(decide(detect(image)))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", type=int, default=LOOKALIKE_HELD_OUT, help="first seed")
    ap.add_argument("--num", type=int, default=40, help="look-alikes per kind")
    ap.add_argument("--kinds", default=",".join(lookalikes.LOOKALIKES), help="comma-separated look-alike kinds")
    args = ap.parse_args(argv)
    seeds = range(args.start, args.start + args.num)
    design = [r for r in LOOKALIKE_DESIGN_SEEDS if set(seeds) & set(r)]
    if design:
        ap.error(f"seeds {seeds.start}-{seeds.stop - 1} overlap the design seeds "
                 + ", ".join(f"{r.start}-{r.stop - 1}" for r in design))
    counts = {(k, p): flagged(k, seeds, p) for k in args.kinds.split(",") for p in POSTS}
    print(f"authentic look-alikes flagged, seeds {seeds.start}-{seeds.stop - 1}:")
    print("| look-alike | " + " | ".join(POSTS) + " |")
    print("|---|" + "--:|" * len(POSTS))
    for k in args.kinds.split(","):
        print(f"| {k} | " + " | ".join(f"{counts[k, p]} of {args.num}" for p in POSTS) + " |")
    return counts


if __name__ == "__main__":
    main()
