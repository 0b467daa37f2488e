"""The network detector: the exported SavedModel's predictions for image files, streamed.

A tf.data pipeline reads, decodes (``serving.decode``, the conversion of preprocessing.images),
resizes, batches and prefetches in parallel while the model runs. Every file is accounted for: a
prediction, or an error record ``{"case_id", "path", "reason"}``.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from preprocessing.cases import discover_test_images
from preprocessing.constants import EVIDENCE_CHANNELS
from preprocessing.errors import BadInput
from preprocessing.images import MAX_PIXELS, check_file, read_rgb8
from serving.decode import load_for_model, resize_to_model
from serving.postprocess import PostprocessConfig, Prediction
from serving.saved_model import ExportedModel, load
from serving.submission import ScoreResult, submission_rows, with_errors

PRECHECK_THREADS = 8  # header checks are file I/O: threads overlap it, and the OS cache then serves tf.data


def _check(item: tuple[str, str], max_pixels: int) -> Optional[dict]:
    case_id, path = item
    try:
        check_file(path, max_pixels)
    except BadInput as exc:
        return {"case_id": case_id, "path": path, "reason": exc.reason}
    return None


def precheck(items: Sequence[tuple[str, str]], max_pixels: int = MAX_PIXELS, threads: int = PRECHECK_THREADS,
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


EvidenceFn = Callable[[str], np.ndarray]  # case_id -> the matcher's evidence map at the image's own size


def _evidence_tensor(case_id: tf.Tensor, evidence_for: EvidenceFn) -> tf.Tensor:
    def lookup(cid):
        return np.ascontiguousarray(evidence_for(cid.decode() if isinstance(cid, bytes) else str(cid)))

    out = tf.numpy_function(lookup, [case_id], tf.uint8, stateful=False)
    return tf.ensure_shape(out, [None, None, len(EVIDENCE_CHANNELS)])


def image_dataset(items: Sequence[tuple[str, str]], image_size: int, batch_size: int,
                  evidence_for: Optional[EvidenceFn] = None) -> tf.data.Dataset:
    """Batches of (case_ids, uint8 images [B, S, S, 3], original (H, W) [B, 2]) and, with
    ``evidence_for``, uint8 evidence maps [B, S, S, E] resized exactly as their images.

    A file whose decoding still fails is dropped here (``ignore_errors``) and
    picked up by ``predict_items``, which compares the case ids that came out.
    """
    ids = tf.constant([c for c, _ in items], tf.string)
    paths = tf.constant([p for _, p in items], tf.string)

    def load_one(case_id, path):
        image, hw = load_for_model(path, image_size)
        out = (case_id, image, hw)
        if evidence_for is None:
            return out
        return out + (resize_to_model(_evidence_tensor(case_id, evidence_for), image_size),)

    ds = tf.data.Dataset.from_tensor_slices((ids, paths))
    ds = ds.map(load_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def evidence_function(model: ExportedModel, items: Sequence[tuple[str, str]], detections: Optional[dict],
                      workers: int, progress: bool) -> Optional[EvidenceFn]:
    """For a model that takes the matcher's evidence: the map of each item from its Detection
    (``detections`` given, or computed here by the matcher's process pool); else None."""
    if not model.uses_evidence:
        return None
    from preprocessing.matching.evidence import evidence_map

    if detections is None:
        from serving.matcher import config_for, detections_of

        detections = detections_of(items, config_for(True), workers, progress)
    return lambda case_id: evidence_map(detections[case_id])


def _split_output(case_ids, hws, probs, scores) -> Iterator[Prediction]:
    for k in range(len(case_ids)):
        cid = case_ids[k].decode() if isinstance(case_ids[k], bytes) else str(case_ids[k])
        yield Prediction(cid, (int(hws[k][0]), int(hws[k][1])), probs[k],
                         None if scores is None else float(scores[k]))


def iter_predictions(model: ExportedModel, items: Sequence[tuple[str, str]], batch_size: int,
                     errors: list, progress: bool = True, detections: Optional[dict] = None,
                     workers: int = 1) -> Iterator[Prediction]:
    """Model outputs for every readable file, streamed; an error record appended to ``errors`` for the rest.

    Streamed so that a large corpus never holds all probability maps at once. A model that takes
    the matcher's evidence gets it from ``detections`` (case_id -> Detection) or from the matcher
    run here in ``workers`` processes. Counts add up: predictions yielded + errors appended ==
    ``len(items)``.
    """
    good, bad = precheck(items)
    errors.extend(bad)
    evidence_for = evidence_function(model, good, detections, workers, progress)
    bar = tqdm(total=len(items), desc="scoring", unit="img", disable=not progress, file=sys.stderr)
    bar.update(len(bad))
    seen = set()
    for ids, images, hws, *evidence in image_dataset(good, model.image_size, batch_size, evidence_for):
        probs, scores = model.predict(images, *evidence)
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
            evidence = None if evidence_for is None else resize_to_model(
                tf.constant(evidence_for(case_id)), model.image_size)[None]
            probs, scores = model.predict(resized, evidence)
            yield from _split_output([case_id], [image.shape[:2]], probs, scores)
        bar.update(1)
    bar.close()


def predict_items(model: ExportedModel, items: Sequence[tuple[str, str]], batch_size: int,
                  progress: bool = True, detections: Optional[dict] = None,
                  workers: int = 1) -> tuple[list[Prediction], list[dict]]:
    """All predictions in a list (calibration re-post-processes them many times), and the errors."""
    errors: list[dict] = []
    preds = list(iter_predictions(model, items, batch_size, errors, progress, detections, workers))
    return preds, errors


def score_items(items: Sequence[tuple[str, str]], model: ExportedModel, cfg: Optional[PostprocessConfig] = None,
                batch_size: int = 16, workers: int = 1, progress: bool = True) -> tuple[ScoreResult, list[dict]]:
    """Submission rows for every (case_id, path) item (unreadable files ``authentic``) and the
    evidence records, which the network has none of: the shape of every detector's ``score_items``.
    ``cfg`` defaults to metadata.json's post-processing; ``workers``: processes for the matcher
    when the model takes its evidence."""
    errors: list[dict] = []
    stream = iter_predictions(model, items, batch_size, errors, progress, workers=workers)
    return ScoreResult(submission_rows(stream, errors, cfg or model.postprocess), errors), []


def score_folder(model_dir: str, input_dir: str, batch_size: int = 16,
                 cfg: Optional[PostprocessConfig] = None, progress: bool = True) -> ScoreResult:
    """``score_items`` for every image in ``input_dir`` (or its ``test_images/``), with the model
    loaded from ``model_dir``."""
    items, problems = discover_test_images(input_dir)
    result, _ = score_items(items, load(model_dir), cfg, batch_size, progress=progress)
    return with_errors(result, [pr.record() for pr in problems])
