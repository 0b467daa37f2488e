"""Dataset (and prediction) report: the exploratory analysis people run before training, as one HTML page.

    python -m preprocessing.report --input_dir DATA --output_dir REPORT \
        [--submission submission.csv] [--max_images N] [--allow_pickle_masks]

writes REPORT/index.html, one PNG per figure, stats.json (the numbers on the
page, for machines), problems.csv and, with --submission, submission_scores.csv.
Counts come from case discovery over the whole corpus; everything that opens a
file (geometry, masks, forensic features, pictures) runs on a seeded sample of
at most --max_images training images (and as many test images), so the report
stays cheap on big corpora. A bad file never stops the report: it becomes a
row of the problems table, naming the case and the reason.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from preprocessing import report_figures as figs
from preprocessing.cases import AUTHENTIC, FORGED, LABEL_NAMES, Case, discover_test_images, \
    discover_training_cases
from preprocessing.errors import BadInput
from preprocessing.images import MAX_PIXELS, decode_rgb8, image_size, read_rgb8
from preprocessing.masks import load_mask
from serving import metric, rle

ELA_QUALITY, ELA_SCALE = 95, 10  # the first seed's error-level analysis
FEATURE_SIZE = 256  # forensic features are computed where the model sees them: the resized model input
PIXELS_PER_GROUP = 1500  # sampled pixels per image and pixel group for the feature distributions
PEEK_MAX_SIDE = 384  # template matching runs on a downscaled copy (the seed used scale 0.5)
GRID_TILES, PAIR_COLUMNS, PEEK_TILES, PREDICTION_ROWS = 12, 4, 6, 6
THUMB_SIDE = 256
MAX_TABLE_ROWS = 200  # longer tables are cut on the page; the CSV next to it has every row
GROUPS = ("forged region", "rest of forged image", "authentic image")


# ----------------------------------------------------------------------------- per-image measurements

def header_info(data: bytes, path: str) -> dict:
    """Width, height, colour mode and bits per sample from the file header (no pixel decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            mode, fmt = im.mode, im.format
            rawmode = im.tile[0][3] if im.tile else ""
    except Image.DecompressionBombError as exc:
        raise BadInput(path, f"too_large: {exc}") from exc
    except Exception as exc:
        raise BadInput(path, f"not_an_image: cannot read header ({type(exc).__name__}: {exc})") from exc
    return {"width": width, "height": height, "mode": mode, "format": fmt, "bits": bits_per_sample(mode, rawmode)}


def bits_per_sample(mode: str, rawmode) -> int:
    """PIL reports 16-bit RGB PNG/TIFF as mode RGB; the raw mode ("RGB;16B") keeps the true depth."""
    raw = rawmode[0] if isinstance(rawmode, tuple) and rawmode else rawmode
    found = re.search(r";(\d+)", raw if isinstance(raw, str) else "") or re.search(r";(\d+)", mode)
    if found:
        return int(found.group(1))
    return {"1": 1, "I": 32, "F": 32}.get(mode, 8)


def noise_residual(rgb: np.ndarray) -> np.ndarray:
    """Gray minus its 5x5 binomial blur, min-max normalised to [0, 1].

    Mirrors trainer.layers.NoiseResidual (the model's second stream), which this
    package must not import: float BT.601 gray without rounding, OpenCV's
    GaussianBlur(ksize 5, sigma 0) = binomial [1,4,6,4,1]/16 with reflect-101 borders.
    """
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    residual = gray - cv2.GaussianBlur(gray, (5, 5), 0, borderType=cv2.BORDER_REFLECT_101)
    lo, hi = float(residual.min()), float(residual.max())
    return (residual - lo) / (hi - lo + 1e-7)


def error_level(rgb: np.ndarray, quality: int = ELA_QUALITY, scale: float = ELA_SCALE) -> np.ndarray:
    """Error-level analysis as the first seed computes it: |image - JPEG(q)| averaged over channels, x scale."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    recompressed = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.abs(bgr.astype(np.float32) - recompressed.astype(np.float32)).mean(axis=2) * scale


def instance_metrics(mask: np.ndarray) -> dict:
    """Area, bounding box, aspect (w/h) and compactness (perimeter^2 / area) of one instance."""
    ys, xs = np.nonzero(mask)
    x1, x2, y1, y2 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    w, h = x2 - x1 + 1, y2 - y1 + 1
    area = int(len(xs))
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    perimeter = float(sum(cv2.arcLength(c, True) for c in contours))
    return {"area_px": area, "area_fraction": area / mask.size, "bbox_x": x1, "bbox_y": y1,
            "bbox_w": w, "bbox_h": h, "bbox_fraction": w * h / mask.size, "aspect": w / h,
            "compactness": perimeter ** 2 / area}


def bbox(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


def template_peek(rgb: np.ndarray, instances, max_side: int = PEEK_MAX_SIDE) -> tuple[np.ndarray, list[dict]]:
    """Search each instance's bounding-box patch elsewhere in the image (cv2.matchTemplate).

    Windows overlapping the patch's own box by more than half its width and
    height are masked out, so the best hit is the copy, not the patch itself.
    ``on_other_instance`` says whether that hit lands on another instance's box
    (IoU >= 0.5): the copy-move signature the annotation predicts.
    """
    small, insts, _ = figs.thumbnail(rgb, instances, max_side)
    boxes = [bbox(m) for m in insts]
    H, W = small.shape[:2]
    hits = []
    for k, box in enumerate(boxes):
        if box is None:
            continue
        x, y, w, h = box
        if w < 4 or h < 4 or w >= W or h >= H:
            continue  # too small to match, or no room for a copy of that size
        res = cv2.matchTemplate(small, small[y:y + h, x:x + w], cv2.TM_CCOEFF_NORMED)
        res = np.nan_to_num(res, nan=-1.0, posinf=-1.0, neginf=-1.0)  # flat patches give NaN
        res[max(0, y - h // 2):y + h // 2 + 1, max(0, x - w // 2):x + w // 2 + 1] = -np.inf
        if not np.isfinite(res).any():
            continue
        hy, hx = np.unravel_index(int(np.argmax(res)), res.shape)
        hit = (int(hx), int(hy), w, h)
        others = [b for j, b in enumerate(boxes) if j != k and b is not None]
        hits.append({"instance": k, "source": box, "hit": hit, "score": float(res[hy, hx]),
                     "on_other_instance": any(box_iou(hit, b) >= 0.5 for b in others)})
    return small, hits


def sample_pixels(rng: np.random.Generator, values: np.ndarray, where: np.ndarray, n: int) -> np.ndarray:
    picked = values[where]
    if len(picked) > n:
        picked = rng.choice(picked, n, replace=False)
    return picked.astype(np.float32)


# ----------------------------------------------------------------------------- the analysis pass

@dataclass
class Collected:
    images: list = field(default_factory=list)  # one row per image opened (train + test)
    masks: list = field(default_factory=list)  # one row per forged image with a usable mask
    instances: list = field(default_factory=list)  # one row per instance
    peeks: list = field(default_factory=list)  # one row per template-matching hit
    problems: list = field(default_factory=list)
    features: dict = field(default_factory=lambda: {f: {g: [] for g in GROUPS} for f in ("noise", "ela")})
    contrasts: list = field(default_factory=list)  # per forged image: feature mean in region - rest
    thumbs: dict = field(default_factory=dict)  # uid -> thumbnail tile (only for the pictured cases)
    peek_tiles: list = field(default_factory=list)


def _rel(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


def problem_row(case_id: str, label: Optional[int], source: str, path: str, reason: str, root: str) -> dict:
    return {"case_id": case_id, "label": LABEL_NAMES.get(label, "") if label is not None else "",
            "source": source, "path": _rel(path, root), "tag": reason.split(":", 1)[0].strip(),
            "reason": reason}


def uid(case: Case) -> str:
    """Unique within a dataset: the same case_id can be authentic and forged, in train and supplemental."""
    return f"{case.source}/{case.key}"


def stratified_sample(cases: list[Case], max_images: int, rng: np.random.Generator) -> list[Case]:
    """At most ``max_images`` cases, each label kept in proportion (at least one of each), in shuffled order."""
    order = [cases[i] for i in rng.permutation(len(cases))]
    if max_images <= 0 or len(cases) <= max_images:
        return order
    by_label = {lab: [c for c in order if c.label == lab] for lab in (AUTHENTIC, FORGED)}
    quota = {lab: max(1, round(max_images * len(v) / len(cases))) if v else 0 for lab, v in by_label.items()}
    while sum(quota.values()) > max_images:
        quota[max(quota, key=quota.get)] -= 1
    keep = {uid(c) for lab, v in by_label.items() for c in v[:quota[lab]]}
    return [c for c in order if uid(c) in keep]


def choose_pictured(sample: list[Case]) -> dict:
    """Which cases the pictures show, decided before the pass so only their thumbnails are kept."""
    forged = [c for c in sample if c.label == FORGED and c.mask_path]
    authentic = [c for c in sample if c.label == AUTHENTIC]
    forged_ids = {c.case_id: c for c in forged}
    paired = [(a, forged_ids[a.case_id]) for a in authentic if a.case_id in forged_ids][:PAIR_COLUMNS]
    used = {uid(c) for pair in paired for c in pair}
    rest_a = [a for a in authentic if uid(a) not in used]
    rest_f = [f for f in forged if uid(f) not in used]
    while len(paired) < PAIR_COLUMNS and (rest_a or rest_f):
        paired.append((rest_a.pop(0) if rest_a else None, rest_f.pop(0) if rest_f else None))
    return {"grid": [uid(c) for c in forged[:GRID_TILES]], "peek": {uid(c) for c in forged[:PEEK_TILES]},
            "pairs": [(uid(a) if a else None, uid(f) if f else None) for a, f in paired]}


def _tile(case: Case, rgb: np.ndarray, instances) -> dict:
    small, insts, s = figs.thumbnail(rgb, list(instances), THUMB_SIDE)
    boxes = []
    for m in instances:
        b = bbox(m)
        boxes.append(tuple(v * s for v in b))
    h, w = rgb.shape[:2]
    return {"title": f"{LABEL_NAMES[case.label]} {case.case_id} ({w}x{h}, {len(instances)} inst)",
            "rgb": small, "instances": insts, "boxes": boxes}


def analyse_case(case: Case, root: str, opts: "Options", rng: np.random.Generator, keep_thumb: bool,
                 keep_peek: bool, out: Collected) -> None:
    """Open one training image (and its mask) and add every measurement; bad files become problems."""
    def problem(path, reason):
        out.problems.append(problem_row(case.case_id, case.label, case.source, path, reason, root))

    try:
        with open(case.image_path, "rb") as f:
            data = f.read()
        head = header_info(data, case.image_path) if data else None
        rgb = decode_rgb8(data, case.image_path, opts.max_pixels)
    except OSError as exc:
        return problem(case.image_path, f"unreadable: {exc.strerror}")
    except BadInput as exc:
        return problem(case.image_path, exc.reason)
    h, w = rgb.shape[:2]
    out.images.append({"case_id": case.case_id, "label": LABEL_NAMES[case.label], "split": case.source,
                       **head, "aspect": w / h})
    instances = np.zeros((0, h, w), np.uint8)
    if case.label == FORGED:
        if not case.mask_path:
            return  # recorded as missing_mask by discovery
        try:
            mask = load_mask(case.mask_path, (h, w), allow_pickle=opts.allow_pickle_masks)
        except BadInput as exc:
            return problem(case.mask_path, exc.reason)
        for note in mask.notes:
            problem(case.mask_path, note if ":" in note else f"{note}: no forged pixel in any instance")
        if mask.empty:
            return
        instances = mask.instances
        union = mask.union
        out.masks.append({"case_id": case.case_id, "source": case.source, "instances": len(instances),
                          "forged_px": int(union.sum()), "total_px": h * w, "forged_fraction": float(union.mean())})
        for k, m in enumerate(instances):
            out.instances.append({"case_id": case.case_id, "instance": k + 1, **instance_metrics(m)})
        small, hits = template_peek(rgb, instances)
        for hit in hits:
            out.peeks.append({"case_id": case.case_id, "instance": hit["instance"] + 1, "score": hit["score"],
                              "on_other_instance": hit["on_other_instance"]})
        if keep_peek:
            out.peek_tiles.append({"title": f"{case.case_id}", "rgb": small, "hits": hits})
    add_features(rgb, instances, opts.feature_size, rng, out)
    if keep_thumb:
        out.thumbs[uid(case)] = _tile(case, rgb, instances)


def add_features(rgb: np.ndarray, instances: np.ndarray, size: int, rng: np.random.Generator,
                 out: Collected) -> None:
    """Noise residual and ELA at the model's input size; pixels sampled per group, per-image contrast."""
    if size > 0:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    union = np.zeros(rgb.shape[:2], bool)
    if len(instances):
        union = cv2.resize(instances.max(axis=0), (rgb.shape[1], rgb.shape[0]),
                           interpolation=cv2.INTER_NEAREST) > 0
    maps = {"noise": noise_residual(rgb), "ela": error_level(rgb)}
    contrast = {}
    for name, values in maps.items():
        if len(instances) == 0:
            out.features[name]["authentic image"].append(
                sample_pixels(rng, values, np.ones_like(union), PIXELS_PER_GROUP))
            continue
        if union.any():
            out.features[name]["forged region"].append(sample_pixels(rng, values, union, PIXELS_PER_GROUP))
        if (~union).any():
            out.features[name]["rest of forged image"].append(sample_pixels(rng, values, ~union, PIXELS_PER_GROUP))
        if union.any() and (~union).any():
            contrast[name] = float(values[union].mean() - values[~union].mean())
    if contrast:
        out.contrasts.append(contrast)


def analyse_test_images(tests: list[tuple[str, str]], root: str, out: Collected) -> None:
    """Header-only geometry for test images (they have no masks to analyse)."""
    for case_id, path in tqdm(tests, desc="test headers", unit="img", leave=False):
        try:
            with open(path, "rb") as f:
                data = f.read()
            if not data:
                raise BadInput(path, "empty_file: zero bytes")
            head = header_info(data, path)
        except OSError as exc:
            out.problems.append(problem_row(case_id, None, "test", path, f"unreadable: {exc.strerror}", root))
            continue
        except BadInput as exc:
            out.problems.append(problem_row(case_id, None, "test", path, exc.reason, root))
            continue
        out.images.append({"case_id": case_id, "label": "", "split": "test", **head,
                           "aspect": head["width"] / head["height"]})


# ----------------------------------------------------------------------------- submission scoring

def load_solution(root: str) -> dict:
    """case_id -> (annotation, h, w) from DATA/test_solution.csv, if present."""
    path = os.path.join(root, "test_solution.csv")
    if not os.path.isfile(path):
        return {}
    df = pd.read_csv(path, dtype={"case_id": str, "annotation": str}, keep_default_na=False)
    return {r.case_id: (r.annotation, int(r.height), int(r.width)) for r in df.itertuples(index=False)}


def train_truth_lookup(cases: list[Case]) -> dict:
    """case_id -> the case whose truth a submission row is scored against.

    A case id is often both an authentic image and its forged twin; the forged
    one (with a mask) wins, since a submission over train ids is almost always
    a check of how well forgeries are found.
    """
    rank = {}
    for c in cases:
        r = (c.label == FORGED and c.mask_path is not None, c.label == FORGED, c.source == "train")
        if c.case_id not in rank or r > rank[c.case_id][0]:
            rank[c.case_id] = (r, c)
    return {cid: c for cid, (_, c) in rank.items()}


def score_submission(sub_path: str, root: str, cases: list[Case], tests: list[tuple[str, str]],
                     opts: "Options") -> tuple[pd.DataFrame, list[dict]]:
    """Per-image oF1 (serving.metric.image_score) for every submission row whose truth is known."""
    sub = pd.read_csv(sub_path, dtype={"case_id": str, "annotation": str}, keep_default_na=False)
    for col in ("case_id", "annotation"):
        if col not in sub.columns:
            raise ValueError(f"{sub_path}: submission is missing column {col!r} (has {list(sub.columns)})")
    sub = sub.drop_duplicates("case_id", keep="first")
    solution, test_paths = load_solution(root), dict(tests)
    train = train_truth_lookup(cases)
    rows, shown, scored = [], [], 0
    limit = opts.max_images if opts.max_images > 0 else len(sub)
    for rec in tqdm(list(sub.itertuples(index=False)), desc="scoring submission", unit="img", leave=False):
        if scored >= limit:
            break
        row = {"case_id": rec.case_id, "truth": "", "true_instances": None, "pred_instances": None,
               "status": "ok", "score": np.nan}
        rows.append(row)
        try:
            gt, image_path, hw, row["truth"] = _truth(rec.case_id, solution, test_paths, train, opts)
        except BadInput as exc:
            row.update(status=f"no truth ({exc.reason.split(':', 1)[0]})")
            continue
        except rle.RLEError as exc:
            row.update(status=f"no truth (bad test_solution.csv row: {exc})")
            continue
        if gt is None:
            row.update(status="no truth")
            continue
        scored += 1
        row["true_instances"] = len(gt)
        try:
            pred = rle.decode(rec.annotation, *hw)
        except rle.RLEError as exc:
            row.update(status=f"unparseable: {exc}", score=0.0)
            continue
        row.update(pred_instances=len(pred), score=metric.image_score(pred, gt))
        if len(shown) < 4 * PREDICTION_ROWS:
            shown.append({"case_id": rec.case_id, "path": image_path, "truth": gt, "pred": pred,
                          "score": row["score"]})
    df = pd.DataFrame(rows, columns=["case_id", "truth", "true_instances", "pred_instances", "status", "score"])
    return df.astype({"true_instances": "Int64", "pred_instances": "Int64"}), _picture_predictions(shown)


def _truth(case_id, solution, test_paths, train, opts):
    """(true instances or None if unknown, image path, (h, w), where the truth came from) for one row."""
    if case_id in solution and case_id in test_paths:
        ann, h, w = solution[case_id]
        return rle.decode(ann, h, w), test_paths[case_id], (h, w), "test_solution.csv"
    case = train.get(case_id)
    if case is None or (case.label == FORGED and not case.mask_path):
        return None, None, None, ""
    where = f"{case.source} {LABEL_NAMES[case.label]}"
    try:
        with open(case.image_path, "rb") as f:
            h, w = image_size(f.read(), case.image_path)
    except OSError as exc:
        raise BadInput(case.image_path, f"unreadable: {exc.strerror}") from exc
    if case.label == AUTHENTIC:
        return [], case.image_path, (h, w), where
    mask = load_mask(case.mask_path, (h, w), allow_pickle=opts.allow_pickle_masks)
    if mask.empty:  # an all-zero mask of a forged image is not the truth "authentic"
        raise BadInput(case.mask_path, "empty_mask: no forged pixel in any instance")
    return list(mask.instances), case.image_path, (h, w), where


def _picture_predictions(shown: list[dict]) -> list[dict]:
    """A handful of scored images spread over the score range (worst to best); images where truth or
    prediction has instances first, correctly-authentic ones only to fill up."""
    if not shown:
        return []
    interesting = sorted((r for r in shown if r["truth"] or r["pred"]), key=lambda r: r["score"])
    idx = np.unique(np.linspace(0, len(interesting) - 1, min(PREDICTION_ROWS, len(interesting))).round().astype(int))
    picked = [interesting[i] for i in idx] if interesting else []
    picked += [r for r in shown if not (r["truth"] or r["pred"])][:PREDICTION_ROWS - len(picked)]
    rows = []
    for r in picked:
        try:
            rgb = read_rgb8(r["path"])
        except BadInput:
            continue
        small, truth, _ = figs.thumbnail(rgb, r["truth"], THUMB_SIDE)
        _, pred, _ = figs.thumbnail(rgb, r["pred"], THUMB_SIDE)
        rows.append({"case_id": r["case_id"], "rgb": small, "truth": truth, "pred": pred, "score": r["score"]})
    return rows


# ----------------------------------------------------------------------------- statistics and text

def describe(values) -> dict:
    """n, mean, median, min, p5, p95, max of the finite values (just n=0 when there are none)."""
    v = pd.to_numeric(pd.Series(np.asarray(values).reshape(-1)), errors="coerce").to_numpy(np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0}
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def dataset_counts(cases: list[Case], tests: list, problems: list) -> dict:
    def n(source, label=None, with_mask=None):
        return sum(1 for c in cases if c.source == source and (label is None or c.label == label)
                   and (with_mask is None or (c.mask_path is not None) == with_mask))

    return {"authentic": n("train", AUTHENTIC), "forged": n("train", FORGED),
            "forged_with_masks": n("train", FORGED, True), "supplemental": n("supplemental"),
            "supplemental_with_masks": n("supplemental", FORGED, True), "test": len(tests),
            "problems": len(problems)}


def mask_stats(c: Collected) -> dict:
    masks, inst = pd.DataFrame(c.masks), pd.DataFrame(c.instances)
    forged_px = int(masks["forged_px"].sum()) if len(masks) else 0
    total_px = int(masks["total_px"].sum()) if len(masks) else 0
    return {
        "forged_images_with_masks": int(len(masks)),
        "instances_total": int(len(inst)),
        "forged_pixels": forged_px, "pixels_of_forged_images": total_px,
        # The first seed's "Forgery Imbalance Ratio": forged pixels / all pixels of the forged images, in %.
        "imbalance_ratio_percent": 100.0 * forged_px / total_px if total_px else None,
        "background_per_forged_pixel": (total_px - forged_px) / forged_px if forged_px else None,
        "instances_per_image": describe(masks["instances"]) if len(masks) else {"n": 0},
        "forged_fraction_per_image": describe(masks["forged_fraction"]) if len(masks) else {"n": 0},
        **{f"instance_{k}": describe(inst[k]) if len(inst) else {"n": 0}
           for k in ("area_px", "area_fraction", "bbox_w", "bbox_h", "aspect", "compactness")},
    }


def feature_stats(c: Collected) -> dict:
    out = {}
    for name, groups in c.features.items():
        out[name] = {g: describe(np.concatenate(v)) if v else {"n": 0} for g, v in groups.items()}
        diffs = [d[name] for d in c.contrasts if name in d]
        out[name]["images_region_higher"] = int(sum(d > 0 for d in diffs))
        out[name]["images_compared"] = len(diffs)
    return out


def summary_sentences(counts: dict, analysed: dict, ms: dict, fs: dict, geometry: dict, peek: dict,
                      sub: Optional[dict]) -> list[str]:
    """The written summary: every number is computed from this dataset."""
    s = []
    labelled = counts["authentic"] + counts["forged"]
    if labelled:
        s.append(f"{labelled} training images: {counts['authentic']} authentic and {counts['forged']} forged "
                 f"({100 * counts['forged'] / labelled:.0f}% forged); {counts['forged_with_masks']} forged images "
                 f"have a mask" + (f", plus {counts['supplemental']} supplemental" if counts["supplemental"] else "")
                 + f"; {counts['test']} test images.")
    if analysed["sampled"] < analysed["available"]:
        s.append(f"Measurements below use a sample of {analysed['sampled']} of {analysed['available']} "
                 "labelled images (--max_images).")
    if geometry.get("n"):
        s.append(f"Images are typically {geometry['median_w']:.0f}x{geometry['median_h']:.0f} px (median); widths "
                 f"range {geometry['min_w']}-{geometry['max_w']} and heights {geometry['min_h']}-{geometry['max_h']}; "
                 f"the most common colour mode is {geometry['top_mode']} ({geometry['top_mode_share']:.0f}%)"
                 + (f"; {_plural(geometry['sixteen_bit'], 'image')} {'is' if geometry['sixteen_bit'] == 1 else 'are'}"
                    " 16-bit (converted by round(v / 257))" if geometry["sixteen_bit"] else "") + ".")
    if ms["imbalance_ratio_percent"] is not None:
        ratio = ms["imbalance_ratio_percent"]
        s.append(f"Pixel imbalance: forged pixels are {ratio:.2f}% of the pixels of forged images "
                 f"(about 1 forged pixel per {ms['background_per_forged_pixel']:.0f} background pixels)"
                 + ("; a plain pixel loss will learn to predict background, so an overlap (Dice/Tversky) "
                    "loss or forged-image oversampling is needed." if ratio < 10 else "."))
    ipi, inst_area = ms["instances_per_image"], ms["instance_area_fraction"]
    if ipi.get("n"):
        s.append(f"A forged image has {ipi['mean']:.2f} instances on average (median {ipi['median']:.0f}, "
                 f"range {ipi['min']:.0f}-{ipi['max']:.0f}); source and copy are separate instances, so the "
                 "metric rewards splitting predictions into instances.")
    if inst_area.get("n"):
        s.append(f"The median instance covers {100 * inst_area['median']:.2f}% of its image "
                 f"({ms['instance_area_px']['median']:.0f} px, bounding box about "
                 f"{ms['instance_bbox_w']['median']:.0f}x{ms['instance_bbox_h']['median']:.0f} px); 5% of instances "
                 f"are below {100 * inst_area['p5']:.2f}% of the image, which a downscaled model input may erase.")
    for name, label in (("ela", "ELA"), ("noise", "Noise residual")):
        reg, rest = fs[name]["forged region"], fs[name]["rest of forged image"]
        if reg.get("n") and rest.get("n"):
            s.append(f"{label}: mean {reg['mean']:.3g} inside forged regions vs {rest['mean']:.3g} elsewhere in forged "
                     f"images; the region is higher in {fs[name]['images_region_higher']} of "
                     f"{fs[name]['images_compared']} forged images.")
    if peek.get("instances"):
        s.append(f"Template matching finds another annotated instance as the best hit for {peek['on_other']} of "
                 f"{peek['instances']} instances (median score {peek['median_score']:.2f}).")
    if counts["problems"]:
        s.append(f"{counts['problems']} problems were found (see the table); the affected cases are left out "
                 "of the statistics and would be recorded as errors by the preprocessing job.")
    if sub and sub.get("scored"):
        s.append(f"The submission scores a mean oF1 of {sub['mean_oF1']:.3f} over {sub['scored']} images with "
                 f"known truth ({sub['forged_scored']} forged: mean {sub['mean_oF1_forged']:.3f}).")
    return s


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ----------------------------------------------------------------------------- HTML

def esc(v) -> str:
    return html.escape(str(v), quote=True)


def fmt(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:.4g}"
    return str(v)


def table(headers, rows, row_attrs=None, cell_attrs=None, limit=MAX_TABLE_ROWS) -> str:
    """An HTML table; every cell is escaped. ``row_attrs(i)`` / ``cell_attrs(i, j)`` add data-* hooks."""
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for i, row in enumerate(rows[:limit]):
        attrs = row_attrs(i) if row_attrs else ""
        cells = "".join(f"<td{cell_attrs(i, j) if cell_attrs else ''}>{esc(fmt(v))}</td>" for j, v in enumerate(row))
        out.append(f"<tr{attrs}>{cells}</tr>")
    out.append("</tbody></table>")
    if len(rows) > limit:
        out.append(f"<p class='note'>{len(rows) - limit} more rows not shown.</p>")
    return "".join(out)


def figure(name: Optional[str], caption: str) -> str:
    if not name:
        return f"<p class='note'>No data for: {esc(caption)}</p>"
    return f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption>{esc(caption)}</figcaption></figure>"


def stats_table(named: list[tuple[str, dict]]) -> str:
    keys = ("n", "mean", "median", "min", "p5", "p95", "max")
    return table(("measure",) + keys, [[label] + [d.get(k, "") for k in keys] for label, d in named])


CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}figure{margin:12px 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
.note{color:#666;font-size:13px}ul.summary li{margin:4px 0}code{background:#f3f3f3;padding:0 3px}"""


def render_page(title: str, sections: list[tuple[str, str, str]], meta: str) -> str:
    toc = "".join(f"<li><a href='#{sid}'>{esc(h)}</a></li>" for sid, h, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{esc(h)}</h2>{content}</section>" for sid, h, content in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class='note'>{meta}</p>"
            f"<ol>{toc}</ol>{body}</body></html>")


# ----------------------------------------------------------------------------- orchestration

@dataclass
class Options:
    max_images: int = 0
    allow_pickle_masks: bool = False
    feature_size: int = FEATURE_SIZE
    seed: int = 0
    max_pixels: int = MAX_PIXELS


def _geometry(images: pd.DataFrame) -> dict:
    if images.empty:
        return {"n": 0}
    modes = images["mode"].value_counts()
    return {"n": int(len(images)), "median_w": float(images["width"].median()),
            "median_h": float(images["height"].median()), "min_w": int(images["width"].min()),
            "max_w": int(images["width"].max()), "min_h": int(images["height"].min()),
            "max_h": int(images["height"].max()), "top_mode": str(modes.index[0]),
            "top_mode_share": 100.0 * modes.iloc[0] / len(images), "sixteen_bit": int((images["bits"] == 16).sum())}


def _write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def build_report(input_dir: str, output_dir: str, submission: Optional[str] = None, max_images: int = 0,
                 allow_pickle_masks: bool = False, feature_size: int = FEATURE_SIZE, seed: int = 0) -> dict:
    """Analyse ``input_dir`` and write the report into ``output_dir``; returns what stats.json holds."""
    opts = Options(max_images=max_images, allow_pickle_masks=allow_pickle_masks, feature_size=feature_size,
                   seed=seed)
    os.makedirs(output_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases, found = discover_training_cases(input_dir)
    tests = discover_test_images(input_dir) if os.path.isdir(os.path.join(input_dir, "test_images")) else []
    c = Collected(problems=[problem_row(p.case_id, p.label, _source_of(p.path, input_dir), p.path, p.reason,
                                        input_dir) for p in found])

    sample = stratified_sample(cases, max_images, rng)
    pictured = choose_pictured(sample)
    wanted = set(pictured["grid"]) | {k for pair in pictured["pairs"] for k in pair if k}
    for case in tqdm(sample, desc="analysing images", unit="img"):
        try:
            analyse_case(case, input_dir, opts, rng, uid(case) in wanted, uid(case) in pictured["peek"], c)
        except (cv2.error, ValueError) as exc:  # an image the measurements cannot handle: record, go on
            c.problems.append(problem_row(case.case_id, case.label, case.source, case.image_path,
                                          f"analysis_failed: {type(exc).__name__}: {exc}", input_dir))
    test_sample = tests if max_images <= 0 else [tests[i] for i in sorted(rng.permutation(len(tests))[:max_images])]
    analyse_test_images(test_sample, input_dir, c)

    sub_df, sub_pictures = (score_submission(submission, input_dir, cases, tests, opts)
                            if submission else (None, []))

    images = pd.DataFrame(c.images, columns=["case_id", "label", "split", "width", "height", "mode", "format",
                                             "bits", "aspect"])
    counts = dataset_counts(cases, tests, c.problems)
    analysed = {"available": len(cases), "sampled": len(sample),
                "decoded": int((images["split"] != "test").sum()),
                "test_headers": int((images["split"] == "test").sum())}
    ms, fs, geometry = mask_stats(c), feature_stats(c), _geometry(images)
    peek_df = pd.DataFrame(c.peeks, columns=["case_id", "instance", "score", "on_other_instance"])
    peek = {"instances": int(len(peek_df)), "on_other": int(peek_df["on_other_instance"].sum()),
            "median_score": float(peek_df["score"].median()) if len(peek_df) else None}
    sub_stats = _submission_stats(sub_df) if sub_df is not None else None
    sentences = summary_sentences(counts, analysed, ms, fs, geometry, peek, sub_stats)

    stats = {"input_dir": os.path.abspath(input_dir), "counts": counts, "analysed": analysed,
             "problems_by_tag": dict(Counter(p["tag"] for p in c.problems)), "geometry": geometry,
             "colour_modes": _value_counts(images, "mode"), "bit_depths": _value_counts(images, "bits"),
             "masks": ms, "features": fs, "copy_move_peek": peek, "submission": sub_stats, "summary": sentences,
             "options": {"max_images": max_images, "allow_pickle_masks": allow_pickle_masks,
                         "feature_size": feature_size, "seed": seed, "submission": submission}}
    _write_csv(os.path.join(output_dir, "problems.csv"), c.problems, ["case_id", "label", "source", "path", "tag",
                                                                       "reason"])
    if sub_df is not None:
        sub_df.to_csv(os.path.join(output_dir, "submission_scores.csv"), index=False)
    with open(os.path.join(output_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2, default=_json_default)
    sections = _sections(output_dir, stats, c, images, sub_df, sub_pictures, pictured)
    meta = (f"Input <code>{esc(os.path.abspath(input_dir))}</code>; seed {seed}; "
            f"max_images {max_images or 'all'}. Machine-readable numbers: <a href='stats.json'>stats.json</a>.")
    with open(os.path.join(output_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(render_page("Copy-move forgery dataset report", sections, meta))
    return stats


def _source_of(path: str, root: str) -> str:
    return "supplemental" if _rel(path, root).startswith("supplemental") else "train"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    raise TypeError(type(o).__name__)


def _value_counts(images: pd.DataFrame, col: str) -> dict:
    """{split: {value: count}} for the colour-mode / bit-depth tables."""
    out = {}
    for split, grp in images.groupby("split"):
        out[str(split)] = {str(k): int(v) for k, v in grp[col].value_counts().sort_index().items()}
    return out


def _submission_stats(df: pd.DataFrame) -> dict:
    scored = df[df["score"].notna()]
    forged = scored[scored["true_instances"] > 0]
    return {"rows": int(len(df)), "scored": int(len(scored)),
            "no_truth": int(df["status"].str.startswith("no truth").sum()),
            "unparseable": int(df["status"].str.startswith("unparseable").sum()),
            "mean_oF1": float(scored["score"].mean()) if len(scored) else None,
            "forged_scored": int(len(forged)),
            "mean_oF1_forged": float(forged["score"].mean()) if len(forged) else float("nan")}


def _sections(out_dir, stats, c: Collected, images, sub_df, sub_pictures, pictured) -> list:
    counts, ms = stats["counts"], stats["masks"]
    secs = [("summary", "Summary",
             "<ul class='summary'>" + "".join(f"<li>{esc(s)}</li>" for s in stats["summary"]) + "</ul>")]

    count_rows = [("authentic (train)", "authentic"), ("forged (train)", "forged"),
                  ("forged with masks (train)", "forged_with_masks"), ("supplemental", "supplemental"),
                  ("supplemental with masks", "supplemental_with_masks"), ("test", "test"), ("problems", "problems")]
    counts_html = table(("set", "images"), [(label, counts[k]) for label, k in count_rows],
                        cell_attrs=lambda i, j: f" data-count='{count_rows[i][1]}'" if j == 1 else "")
    a = stats["analysed"]
    counts_html += (f"<p class='note'>Analysed {a['sampled']} of {a['available']} labelled images "
                    f"({a['decoded']} decoded) and {a['test_headers']} test headers.</p>")
    tags = sorted(stats["problems_by_tag"].items(), key=lambda kv: -kv[1])
    counts_html += "<h3>Problems by reason</h3>" + (table(("reason", "cases"), tags) if tags else
                                                      "<p>No problems found.</p>")
    if c.problems:
        counts_html += "<h3>Problems</h3>" + table(
            ("case id", "label", "source", "path", "reason"),
            [(p["case_id"], p["label"], p["source"], p["path"], p["reason"]) for p in c.problems],
            row_attrs=lambda i: f" class='problem' data-case='{esc(c.problems[i]['case_id'])}' "
                                f"data-tag='{esc(c.problems[i]['tag'])}'")
        counts_html += "<p class='note'>Every problem: <a href='problems.csv'>problems.csv</a>.</p>"
    secs.append(("counts", "Counts and problems", counts_html))

    geo = figs.histograms(out_dir, "geometry.png", [("Width", "pixels", images["width"]),
                                                    ("Height", "pixels", images["height"]),
                                                    ("Aspect ratio (W/H)", "ratio", images["aspect"])])
    modes = figs.bar_counts(out_dir, "modes.png", [("Colour modes", dict(Counter(images["mode"]))),
                                                   ("Bits per sample", dict(Counter(images["bits"].astype(str))))])
    mode_rows = [(split, "colour mode", k, v) for split, d in stats["colour_modes"].items() for k, v in d.items()]
    mode_rows += [(split, "bits per sample", k, v) for split, d in stats["bit_depths"].items() for k, v in d.items()]
    secs.append(("geometry", "Image geometry",
                 figure(geo, "Image width, height and aspect ratio (train + test)")
                 + figure(modes, "Colour modes and bit depths (from the file headers)")
                 + table(("split", "property", "value", "images"), mode_rows)))

    masks, inst = pd.DataFrame(c.masks), pd.DataFrame(c.instances)
    mask_html = ""
    if len(masks):
        mask_html += table(("measure", "value"), [
            ("forged images with usable masks", ms["forged_images_with_masks"]),
            ("instances", ms["instances_total"]),
            ("forged pixels / pixels of forged images (seed's imbalance ratio, %)", ms["imbalance_ratio_percent"]),
            ("background pixels per forged pixel", ms["background_per_forged_pixel"])])
        mask_html += figure(figs.histograms(out_dir, "masks_per_image.png", [
            ("Instances per forged image", "instances", masks["instances"]),
            ("Forged area per image", "fraction of image", masks["forged_fraction"]),
            ("Forged area per instance", "fraction of image", inst["area_fraction"])]),
            "Instances per forged image; forged-area fraction per image and per instance")
        mask_html += figure(figs.histograms(out_dir, "instances_shape.png", [
            ("Instance bbox width", "pixels", inst["bbox_w"]), ("Instance bbox height", "pixels", inst["bbox_h"]),
            ("Instance bbox aspect (W/H)", "ratio", inst["aspect"]),
            ("Compactness (perimeter^2 / area)", "compactness", inst["compactness"])], log_x=(False, False, True)),
            "Instance bounding boxes, aspect ratios and compactness (a disc is 4*pi = 12.6; higher = more ragged)")
        mask_html += stats_table([("instances per image", ms["instances_per_image"]),
                                  ("forged fraction per image", ms["forged_fraction_per_image"]),
                                  ("instance area (px)", ms["instance_area_px"]),
                                  ("instance area fraction", ms["instance_area_fraction"]),
                                  ("instance bbox width", ms["instance_bbox_w"]),
                                  ("instance bbox height", ms["instance_bbox_h"]),
                                  ("instance aspect (W/H)", ms["instance_aspect"]),
                                  ("instance compactness", ms["instance_compactness"])])
    else:
        mask_html = "<p>No forged image with a usable mask was analysed.</p>"
    secs.append(("masks", "Masks and instances", mask_html))

    fs = stats["features"]
    feat = figs.feature_distributions(out_dir, "features.png", [
        ("Noise residual (model stream 2), min-max per image", {g: np.concatenate(v) if v else [] for g, v in
                                                                c.features["noise"].items()}),
        (f"Error-level analysis (JPEG q{ELA_QUALITY}, x{ELA_SCALE})", {g: np.concatenate(v) if v else [] for g, v in
                                                                       c.features["ela"].items()})])
    feat_html = figure(feat, f"Per-pixel feature distributions at {stats['options']['feature_size'] or 'native'} px, "
                             f"up to {PIXELS_PER_GROUP} sampled pixels per image and group")
    feat_html += stats_table([(f"{label}: {g}", fs[name][g]) for name, label in (("noise", "noise residual"),
                                                                              ("ela", "ELA")) for g in GROUPS])
    secs.append(("features", "Forensic features", feat_html))

    grid = figs.instance_grid(out_dir, "forged_grid.png", [c.thumbs[k] for k in pictured["grid"] if k in c.thumbs])
    pairs = [(c.thumbs.get(a), c.thumbs.get(f)) for a, f in pictured["pairs"]]
    pairs = [p for p in pairs if p[0] is not None or p[1] is not None]
    side = figs.authentic_vs_forged(out_dir, "authentic_vs_forged.png", pairs)
    peek_fig = figs.copy_move_peek(out_dir, "copy_move_peek.png", c.peek_tiles)
    secs.append(("pictures", "Pictures",
                 figure(grid, "Forged images: each instance in its own colour with its bounding box")
                 + figure(side, "Authentic (top) vs forged (bottom); the same case id where both exist")
                 + figure(peek_fig, "Copy-move peek: each instance's patch (solid) and its best template match "
                                    "elsewhere in the image (dashed, TM_CCOEFF_NORMED score)")))

    if sub_df is not None:
        ss = stats["submission"]
        sub_html = table(("measure", "value"), [(k, v) for k, v in ss.items()])
        sub_html += figure(figs.prediction_pairs(out_dir, "predictions.png", sub_pictures),
                           "Truth (left) vs predicted instances (right), spread over the score range")
        sub_html += figure(figs.histograms(out_dir, "submission_scores.png", [
            ("Per-image oF1", "oF1", sub_df["score"])]), "Per-image oF1 where the truth is known")
        ordered = sub_df.sort_values("score", na_position="last")
        sub_html += "<h3>Per-image oF1 (worst first)</h3>" + table(
            ("case id", "truth", "true instances", "predicted instances", "status", "oF1"),
            ordered.values.tolist(),
            row_attrs=lambda i: f" class='score' data-case='{esc(ordered.iloc[i]['case_id'])}'")
        sub_html += "<p class='note'>All rows: <a href='submission_scores.csv'>submission_scores.csv</a>.</p>"
        secs.append(("submission", "Submission", sub_html))
    return secs


# ----------------------------------------------------------------------------- entry point

def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("input_dir", None, "Dataset root in the competition layout.")
    flags.DEFINE_string("output_dir", None, "Where index.html and the figures are written.")
    flags.DEFINE_string("submission", None, "Optional submission.csv to score and picture.")
    flags.DEFINE_integer("max_images", 0, "Analyse at most this many labelled (and test) images; 0 = all.")
    flags.DEFINE_bool("allow_pickle_masks", False, "Load pickled .npy masks (runs code: trusted data only).")
    flags.DEFINE_integer("feature_size", FEATURE_SIZE, "Side the forensic features are computed at; 0 = native.")
    flags.DEFINE_integer("seed", 0, "Seed of the image sample and the pixel sampling.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def main(argv) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    stats = build_report(f.input_dir, f.output_dir, submission=f.submission, max_images=f.max_images,
                         allow_pickle_masks=f.allow_pickle_masks, feature_size=f.feature_size, seed=f.seed)
    print(os.path.join(f.output_dir, "index.html"))
    print(json.dumps({"counts": stats["counts"], "problems_by_tag": stats["problems_by_tag"]}))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
