"""The report's numbers: distributions, counts, and the written summary (every number computed from
this dataset)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from preprocessing.cases import Case
from preprocessing.constants import AUTHENTIC, FORGED
from preprocessing.report.collect import Collected


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


def summary_sentences(counts: dict, analysed: dict, ms: dict, fs: dict, geometry: dict, peek: dict) -> list[str]:
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
    return s


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def image_geometry(images: pd.DataFrame) -> dict:
    if images.empty:
        return {"n": 0}
    modes = images["mode"].value_counts()
    return {"n": int(len(images)), "median_w": float(images["width"].median()),
            "median_h": float(images["height"].median()), "min_w": int(images["width"].min()),
            "max_w": int(images["width"].max()), "min_h": int(images["height"].min()),
            "max_h": int(images["height"].max()), "top_mode": str(modes.index[0]),
            "top_mode_share": 100.0 * modes.iloc[0] / len(images), "sixteen_bit": int((images["bits"] == 16).sum())}


def value_counts(images: pd.DataFrame, col: str) -> dict:
    """{split: {value: count}} for the colour-mode / bit-depth tables."""
    out = {}
    for split, grp in images.groupby("split"):
        out[str(split)] = {str(k): int(v) for k, v in grp[col].value_counts().sort_index().items()}
    return out
