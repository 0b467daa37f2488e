"""The end-to-end demo on built-in data (what ``make demo`` runs).

    python -m serving.demo --output_dir demo_out

synthetic dataset -> Beam job -> trainer.main (a few CPU minutes) -> export ->
calibrate -> serving.score on the synthetic test images -> serving.evaluate.
Each step is its own ``python -m`` process, exactly the commands a user would
type (printed as they run). Ends with the model's oF1 next to the "everything
authentic" baseline, and writes ``predictions.html`` (image, true instances,
predicted instances) for a sample of test images.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
from absl import flags

from preprocessing import cli, outputs, rle
from preprocessing.images import read_rgb8
from serving.metric import image_score

_OUT = flags.DEFINE_string("output_dir", "demo_out", "Where everything goes (a new or empty folder, or an earlier "
                           "demo's with --overwrite).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 320, "Synthetic training images.")
_NUM_TEST = flags.DEFINE_integer("num_test", 80, "Synthetic test images.")
_SIZE = flags.DEFINE_integer("image_size", 96, "Model input size (records are stored for this size).")
_MINUTES = flags.DEFINE_float("train_minutes", 6.0, "Training time budget in minutes.")
_EPOCHS = flags.DEFINE_integer("epochs", 40, "Maximum epochs (the time budget usually ends training first).")
_WIDTH = flags.DEFINE_integer("width", 16, "U-Net filters at full resolution.")
_DEPTH = flags.DEFINE_integer("depth", 3, "U-Net downsamplings.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and the training run.")
_SAMPLES = flags.DEFINE_integer("html_samples", 16, "Test images shown in predictions.html.")

cli.define_overwrite()

INSTANCE_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (140, 255, 90), (220, 90, 255))
# What the demo writes in its output folder (the only entries --overwrite removes).
OWNED = ("data", "records", "model", "predictions.html")
OWNED_SUFFIXES = (".csv", ".errors.jsonl")


def owned(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    return top in OWNED or ("/" not in rel and rel.endswith(OWNED_SUFFIXES))


class StepFailed(RuntimeError):
    pass


def pasteable(module: str, args: list[str]) -> str:
    """The step as a user would type it (the venv's python is on PATH after ``. .venv/bin/activate``)."""
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


def run_step(n: int, total: int, title: str, module: str, args: list[str]) -> str:
    """Run ``python -m module args`` with live output; returns its stdout (also echoed)."""
    cmd = [sys.executable, "-m", module, *args]
    print(f"\n[{n}/{total}] {title}\n  $ {pasteable(module, args)}", flush=True)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    lines = []
    for line in proc.stdout:
        print("  | " + line, end="", flush=True)
        lines.append(line)
    if proc.wait() != 0:
        raise StepFailed(f"step {n} ({title}) failed with exit code {proc.returncode}: {' '.join(cmd)}")
    print(f"  done in {time.time() - start:.0f} s", flush=True)
    return "".join(lines)


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

def overlay(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """The image with each instance tinted in its own colour and outlined."""
    out = image.astype(np.float32)
    for k, m in enumerate(masks):
        colour = np.array(INSTANCE_COLOURS[k % len(INSTANCE_COLOURS)], np.float32)
        sel = m.astype(bool)
        out[sel] = 0.5 * out[sel] + 0.5 * colour
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour.tolist(), 1)
    return np.clip(out, 0, 255).astype(np.uint8)


def png_data_uri(rgb: np.ndarray, max_side: int = 256) -> str:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    elif scale > 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def sample_cases(solution: pd.DataFrame, n: int, seed: int) -> list[str]:
    """Half forged, half authentic (as available), reproducibly."""
    rng = np.random.default_rng(seed)
    forged = solution[solution.annotation != rle.AUTHENTIC].case_id.tolist()
    authentic = solution[solution.annotation == rle.AUTHENTIC].case_id.tolist()
    k = min(len(forged), n - min(len(authentic), n // 2))
    pick = list(rng.permutation(forged)[:k]) + list(rng.permutation(authentic)[: n - k])
    return sorted(pick)


def write_predictions_html(path: str, image_dir: str, solution_csv: str, submission_csv: str,
                           n: int, seed: int) -> str:
    solution = pd.read_csv(solution_csv, dtype={"case_id": str, "annotation": str}, keep_default_na=False)
    sub = pd.read_csv(submission_csv, dtype=str, keep_default_na=False).set_index("case_id")["annotation"]
    files = {os.path.splitext(f)[0]: os.path.join(image_dir, f) for f in os.listdir(image_dir)}
    rows = []
    for cid in sample_cases(solution, n, seed):
        sol = solution.set_index("case_id").loc[cid]
        h, w = int(sol.height), int(sol.width)
        image = read_rgb8(files[cid])
        truth = rle.decode(sol.annotation, h, w)
        pred = rle.decode(sub.get(cid, rle.AUTHENTIC), h, w)
        score = image_score(pred, truth)
        cells = "".join(f'<td><img src="{png_data_uri(img)}"></td>'
                        for img in (image, overlay(image, truth), overlay(image, pred)))
        rows.append(f"<tr><th>{html.escape(cid)}<br>{w}x{h}<br>true: {len(truth) or 'authentic'}"
                    f"<br>pred: {len(pred) or 'authentic'}<br>score {score:.2f}</th>{cells}</tr>")
    page = ("<!doctype html><meta charset=utf-8><title>copy-move predictions</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px;vertical-align:top;text-align:left}"
            "img{image-rendering:pixelated}</style>"
            "<h1>Test predictions</h1><p>Each instance has its own colour. Score: the image's oF1 "
            "(1 for a correct 'authentic').</p><table><tr><th>case</th><th>image</th>"
            "<th>true instances</th><th>predicted instances</th></tr>" + "".join(rows) + "</table>")
    with open(path, "w") as f:
        f.write(page)
    return path


# ----------------------------------------------------------------------------- main

def main(argv):
    del argv
    start = time.time()
    out = outputs.check_dir(_OUT.value, overwrite=flags.FLAGS.overwrite, owned=owned)
    for entry in sorted(os.listdir(out)) if os.path.isdir(out) else []:  # --overwrite: only the demo's own
        path = os.path.join(out, entry)
        if owned(entry):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)
    data, records, model = (os.path.join(out, d) for d in ("data", "records", "model"))
    solution = os.path.join(data, "test_solution.csv")
    submission = os.path.join(out, "submission.csv")
    seed_sub = os.path.join(out, "submission_seed_postprocess.csv")
    baseline = os.path.join(out, "baseline_authentic.csv")
    total = 8
    try:
        run_step(1, total, "synthetic dataset", "preprocessing.synth",
                 ["--output_dir", data, "--num_train", str(_NUM_TRAIN.value), "--num_test", str(_NUM_TEST.value),
                  "--seed", str(_SEED.value), "--min_size", "64", "--max_size", "256"])
        run_step(2, total, "Beam preprocessing job -> TFRecords", "preprocessing.main",
                 ["--input_dir", data, "--output_dir", records, "--image_size", str(_SIZE.value),
                  "--encoding", "raw", "--num_shards", "2"])
        run_step(3, total, f"training for at most {_MINUTES.value:g} minutes on the CPU, then export",
                 "trainer.main",
                 ["--data_dir", records, "--model_dir", model, "--epochs", str(_EPOCHS.value),
                  "--batch_size", "16", "--max_minutes", str(_MINUTES.value), "--width", str(_WIDTH.value),
                  "--depth", str(_DEPTH.value), "--seed", str(_SEED.value), "--verbose", "2",
                  # Checkpoint on segmentation quality: oF1 under the seed's fixed post-processing
                  # rewards the all-authentic model early on; calibration sets the image bar later.
                  "--monitor", "val_mask_dice"])
        run_step(4, total, "score the test images with the seed's post-processing (for comparison)",
                 "serving.score", ["--model_dir", model, "--input_dir", data, "--output", seed_sub,
                                   "--threshold", "0.45", "--min_area", "32", "--image_threshold", "0"])
        calib = last_json(run_step(5, total, "calibrate post-processing on the validation split", "serving.calibrate",
                                   ["--model_dir", model, "--data_dir", records]))
        run_step(6, total, "score the test images (calibrated defaults)", "serving.score",
                 ["--model_dir", model, "--input_dir", data, "--output", submission])
        write_authentic_baseline(solution, baseline)
        evals = {}
        for name, csv_path in (("model (calibrated)", submission), ("model (seed post-processing)", seed_sub),
                               ("everything authentic", baseline)):
            evals[name] = last_json(run_step(7, total, f"evaluate: {name}", "serving.evaluate",
                                             ["--solution", solution, "--submission", csv_path]))
        print(f"\n[8/{total}] predictions.html", flush=True)
        page = write_predictions_html(os.path.join(out, "predictions.html"), os.path.join(data, "test_images"),
                                      solution, submission, _SAMPLES.value, _SEED.value)
    except StepFailed as exc:
        raise SystemExit(f"demo failed: {exc}") from None

    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min. Test set: "
          f"{evals['everything authentic']['images']} images "
          f"({evals['everything authentic']['true_forged']} forged).")
    print(f"Calibration on val: oF1 {calib['oF1_before']:.4f} -> {calib['oF1_after']:.4f}, "
          f"chosen {calib['after']}")
    print(f"\n| {'submission':<30} | {'test oF1':>8} | {'oF1 forged':>10} | {'oF1 authentic':>13} | "
          f"{'false pos.':>10} |")
    print(f"|{'-' * 32}|{'-' * 9}:|{'-' * 11}:|{'-' * 14}:|{'-' * 11}:|")
    for name, s in evals.items():
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"| {name:<30} | {s['oF1']:>8.4f} | {fmt(s['oF1_forged']):>10} | {fmt(s['oF1_authentic']):>13} | "
              f"{s['authentic_false_positive']:>10} |")
    print("\nWrote:")
    for label, path in (("dataset", data), ("TFRecords + manifest", records), ("model + export", model),
                        ("submission", submission), ("seed-postprocess submission", seed_sub),
                        ("baseline", baseline), ("predictions", page)):
        rel = os.path.relpath(path)
        print(f"  {label:<28} {path if rel.startswith('..') else rel}")


if __name__ == "__main__":
    cli.run(main)
