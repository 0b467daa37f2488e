"""The report's page: escaped HTML tables, figures and the dataset sections (no JavaScript, one file)."""
from __future__ import annotations

import html
from collections import Counter
from typing import Optional

import numpy as np
import pandas as pd

from preprocessing.report import figures as figs
from preprocessing.report.collect import GROUPS, PIXELS_PER_GROUP, Collected
from preprocessing.report.measure import ELA_QUALITY, ELA_SCALE

MAX_TABLE_ROWS = 200  # longer tables are cut on the page; the CSV next to it has every row
# The figure files the dataset sections write (the report's own files, for --overwrite).
FIGURE_FILES = ("geometry.png", "modes.png", "masks_per_image.png", "instances_shape.png", "features.png",
                "forged_grid.png", "authentic_vs_forged.png", "copy_move_peek.png")


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


def dataset_sections(out_dir: str, stats: dict, c: Collected, images: pd.DataFrame, pictured: dict) -> list:
    """(id, title, HTML) of every section about the dataset, writing its figures into ``out_dir``."""
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
                    f"({a['decoded']} decoded) and {a['test_images']} test images.</p>")
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

    return secs
