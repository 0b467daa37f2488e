"""The end-to-end demo on built-in data (what ``make demo`` runs).

    python -m serving.demo --output_dir demo_out [--overwrite]

synthetic figures and photos -> Beam job (with the matcher's evidence) -> trainer.main (a few CPU
minutes) -> export -> calibrate (network, matcher, fused) -> serving.score with each detector ->
serving.evaluate. Each step is its own ``python -m`` process, printed as a command a user can
paste. Ends with the fused detector, the matcher and the network next to the "everything
authentic" baseline, and writes ``predictions.html``: for a sample of test images (flagged
authentic ones first), the predicted pairs drawn as lines joining their two regions, with the transform in words
(no direction claimed).
"""
from __future__ import annotations

import csv
import html
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Optional

import pandas as pd
from absl import flags

from preprocessing import cli, outputs, rle
from preprocessing.images import read_rgb8
from serving import pictures
from serving.metric import image_score
from serving.submission import ERRORS_SUFFIX, EVIDENCE_SUFFIX, read_evidence

_OUT = flags.DEFINE_string("output_dir", "demo_out", "Where everything goes (a new or empty folder, or an earlier "
                           "demo's with --overwrite).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 320, "Synthetic training images.")
_NUM_TEST = flags.DEFINE_integer("num_test", 80, "Synthetic test images.")
_SIZE = flags.DEFINE_integer("image_size", 96, "Model input size (records are stored for this size).")
_MAX_SIZE = flags.DEFINE_integer("max_size", 256, "Largest image side (figure pages are at least 128 px).")
_MINUTES = flags.DEFINE_float("train_minutes", 6.0, "Training time budget in minutes.")
_EPOCHS = flags.DEFINE_integer("epochs", 40, "Maximum epochs (the time budget usually ends training first).")
_WIDTH = flags.DEFINE_integer("width", 16, "U-Net filters at full resolution.")
_DEPTH = flags.DEFINE_integer("depth", 3, "U-Net downsamplings.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and the training run.")
_SAMPLES = flags.DEFINE_integer("html_samples", 16, "Test images shown in predictions.html.")

cli.define_overwrite()

# What the demo writes in its output folder (the only entries --overwrite removes).
OWNED = ("data", "records", "model", "summaries", "predictions.html")
OWNED_SUFFIXES = (".csv", ERRORS_SUFFIX, EVIDENCE_SUFFIX)


def owned(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    return top in OWNED or ("/" not in rel and rel.endswith(OWNED_SUFFIXES))


class StepFailed(RuntimeError):
    pass


def pasteable(module: str, args: list[str]) -> str:
    """The step as a user would type it (the venv's python is on PATH after ``. .venv/bin/activate``)."""
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


def shown(path: str) -> str:
    """A path as the user should read it: relative to the current folder when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def json_object(line: str) -> Optional[dict]:
    """The JSON object a command prints as its last line for scripts, or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def run_step(n: int, total: int, title: str, module: str, args: list[str], summary: Optional[str] = None) -> str:
    """Run ``python -m module args`` with live output; returns its stdout. Lines are echoed, except a
    JSON summary (for scripts, not people): it goes to the file ``summary`` instead."""
    cmd = [sys.executable, "-m", module, *args]
    print(f"\n[{n}/{total}] {title}\n  $ {pasteable(module, args)}", flush=True)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if json_object(line.strip()) is None:
            print("  | " + line, end="", flush=True)
        elif summary:
            os.makedirs(os.path.dirname(summary), exist_ok=True)
            outputs.write_text(summary, line)
            print(f"  | full summary (JSON): {shown(summary)}", flush=True)
    if proc.wait() != 0:
        raise StepFailed(f"step {n} ({title}) failed with exit code {proc.returncode}: {' '.join(cmd)}")
    print(f"  done in {time.time() - start:.0f} s", flush=True)
    return "".join(lines)


def slug(name: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in name).split())


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def write_authentic_baseline(solution_csv: str, path: str) -> str:
    ids = pd.read_csv(solution_csv, dtype={"case_id": str})["case_id"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow(["case_id", "annotation"])
        w.writerows((cid, rle.AUTHENTIC) for cid in sorted(ids))
    return path


# ----------------------------------------------------------------------------- predictions.html

def write_predictions_html(path: str, image_dir: str, solution_csv: str, submission_csv: str,
                           n: int, seed: int, title: str = "Test predictions") -> str:
    """Each picked image with its predicted pairs (a line joining its two regions, transform in words),
    predictions coloured by whether they match the truth, and missed truth outlined."""
    solution = pd.read_csv(solution_csv, dtype={"case_id": str, "annotation": str}, keep_default_na=False)
    sub = pd.read_csv(submission_csv, dtype=str, keep_default_na=False).set_index("case_id")["annotation"]
    evidence = read_evidence(submission_csv)
    files = {os.path.splitext(f)[0]: os.path.join(image_dir, f) for f in os.listdir(image_dir)}
    by_id = solution.set_index("case_id")
    truth_forged = {c: a != rle.AUTHENTIC for c, a in zip(solution.case_id, solution.annotation)}
    flagged = {c: a != rle.AUTHENTIC for c, a in sub.items()}
    cards = []
    for cid in pictures.review_order(truth_forged, flagged, n, seed):
        sol = by_id.loc[cid]
        h, w = int(sol.height), int(sol.width)
        truth = rle.decode(sol.annotation, h, w)
        pred = rle.decode(sub.get(cid, rle.AUTHENTIC), h, w)
        pairs = evidence.get(cid, {}).get("pairs", [])
        cards.append(pictures.card(cid, read_rgb8(files[cid]), pred, truth, pairs, image_score(pred, truth)))
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{pictures.CSS}</style>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(os.path.basename(submission_csv))}: authentic images that "
            "were flagged first, then forged images, then authentic images left alone. oF1 of each image: 1 for a "
            f"correct 'authentic'.</p>{pictures.LEGEND}" + "".join(cards))
    outputs.write_text(path, page)
    return path


# ----------------------------------------------------------------------------- main

DETECTOR_ROWS = (("fused (matcher confirmed by the network)", "fused"), ("matcher", "matcher"),
                 ("network (calibrated)", "network"))


def print_table(evals: dict) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"\n| {'submission':<42} | {'test oF1':>8} | {'oF1 forged':>10} | {'oF1 authentic':>13} | "
          f"{'false pos.':>10} |")
    print(f"|{'-' * 44}|{'-' * 9}:|{'-' * 11}:|{'-' * 14}:|{'-' * 11}:|")
    for name, s in evals.items():
        print(f"| {name:<42} | {s['oF1']:>8.4f} | {fmt(s['oF1_forged']):>10} | {fmt(s['oF1_authentic']):>13} | "
              f"{s['authentic_false_positive']:>10} |")


def main(argv):
    del argv
    start = time.time()
    out = outputs.check_dir(_OUT.value, overwrite=flags.FLAGS.overwrite, owned=owned)
    for entry in sorted(os.listdir(out)) if os.path.isdir(out) else []:  # --overwrite: only the demo's own
        path = os.path.join(out, entry)
        if owned(entry):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)
    data, records, model, summaries = (os.path.join(out, d) for d in ("data", "records", "model", "summaries"))
    solution = os.path.join(data, "test_solution.csv")
    baseline = os.path.join(out, "baseline_authentic.csv")
    workers = str(cli.DEFAULT_WORKERS)
    total = 7
    try:
        run_step(1, total, "synthetic dataset: compound figures and photos", "preprocessing.synth",
                 ["--output_dir", data, "--num_train", str(_NUM_TRAIN.value), "--num_test", str(_NUM_TEST.value),
                  "--seed", str(_SEED.value), "--min_size", "64", "--max_size", str(_MAX_SIZE.value),
                  "--style", "mixed"])
        run_step(2, total, "Beam preprocessing job -> TFRecords (with the matcher's evidence maps)",
                 "preprocessing.main",
                 ["--input_dir", data, "--output_dir", records, "--image_size", str(_SIZE.value),
                  "--encoding", "raw", "--num_shards", "2"])  # locally: one worker process per core
        run_step(3, total, f"training for at most {_MINUTES.value:g} minutes on the CPU, then export",
                 "trainer.main",
                 ["--data_dir", records, "--model_dir", model, "--epochs", str(_EPOCHS.value),
                  "--batch_size", "16", "--max_minutes", str(_MINUTES.value), "--width", str(_WIDTH.value),
                  "--depth", str(_DEPTH.value), "--seed", str(_SEED.value),
                  # Checkpoint on segmentation quality: oF1 under the seed's fixed post-processing
                  # rewards the all-authentic model early on; calibration sets the image bar later.
                  "--monitor", "val_mask_dice"], summary=os.path.join(summaries, "train.json"))
        calib = last_json(run_step(4, total, "calibrate the network, the matcher and the fused decision (the "
                                   "matcher on every labelled image)", "serving.calibrate",
                                   ["--model_dir", model, "--data_dir", records, "--workers", workers],
                                   summary=os.path.join(summaries, "calibrate.json")))
        subs = {}
        for name, detector in DETECTOR_ROWS:
            subs[name] = os.path.join(out, f"submission_{detector}.csv")
            run_step(5, total, f"score the test images: {name}", "serving.score",
                     ["--model_dir", model, "--input_dir", data, "--output", subs[name], "--detector", detector,
                      "--workers", workers])
        write_authentic_baseline(solution, baseline)
        subs["everything authentic"] = baseline
        evals = {name: last_json(run_step(6, total, f"evaluate: {name}", "serving.evaluate",
                                          ["--solution", solution, "--submission", path],
                                          summary=os.path.join(summaries, f"evaluate_{slug(name)}.json")))
                 for name, path in subs.items()}
        print(f"\n[7/{total}] predictions.html", flush=True)
        chosen = calib.get("detectors", {}).get("detector", "network")
        page = write_predictions_html(os.path.join(out, "predictions.html"), os.path.join(data, "test_images"),
                                      solution, os.path.join(out, f"submission_{chosen}.csv"), _SAMPLES.value,
                                      _SEED.value, title=f"Test predictions of the {chosen} detector")
    except StepFailed as exc:
        raise SystemExit(f"demo failed: {exc}") from None

    base = evals["everything authentic"]
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min. Test set: {base['images']} images "
          f"({base['true_forged']} forged). The detector calibration chose (the simplest one no other beat by "
          f"its margin; serving.score --detector auto): {chosen}.")
    print_table(evals)
    print("\nWrote:")
    for label, path in (("dataset", data), ("TFRecords + manifest", records), ("model + export", model),
                        *((f"submission ({d})", os.path.join(out, f"submission_{d}.csv")) for _, d in DETECTOR_ROWS),
                        ("baseline", baseline), ("predictions", page), ("summaries (JSON)", summaries)):
        print(f"  {label:<28} {shown(path)}")


if __name__ == "__main__":
    cli.run(main)
