"""The report's one pass over the data: open each sampled image (and its mask), measure it, and
collect rows; a file that cannot be used becomes a problem row naming the case and the reason."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

from preprocessing import fileio
from preprocessing.cases import Case
from preprocessing.constants import AUTHENTIC, FORGED, LABEL_NAMES
from preprocessing.errors import BadInput
from preprocessing.features import noise_residual
from preprocessing.hyperparams import HELP, option, shared_option
from preprocessing.images import MAX_PIXELS, decode_rgb8
from preprocessing.masks import forged_instances
from preprocessing.report import figures as figs
from preprocessing.report.measure import bbox, error_level, header_info, instance_metrics, sample_pixels, template_peek

FEATURE_SIZE = 256  # forensic features are computed where the model sees them: the resized model input
PIXELS_PER_GROUP = 1500  # sampled pixels per image and pixel group for the feature distributions
GRID_TILES, PAIR_COLUMNS, PEEK_TILES = 12, 4, 6  # how many cases each picture shows
THUMB_SIDE = 256
GROUPS = ("forged region", "rest of forged image", "authentic image")


@dataclass(frozen=True)
class Options:
    """What the report analyses (``python -m preprocessing.report``'s flags are derived from it)."""

    max_images: int = option(0, "Analyse at most this many labelled (and test) images; 0 = all.", lower=0)
    allow_pickle_masks: bool = shared_option("allow_pickle_masks")
    feature_size: int = option(FEATURE_SIZE, "Side the forensic features are computed at; 0 = native.", lower=0)
    seed: int = option(0, HELP["seed"])
    max_pixels: int = option(MAX_PIXELS, HELP["max_pixels"], lower=1)


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


def analyse_case(case: Case, root: str, opts: Options, rng: np.random.Generator, keep_thumb: bool,
                 keep_peek: bool, out: Collected) -> None:
    """Open one training image (and its mask) and add every measurement; bad files become problems."""
    def problem(path, reason):
        out.problems.append(problem_row(case.case_id, case.label, case.source, path, reason, root))

    try:
        data = fileio.read_input(case.image_path)
        rgb = decode_rgb8(data, case.image_path, opts.max_pixels)
        head = header_info(data, case.image_path)
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
            mask = forged_instances(case.image_path, case.mask_path, (h, w), opts.allow_pickle_masks)
        except BadInput as exc:
            return problem(exc.path, exc.reason)
        for note in mask.notes:  # e.g. a mask resized to its image: usable, but worth a look
            problem(case.mask_path, note)
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


def analyse_test_images(tests: list[tuple[str, str]], root: str, max_pixels: int, out: Collected) -> None:
    """Geometry of test images (they have no masks to analyse); each is decoded once, so a file whose
    header is fine but whose pixels are cut short is a problem here, not a surprise when scoring."""
    for case_id, path in tqdm(tests, desc="test images", unit="img", leave=False):
        try:
            data = fileio.read_input(path)
            decode_rgb8(data, path, max_pixels)
            head = header_info(data, path)
        except BadInput as exc:
            out.problems.append(problem_row(case_id, None, "test", path, exc.reason, root))
            continue
        out.images.append({"case_id": case_id, "label": "", "split": "test", **head,
                           "aspect": head["width"] / head["height"]})
