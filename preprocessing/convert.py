"""One case -> one TFRecord example (or one error), and the dataset statistics: the Beam job's work.

Pure functions (``convert_case``, ``add_outcome`` / ``merge_stats`` / ``finish_stats``), shared by
the Beam transforms in ``preprocessing.pipeline`` and the benchmark's plain-Python loop. No Beam
and no TensorFlow at import (TensorFlow loads on the first ``convert_case``, for the protos).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from preprocessing import fileio
from preprocessing.cases import split_key
from preprocessing.constants import COMPRESSIONS, ENCODINGS, FORGED, SPLITS
from preprocessing.errors import BadInput
from preprocessing.hyperparams import HELP, option, shared_option
from preprocessing.images import MAX_PIXELS, decode_rgb8, resize_image, resize_mask
from preprocessing.masks import forged_instances

TRAIN, VAL = SPLITS
MAX_LISTED = 20  # case ids listed per stats category (the counts are complete)
# Longest image side -> bucket name, for the size distribution.
SIZE_BUCKETS = ((256, "<256"), (512, "256-511"), (1024, "512-1023"), (2048, "1024-2047"),
                (4096, "2048-4095"), (None, ">=4096"))


@dataclass(frozen=True)
class ConvertConfig:
    """How each case becomes a record (the flags of ``preprocessing.main`` are derived from it)."""

    image_size: int = option(256, "Model input size S: an image with a side over S is resized to S x S; the others "
                             "are stored at their own size and enlarged to S on the accelerator; 0 keeps every "
                             "native size.", lower=0)
    encoding: str = option("png", "png: lossless, smaller; raw: uint8, fastest to read.", choices=ENCODINGS)
    allow_pickle_masks: bool = shared_option("allow_pickle_masks")
    max_pixels: int = option(MAX_PIXELS, HELP["max_pixels"], lower=1)
    val_fraction: float = option(0.2, "Fraction of case ids (stable hash) put in the val split.", lower=0.0,
                                 upper=0.99)
    evidence: bool = option(True, "Run the matcher on every image at native resolution and store its evidence "
                            "map next to the image (preprocessing.matching.evidence; about a second per "
                            "1000 px image).")


@dataclass(frozen=True)
class OutputConfig:
    """How the records are written (``preprocessing.main``'s flags are derived from it too)."""

    compression: str = option("gzip", "TFRecord file compression.", choices=COMPRESSIONS)
    num_shards: int = option(0, "Shards per split; 0 lets the runner choose (no extra shuffle).", lower=0)


def split_fraction(key: str) -> float:
    """A stable number in [0, 1) for a key: sha256, so every run, process and runner agrees
    (Python's ``hash()`` is salted per process)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign_split(case, val_fraction: float) -> str:
    """"val" or "train" for a case, from ``cases.split_key`` (so authentic/forged pairs stay together)."""
    return VAL if split_fraction(split_key(case)) < val_fraction else TRAIN


def read_bytes(path: str) -> bytes:
    """Whole file through Beam's FileSystems (local, gs://, s3://, hdfs:// alike)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    def read(p: str) -> bytes:
        with FileSystems.open(p, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()

    return fileio.read_input(path, read)


def reason_tag(reason: str) -> str:
    """The short tag of a BadInput reason ("corrupt_image: ..." -> "corrupt_image")."""
    return reason.split(":", 1)[0].strip() or "unknown"


def size_bucket(h: int, w: int) -> str:
    side = max(h, w)
    for limit, name in SIZE_BUCKETS:
        if limit is None or side < limit:
            return name
    return SIZE_BUCKETS[-1][1]


def convert_case(case, cfg: ConvertConfig, read=read_bytes) -> tuple[str, bytes, dict]:
    """One case -> (split, serialized tf.train.Example, outcome record for the stats).

    Raises ``BadInput`` (naming the file and the reason) for anything unusable.
    Decisions: a forged image without a mask, or whose mask has no forged pixel
    at all, is an error (the label would contradict the target, and the
    competition format cannot express "forged, no region"; ``masks.forged_instances``);
    a mask that is the image at another scale is resized (nearest) and counted,
    any other shape is an error; a mask that only vanishes after resizing to
    ``image_size`` is kept and counted.
    """
    from preprocessing.schema import make_example  # TensorFlow: loaded on first use, once per worker

    split = assign_split(case, cfg.val_fraction)
    image = decode_rgb8(read(case.image_path), case.image_path, cfg.max_pixels)
    h, w = image.shape[:2]
    num_instances, mismatch = 0, False
    if case.label == FORGED:
        data = read(case.mask_path) if case.mask_path else None
        mask = forged_instances(case.image_path, case.mask_path, (h, w), cfg.allow_pickle_masks, data=data)
        union, num_instances, mismatch = mask.union, len(mask.instances), mask.resized
    else:
        union = np.zeros((h, w), np.uint8)
    stored_image = resize_image(image, cfg.image_size)
    stored_mask = resize_mask(union, cfg.image_size)
    stored_evidence = None
    if cfg.evidence:  # at native resolution, then resized exactly as the image
        from preprocessing.matching.evidence import evidence_of

        stored_evidence = resize_image(evidence_of(image), cfg.image_size)
    serialized = make_example(case.case_id, case.label, case.source, stored_image, stored_mask,
                              num_instances, (h, w), cfg.encoding, evidence=stored_evidence)
    stored_forged = int(np.count_nonzero(stored_mask))
    outcome = {
        "status": "written", "split": split, "label": int(case.label), "case_id": case.case_id,
        "height": h, "width": w, "forged_px": int(np.count_nonzero(union)),
        "stored_px": int(stored_mask.size), "stored_forged_px": stored_forged,
        "num_instances": num_instances, "shape_mismatch": bool(mismatch),
        "emptied_by_resize": bool(case.label == FORGED and stored_forged == 0),
    }
    return split, serialized, outcome


def error_record(case, exc: BadInput) -> dict:
    """One errors.jsonl line: the case, the file at fault and why."""
    return {"case_id": case.case_id, "label": int(case.label), "path": exc.path, "reason": exc.reason}


def error_outcome(case, split: str, reason: str) -> dict:
    return {"status": "error", "split": split, "label": int(case.label), "case_id": case.case_id,
            "reason": reason_tag(reason)}


def empty_stats() -> dict:
    return {
        "written": 0, "errors": 0, "errors_by_reason": {},
        "counts": {s: {"total": 0, "authentic": 0, "forged": 0} for s in (TRAIN, VAL)},
        "pixels_total": 0, "pixels_forged_images": 0, "forged_px": 0,
        "stored_px_total": 0, "stored_px_forged_images": 0, "stored_forged_px": 0,
        "forged_fraction_sum": 0.0,
        "instances_hist": {}, "size_hist": {},
        "height_min": None, "height_max": None, "width_min": None, "width_max": None,
        "height_sum": 0, "width_sum": 0,
        "shape_mismatch": 0, "shape_mismatch_cases": [],
        "emptied_by_resize": 0, "emptied_by_resize_cases": [],
    }


def _add_to(hist: dict, key, n: int = 1) -> None:
    hist[str(key)] = hist.get(str(key), 0) + n


def _opt(fn, a, b):
    return b if a is None else a if b is None else fn(a, b)


def add_outcome(acc: dict, o: dict) -> dict:
    """Fold one outcome record into the accumulator (in place; returns it)."""
    if o["status"] == "error":
        acc["errors"] += 1
        _add_to(acc["errors_by_reason"], o["reason"])
        return acc
    acc["written"] += 1
    c = acc["counts"][o["split"]]
    c["total"] += 1
    c["forged" if o["label"] == 1 else "authentic"] += 1
    h, w = o["height"], o["width"]
    acc["pixels_total"] += h * w
    acc["stored_px_total"] += o["stored_px"]
    acc["height_min"], acc["height_max"] = _opt(min, acc["height_min"], h), _opt(max, acc["height_max"], h)
    acc["width_min"], acc["width_max"] = _opt(min, acc["width_min"], w), _opt(max, acc["width_max"], w)
    acc["height_sum"] += h
    acc["width_sum"] += w
    _add_to(acc["size_hist"], size_bucket(h, w))
    if o["label"] == 1:
        acc["pixels_forged_images"] += h * w
        acc["forged_px"] += o["forged_px"]
        acc["stored_px_forged_images"] += o["stored_px"]
        acc["stored_forged_px"] += o["stored_forged_px"]
        acc["forged_fraction_sum"] += o["forged_px"] / float(h * w)
        _add_to(acc["instances_hist"], o["num_instances"])
    for key in ("shape_mismatch", "emptied_by_resize"):
        if o[key]:
            acc[key] += 1
            if len(acc[key + "_cases"]) < MAX_LISTED:
                acc[key + "_cases"].append(o["case_id"])
    return acc


def merge_stats(accs) -> dict:
    out = empty_stats()
    for a in accs:
        for k, v in a.items():
            if k in ("height_min", "width_min"):
                out[k] = _opt(min, out[k], v)
            elif k in ("height_max", "width_max"):
                out[k] = _opt(max, out[k], v)
            elif k in ("errors_by_reason", "instances_hist", "size_hist"):
                for kk, n in v.items():
                    _add_to(out[k], kk, n)
            elif k == "counts":
                for split, cnt in v.items():
                    for kk, n in cnt.items():
                        out[k][split][kk] += n
            elif k.endswith("_cases"):
                out[k] = sorted(out[k] + v)[:MAX_LISTED]
            else:
                out[k] += v
    return out


def _ratio(a, b):
    return round(a / b, 6) if b else None


def finish_stats(acc: dict) -> dict:
    """Accumulator -> the summary written to the side file (counts + the manifest's ``stats``)."""
    n, forged = acc["written"], sum(c["forged"] for c in acc["counts"].values())
    stats = {
        "forged_pixel_fraction": {
            # Native resolution, as the seed measured the imbalance (all images / forged images only).
            "all_images": _ratio(acc["forged_px"], acc["pixels_total"]),
            "forged_images": _ratio(acc["forged_px"], acc["pixels_forged_images"]),
            "mean_per_forged_image": _ratio(acc["forged_fraction_sum"], forged),
            # What the trainer sees (after resizing): use this one for loss weighting.
            "stored_all_images": _ratio(acc["stored_forged_px"], acc["stored_px_total"]),
            "stored_forged_images": _ratio(acc["stored_forged_px"], acc["stored_px_forged_images"]),
        },
        "instances_per_forged_image": {
            "histogram": dict(sorted(acc["instances_hist"].items(), key=lambda kv: int(kv[0]))),
            "mean": _ratio(sum(int(k) * v for k, v in acc["instances_hist"].items()), forged),
        },
        "image_size": {
            "height": {"min": acc["height_min"], "max": acc["height_max"], "mean": _ratio(acc["height_sum"], n)},
            "width": {"min": acc["width_min"], "max": acc["width_max"], "mean": _ratio(acc["width_sum"], n)},
            "longest_side_histogram": {name: acc["size_hist"][name] for _, name in SIZE_BUCKETS
                                       if name in acc["size_hist"]},
            "megapixels_total": round(acc["pixels_total"] / 1e6, 3),
        },
        "mask_shape_mismatches": {"count": acc["shape_mismatch"], "cases": acc["shape_mismatch_cases"]},
        # Masks with no forged pixel at all are errors (reason "empty_mask"), so this count is theirs.
        "empty_masks": {"count": acc["errors_by_reason"].get("empty_mask", 0)},
        "masks_emptied_by_resize": {"count": acc["emptied_by_resize"], "cases": acc["emptied_by_resize_cases"]},
    }
    return {"written": n, "errors": acc["errors"], "errors_by_reason": dict(sorted(acc["errors_by_reason"].items())),
            "counts": acc["counts"], "stats": stats}
