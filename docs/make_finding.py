"""Redraws docs/finding.png, the README's picture of a finding: the matcher on a synthetic compound
figure (``preprocessing.synth``, seed 1, case 27433), drawn as serving's review pages draw it
(``serving.pictures``: predicted regions green where they match the truth, a line joining the two regions of each pair).

    PYTHONPATH=. python docs/make_finding.py [OUTPUT_PNG]
"""
from __future__ import annotations

import os
import sys
import tempfile

from preprocessing import synth
from preprocessing.images import read_rgb8
from preprocessing.masks import forged_instances
from preprocessing.matching import DecisionParams, decide, detect, instances_of
from serving import pictures
from serving.matcher import Analysed, evidence_record

SEED, CASE, SIDE = 1, "27433", 800  # a figure whose copy is rotated 15 degrees: keypoints find it


def main(output: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        synth.generate(tmp, num_train=6, num_test=0, seed=SEED, min_size=700, max_size=1000, style="figures",
                       show_progress=False, overwrite=True)
        path = os.path.join(tmp, "train_images", "forged", f"{CASE}.png")
        rgb = read_rgb8(path)
        truth = list(forged_instances(path, os.path.join(tmp, "train_masks", f"{CASE}.npy"), rgb.shape[:2]).instances)
    det = detect(rgb)
    pairs = decide(det, DecisionParams())
    record = evidence_record(Analysed(CASE, path, det), pairs)
    canvas, _ = pictures.draw(rgb, instances_of(pairs, det.shape), truth, record["pairs"], max_side=SIDE)
    with open(output, "wb") as f:
        f.write(pictures.png_bytes(canvas))
    print("\n".join(pictures.pair_lines(record["pairs"])))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                            "finding.png"))
