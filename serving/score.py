"""Batch scoring: a folder of images -> the competition submission.csv.

    python -m serving.score --model_dir MODEL_DIR --input_dir IMAGES --output submission.csv \
        [--batch_size 16] [--threshold T] [--min_area A] [--image_threshold B] [--strict]

Loads MODEL_DIR/export with ``tf.saved_model.load`` (no trainer code) and takes
its post-processing defaults from metadata.json (written by training, tuned by
serving.calibrate). A tf.data pipeline reads, decodes (serving.decode, the
same conversion as preprocessing.images), resizes, batches and prefetches in
parallel while the model runs. Every image gets a row: a file that cannot be
read is scored ``authentic`` and listed with its reason in
``<output stem>.errors.jsonl``.
"""
from __future__ import annotations

import csv
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's INFO lines drown the progress bar
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags
from tqdm import tqdm

from preprocessing.cases import discover_test_images
from preprocessing.errors import BadInput
from preprocessing.images import MAX_PIXELS, read_rgb8
from serving import rle
from serving.decode import check_file, decode_rgb8_tf, resize_to_model
from serving.postprocess import PostprocessConfig, instances
from serving.saved_model import ExportedModel, load

HEADER = ("case_id", "annotation")


@dataclass
class Prediction:
    """The model's output for one image, before post-processing."""

    case_id: str
    orig_hw: tuple[int, int]
    prob: np.ndarray  # (S, S) float32
    image_score: Optional[float]


@dataclass
class ScoreResult:
    rows: list[tuple[str, str]]  # (case_id, annotation), sorted by case_id
    errors: list[dict] = field(default_factory=list)  # {"case_id", "path", "reason"}


# ----------------------------------------------------------------------------- input

def _check(item: tuple[str, str], max_pixels: int) -> Optional[dict]:
    case_id, path = item
    try:
        check_file(path, max_pixels)
    except BadInput as exc:
        return {"case_id": case_id, "path": path, "reason": exc.reason}
    return None


def precheck(items: Sequence[tuple[str, str]], max_pixels: int = MAX_PIXELS, threads: int = 8,
             ) -> tuple[list[tuple[str, str]], list[dict]]:
    """Split (case_id, path) into readable files and error records, before TF sees any bytes.

    Threads: the check is file I/O plus a header parse, and the OS cache then
    serves the same bytes to tf.data.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda it: _check(it, max_pixels), items))
    good = [it for it, err in zip(items, results) if err is None]
    return good, [err for err in results if err is not None]


def image_dataset(items: Sequence[tuple[str, str]], image_size: int, batch_size: int) -> tf.data.Dataset:
    """Batches of (case_ids, uint8 images [B, S, S, 3], original (H, W) [B, 2]).

    A file whose decoding still fails is dropped here (``ignore_errors``) and
    picked up by ``predict_items``, which compares the case ids that came out.
    """
    ids = tf.constant([c for c, _ in items], tf.string)
    paths = tf.constant([p for _, p in items], tf.string)

    def load_one(case_id, path):
        image = decode_rgb8_tf(tf.io.read_file(path))
        return case_id, resize_to_model(image, image_size), tf.shape(image)[:2]

    ds = tf.data.Dataset.from_tensor_slices((ids, paths))
    ds = ds.map(load_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _split_output(case_ids, hws, probs, scores) -> Iterator[Prediction]:
    for k in range(len(case_ids)):
        cid = case_ids[k].decode() if isinstance(case_ids[k], bytes) else str(case_ids[k])
        yield Prediction(cid, (int(hws[k][0]), int(hws[k][1])), probs[k],
                         None if scores is None else float(scores[k]))


def iter_predictions(model: ExportedModel, items: Sequence[tuple[str, str]], batch_size: int,
                     errors: list, progress: bool = True) -> Iterator[Prediction]:
    """Model outputs for every readable file, streamed; an error record appended to ``errors`` for the rest.

    Streamed so that a large corpus never holds all probability maps at once.
    Counts add up: predictions yielded + errors appended == ``len(items)``.
    """
    good, bad = precheck(items)
    errors.extend(bad)
    bar = tqdm(total=len(items), desc="scoring", unit="img", disable=not progress, file=sys.stderr)
    bar.update(len(bad))
    seen = set()
    for ids, images, hws in image_dataset(good, model.image_size, batch_size):
        probs, scores = model.predict(images)
        for pred in _split_output(ids.numpy(), hws.numpy(), probs, scores):
            seen.add(pred.case_id)
            yield pred
        bar.update(len(probs))
    # Files TF could not decode although their header was fine: the reference decoder decides.
    for case_id, path in good:
        if case_id in seen:
            continue
        try:
            image = read_rgb8(path)
        except BadInput as exc:
            errors.append({"case_id": case_id, "path": path, "reason": exc.reason})
        else:
            resized = resize_to_model(tf.constant(image), model.image_size)[None]
            probs, scores = model.predict(resized)
            yield from _split_output([case_id], [image.shape[:2]], probs, scores)
        bar.update(1)
    bar.close()


def predict_items(model: ExportedModel, items: Sequence[tuple[str, str]], batch_size: int,
                  progress: bool = True) -> tuple[list[Prediction], list[dict]]:
    """All predictions in a list (calibration re-post-processes them many times), and the errors."""
    errors: list[dict] = []
    preds = list(iter_predictions(model, items, batch_size, errors, progress))
    return preds, errors


# ----------------------------------------------------------------------------- output

def annotate(pred: Prediction, cfg: PostprocessConfig) -> str:
    return rle.encode(instances(pred.prob, pred.orig_hw, cfg, pred.image_score))


def submission_rows(preds: Iterable[Prediction], errors: Sequence[dict],
                    cfg: PostprocessConfig) -> list[tuple[str, str]]:
    """One (case_id, annotation) per image, sorted by case_id; unreadable files are ``authentic``.

    ``preds`` may be a stream that appends to ``errors`` as it goes: it is consumed first.
    """
    rows = {p.case_id: annotate(p, cfg) for p in preds}
    for err in errors:
        rows.setdefault(err["case_id"], rle.AUTHENTIC)
    return sorted(rows.items())


def format_csv(rows: Sequence[tuple[str, str]]) -> str:
    """The submission text; annotations contain commas, so fields are CSV-quoted."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buf.getvalue()


def errors_path(output: str) -> str:
    """``submission.csv`` -> ``submission.errors.jsonl``."""
    return os.path.splitext(output)[0] + ".errors.jsonl"


def write_outputs(output: str, rows: Sequence[tuple[str, str]], errors: Sequence[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", newline="") as f:
        f.write(format_csv(rows))
    with open(errors_path(output), "w") as f:
        for err in sorted(errors, key=lambda e: e["case_id"]):
            f.write(json.dumps(err) + "\n")


def config_with_overrides(base: PostprocessConfig, threshold=None, min_area=None,
                          image_threshold=None) -> PostprocessConfig:
    """metadata.json's values unless a flag says otherwise."""
    over = {k: v for k, v in (("threshold", threshold), ("min_area", min_area),
                              ("image_threshold", image_threshold)) if v is not None}
    return replace(base, **over)


def score_images(model: ExportedModel, input_dir: str, batch_size: int = 16,
                 cfg: Optional[PostprocessConfig] = None, progress: bool = True) -> ScoreResult:
    """Score every image in ``input_dir`` (or its ``test_images/``); ``cfg`` defaults to metadata.json's."""
    errors: list[dict] = []
    stream = iter_predictions(model, discover_test_images(input_dir), batch_size, errors, progress)
    return ScoreResult(submission_rows(stream, errors, cfg or model.postprocess), errors)


def score_folder(model_dir: str, input_dir: str, batch_size: int = 16,
                 cfg: Optional[PostprocessConfig] = None, progress: bool = True) -> ScoreResult:
    """``score_images`` with the model loaded from ``model_dir``."""
    return score_images(load(model_dir), input_dir, batch_size, cfg, progress)


# ----------------------------------------------------------------------------- CLI

def define_flags() -> None:
    """The flags serving.score and serving.beam_score share."""
    flags.DEFINE_string("model_dir", None, "MODEL_DIR (with export/) or the export dir itself.", required=True)
    flags.DEFINE_string("input_dir", None, "Folder of images (or a dataset root with test_images/).", required=True)
    flags.DEFINE_string("output", "submission.csv", "Submission CSV to write.")
    flags.DEFINE_integer("batch_size", 16, "Images per model call.")
    flags.DEFINE_float("threshold", None, "Pixel probability threshold (default: metadata.json).")
    flags.DEFINE_integer("min_area", None, "Minimum component area in model pixels (default: metadata.json).")
    flags.DEFINE_float("image_threshold", None, "Image-level evidence bar (default: metadata.json).")
    flags.DEFINE_bool("strict", False, "Exit non-zero if any file could not be read.")


def calibration_note(metadata: dict, overridden: bool) -> Optional[str]:
    """A warning when the export still carries the seed's post-processing: scoring before
    ``serving.calibrate`` is the easiest way to lose score (benchmarks/quality.py: test oF1
    0.463 before, 0.580 after). None once calibrated or when the user set the values."""
    if "calibration" in metadata or overridden:
        return None
    return ("note: this export's post-processing is not calibrated (the seed's threshold 0.45 / min area 32); "
            "run `python -m serving.calibrate --model_dir MODEL_DIR --data_dir RECORDS` first "
            "(in benchmarks/quality.py it lifted test oF1 from 0.463 to 0.580)")


def flag_postprocess(metadata: dict) -> tuple[PostprocessConfig, Optional[str]]:
    """What the shared flags ask for: metadata.json's post-processing with any flag overrides, and
    the calibration note when no flag was set on an uncalibrated export."""
    f = flags.FLAGS
    given = (f.threshold, f.min_area, f.image_threshold)
    cfg = config_with_overrides(PostprocessConfig.from_dict(metadata.get("postprocess")), *given)
    return cfg, calibration_note(metadata, overridden=any(v is not None for v in given))


def report(output: str, result: ScoreResult, strict: bool) -> int:
    """Print the summary; the exit code (non-zero only with --strict and errors)."""
    forged = sum(a != rle.AUTHENTIC for _, a in result.rows)
    print(f"wrote {output}: {len(result.rows)} images, {forged} predicted forged, "
          f"{len(result.errors)} unreadable (listed in {errors_path(output)})")
    for err in result.errors[:10]:
        print(f"  {err['path']}: {err['reason']}")
    return 1 if strict and result.errors else 0


def main(argv):
    del argv
    f = flags.FLAGS
    try:
        model = load(f.model_dir)
        cfg, note = flag_postprocess(model.metadata)
        print(f"model {model.export_dir} (input {model.image_size} px), post-processing {cfg.to_dict()}")
        if note:
            print(note)
        result = score_images(model, f.input_dir, f.batch_size, cfg)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}")
    write_outputs(f.output, result.rows, result.errors)
    return report(f.output, result, f.strict)


if __name__ == "__main__":
    define_flags()
    app.run(main)
