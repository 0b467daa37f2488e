"""The competition metric (oF1): one implementation, used by evaluate, calibrate and training.

Per image: pixel F1 between every predicted and every true instance; Hungarian
matching on -F1 (rows padded with zeros when there are fewer predictions than
truths); mean matched F1 times ``len(gt) / max(len(pred), len(gt))``. An
authentic image scores 1 only when predicted authentic; a forged image
predicted authentic scores 0. The dataset score is the mean over images.

Solutions come with ``height``,``width`` columns (this project's files) or, as in the competition's
own files, a ``shape`` column: ``"[height, width]"``, or ``"authentic"`` for an authentic image (its
size is not needed: it scores by label). ``official_rejection`` says which annotations the
competition's scorer refuses outright, failing the whole submission.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from preprocessing import rle
from preprocessing.errors import UsageError
from preprocessing.images import MAX_PIXELS


def pixels_of(mask: np.ndarray) -> np.ndarray:
    """The flat indices of a mask's set pixels (the form ``f1_matrix`` scores)."""
    return np.flatnonzero(np.asarray(mask).reshape(-1) > 0)


def _indicator(instances: Sequence[np.ndarray], size: int):
    """Sparse (instances x pixels) 0/1 matrix of pixel-index arrays."""
    from scipy.sparse import csr_matrix

    lengths = [len(px) for px in instances]
    indices = np.concatenate(instances) if sum(lengths) else np.zeros(0, np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return csr_matrix((np.ones(len(indices), np.float64), indices, indptr), shape=(len(instances), size))


def f1_matrix(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> np.ndarray:
    """(max(P, G), G) pixel-F1 matrix; rows beyond P are zero padding. Instances are masks, or
    arrays of pixel indices (``pixels_of``, ``rle.decode_pixels``: one flattening for both sides);
    overlaps are counted sparsely, so memory follows the instances' areas, not their number x H x W."""
    pred, gt = [_flat(m) for m in pred], [_flat(m) for m in gt]
    n_pred, n_gt = len(pred), len(gt)
    out = np.zeros((max(n_pred, n_gt), n_gt), dtype=np.float64)
    if n_pred == 0 or n_gt == 0:
        return out
    size = 1 + max((int(px.max()) for px in pred + gt if len(px)), default=0)
    tp = (_indicator(pred, size) @ _indicator(gt, size).T).toarray()
    denom = np.array([len(px) for px in pred], np.float64)[:, None] + np.array([len(px) for px in gt])[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:n_pred] = np.where(denom > 0, 2.0 * tp / denom, 0.0)  # 2TP / (2TP + FP + FN)
    return out


def pair_f1(pair: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """How well two predicted instances match a true (source, copy) pair: the lower F1 of the two,
    in the better of the two pairings (which of two matching regions is the copy is not scored)."""
    f = f1_matrix(pair, truth)
    return float(max(min(f[0, 0], f[1, 1]), min(f[0, 1], f[1, 0])))


def _flat(instance: np.ndarray) -> np.ndarray:
    a = np.asarray(instance)
    return a.astype(np.int64) if a.ndim == 1 else pixels_of(a)


def instance_of1(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> float:
    """oF1 of one forged image's predicted instances against its true instances."""
    if len(gt) == 0:
        raise ValueError("instance_of1 needs at least one true instance (authentic images score by label)")
    if len(pred) == 0:
        return 0.0
    matrix = f1_matrix(pred, gt)
    rows, cols = linear_sum_assignment(-matrix)
    penalty = len(gt) / max(len(pred), len(gt))
    return float(np.mean(matrix[rows, cols]) * penalty)


def image_score(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> float:
    """Score of one image: label agreement for authentic truth, oF1 for forged truth."""
    if len(gt) == 0:
        return 1.0 if len(pred) == 0 else 0.0
    return instance_of1(pred, gt)


@dataclass
class Evaluation:
    """Dataset-level result; ``per_image`` has one row per solution row."""

    summary: dict
    per_image: pd.DataFrame = field(repr=False)


def _whole(value) -> int:
    """An integer read from a CSV cell (pandas gives 320.0 for a column with a blank): 319.7 is an
    error, never truncated to 319."""
    if isinstance(value, str):
        return int(value)
    if not float(value).is_integer():
        raise ValueError(value)
    return int(value)


SHAPE = "shape"  # the competition's solution column: "[height, width]", or "authentic" (no size given)


def solution_size(rec) -> Optional[tuple[int, int]]:
    """(height, width) of a solution row, None for an authentic row whose file gives no size, or an
    error naming the row."""
    if pd.isna(rec.height) and pd.isna(rec.width) and str(rec.annotation).strip().lower() == rle.AUTHENTIC:
        return None
    try:
        h, w = _whole(rec.height), _whole(rec.width)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"solution row {rec.case_id!r}: height {rec.height!r} / width {rec.width!r} are not "
                         "integers") from None
    if h < 1 or w < 1:
        raise UsageError(f"solution row {rec.case_id!r}: height {h} / width {w} must be >= 1")
    if h * w > MAX_PIXELS:
        raise UsageError(f"solution row {rec.case_id!r}: {w}x{h} = {h * w} pixels exceeds the limit of {MAX_PIXELS} "
                         "(no image that large is read by any command: preprocessing.images.MAX_PIXELS)")
    return h, w


def parse_shape(case_id, text) -> tuple:
    """(height, width) of a ``shape`` cell, ``(None, None)`` for ``authentic``; an error names the row."""
    if str(text).strip().lower() == rle.AUTHENTIC:
        return None, None
    try:
        size = json.loads(str(text))
    except json.JSONDecodeError:
        size = None
    if not (isinstance(size, list) and len(size) == 2):
        raise UsageError(f"solution row {case_id!r}: shape {text!r} is not \"[height, width]\" or \"authentic\"")
    return size[0], size[1]


def with_size_columns(solution: pd.DataFrame) -> pd.DataFrame:
    """The solution with ``height``,``width`` columns, taken from its ``shape`` column when it has no
    such columns (the competition's own format); unchanged otherwise."""
    if {"height", "width"} <= set(solution.columns) or SHAPE not in solution.columns:
        return solution
    sizes = [parse_shape(case_id, shape) for case_id, shape in zip(solution["case_id"], solution[SHAPE])]
    return solution.assign(height=[h for h, _ in sizes], width=[w for _, w in sizes])


def official_rejection(annotation) -> Optional[str]:
    """Why the competition's scorer would refuse this submission annotation, or None.

    It decodes each instance's ``[start, length, ...]`` as JSON and raises (failing the whole
    submission, not just the row) when the starts are not in ascending order or a run reaches into
    the next one. This project's decoder refuses those rows too, but scores them 0 and goes on."""
    text = "" if pd.isna(annotation) else str(annotation).strip()
    if text.lower() == rle.AUTHENTIC:
        return None
    for k, part in enumerate(text.split(";")):
        try:
            runs = json.loads(part)
        except json.JSONDecodeError:
            return f"instance {k} is not a JSON list"
        if not isinstance(runs, list) or len(runs) % 2:
            return f"instance {k} is not a list of start, length pairs"
        starts, lengths = runs[0::2], runs[1::2]
        for i in range(len(starts) - 1):
            if starts[i + 1] < starts[i]:
                return f"instance {k}: run starts not ascending ({starts[i + 1]} after {starts[i]})"
            if starts[i] + lengths[i] > starts[i + 1]:
                return (f"instance {k}: overlapping runs ({starts[i]}+{lengths[i]} reaches past the next "
                        f"start {starts[i + 1]})")
    return None


def _duplicates(ids: pd.Series) -> list[str]:
    return sorted(set(ids[ids.duplicated()]))


def whitespace_mismatches(missing: set, extra: set) -> list[tuple[str, str]]:
    """(solution id, submission id) pairs that differ only by surrounding whitespace."""
    by_stripped = {e.strip(): e for e in extra}
    return sorted((m, by_stripped[m.strip()]) for m in missing if m.strip() in by_stripped)


def evaluate_frames(solution: pd.DataFrame, submission: pd.DataFrame) -> Evaluation:
    """Score a submission against a solution (``case_id,annotation,height,width`` or
    ``case_id,annotation,shape``).

    Solution rows missing from the submission and unparseable submission annotations score 0 and
    are counted; they never stop the run. A solution that repeats a case id is refused (which row
    is the truth?); a submission that repeats one is scored on its first row and the repeats are
    reported.
    """
    for col in ("case_id", "annotation"):
        if col not in solution.columns:
            raise UsageError(f"solution is missing column {col!r} (has {list(solution.columns)})")
    solution = with_size_columns(solution)
    for col in ("height", "width"):
        if col not in solution.columns:
            raise UsageError(f"solution is missing column {col!r} or {SHAPE!r} (has {list(solution.columns)})")
    for col in ("case_id", "annotation"):
        if col not in submission.columns:
            raise UsageError(f"submission is missing column {col!r} (has {list(submission.columns)})")
    solution = solution.astype({"case_id": str})
    repeated = _duplicates(solution["case_id"])
    if repeated:
        raise UsageError(f"solution repeats case id(s) {', '.join(map(repr, repeated[:10]))}: each image must "
                         "appear once")
    submission = submission.astype({"case_id": str})
    duplicate_ids = _duplicates(submission["case_id"])  # only the first row of a repeated case_id counts
    sub = submission.drop_duplicates("case_id", keep="first").set_index("case_id")["annotation"]
    rows = []
    for rec in solution.itertuples(index=False):
        size = solution_size(rec)
        try:
            gt = rle.decode_pixels(str(rec.annotation), *size) if size else []
        except rle.RLEError as exc:  # the ground truth itself is broken: stop, naming the row
            raise rle.RLEError(f"solution row {rec.case_id!r}: {exc}") from exc
        row = {"case_id": rec.case_id, "true_forged": bool(gt), "status": "ok", "pred_forged": False}
        if rec.case_id not in sub.index:
            row.update(status="missing", score=0.0)
        else:
            ann = sub.loc[rec.case_id]
            text = "" if pd.isna(ann) else str(ann)
            row["official_rejection"] = official_rejection(text)
            try:
                # no size given (an authentic row of the competition's format): the label decides
                pred = rle.decode_pixels(text, *size) if size else rle.parse(text)
                row.update(pred_forged=bool(pred), score=image_score(pred, gt))
            except rle.RLEError as exc:
                row.update(status="unparseable", score=0.0, error=str(exc))
        rows.append(row)
    per_image = pd.DataFrame(rows, columns=["case_id", "true_forged", "pred_forged", "status", "score", "error",
                                            "official_rejection"])
    n = len(per_image)
    tf_, pf = per_image["true_forged"].astype(bool), per_image["pred_forged"].astype(bool)
    scored = per_image["status"] == "ok"
    missing = set(per_image.loc[per_image["status"] == "missing", "case_id"])
    extra = set(sub.index) - set(per_image["case_id"])
    summary = {
        "oF1": float(per_image["score"].mean()) if n else 0.0,
        "images": n,
        "missing": len(missing),
        "unparseable": int((per_image["status"] == "unparseable").sum()),
        "true_forged": int(tf_.sum()),
        "true_authentic": int((~tf_).sum()),
        "pred_forged": int((pf & scored).sum()),
        "pred_authentic": int((~pf & scored).sum()),
        "forged_detected": int((tf_ & pf & scored).sum()),
        "authentic_false_positive": int((~tf_ & pf & scored).sum()),
        "oF1_forged": float(per_image.loc[tf_, "score"].mean()) if tf_.any() else None,
        "oF1_authentic": float(per_image.loc[~tf_, "score"].mean()) if (~tf_).any() else None,
        "extra_submission_rows": len(extra),
        "duplicate_submission_rows": int(submission["case_id"].duplicated().sum()),
        "duplicate_submission_ids": duplicate_ids,
        "ids_differing_by_whitespace": [list(p) for p in whitespace_mismatches(missing, extra)],
        "official_rejections": int(per_image["official_rejection"].notna().sum()),
    }
    return Evaluation(summary=summary, per_image=per_image)
