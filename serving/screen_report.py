"""The screening report: DIR/index.html with its pictures, DIR/findings.jsonl and DIR/errors.jsonl.

Each finding is shown as four pictures of one size: region a as found, region b as found, b
turned back onto a by the estimated transform (so the two can be compared pixel by pixel), and
their difference after matching b's brightness to a's (dark: the pixels agree). The words are
neutral ("these two regions match"): screening claims no direction, since nothing it measures
shows which region is the original. The page uses no external resource (no scripts, fonts or
styles from the network); every picture is a file in DIR/pictures.
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence

import cv2
import numpy as np

from serving.pictures import png_bytes

# Each picture of a finding is scaled so its longer side is this (px): readable at a glance,
# small regions enlarged with visible pixels, four side by side fit a 1200 px window.
VIEW_SIDE = 260
# Context around a region (share of its size) so its surroundings show where it sits.
CONTEXT = 0.15
# The difference is multiplied by this so small disagreements are visible.
DIFF_GAIN = 3.0
VIEWS = ("a", "b", "b_on_a", "difference")
CAPTIONS = {"a": "region a", "b": "region b", "b_on_a": "b turned back onto a",
            "difference": "difference (dark: same)"}


def _window(box, shape) -> tuple[int, int, int, int]:
    x, y, w, h = box
    mx, my = int(CONTEXT * w) + 2, int(CONTEXT * h) + 2
    x0, y0 = max(0, x - mx), max(0, y - my)
    return x0, y0, min(shape[1], x + w + mx) - x0, min(shape[0], y + h + my) - y0


def _view(rgb: np.ndarray) -> np.ndarray:
    """Scaled to ``VIEW_SIDE`` (area averaging down, nearest up so pixels stay honest)."""
    h, w = rgb.shape[:2]
    s = VIEW_SIDE / max(h, w)
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_NEAREST)


def finding_pictures(rgb_a: np.ndarray, box_a, rgb_b: np.ndarray, box_b, matrix) -> dict:
    """PNG bytes of the four views of one finding; ``matrix`` (2x3) maps a's pixels onto b's."""
    x0, y0, w, h = _window(box_a, rgb_a.shape)
    a = rgb_a[y0:y0 + h, x0:x0 + w]
    m = np.vstack([np.asarray(matrix, np.float64), [0, 0, 1]]) @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])
    back = cv2.warpAffine(rgb_b, m[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
    inside = cv2.warpAffine(np.ones(rgb_b.shape[:2], np.uint8), m[:2], (w, h),
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    region = np.zeros((h, w), bool)  # the difference is shown over region a only, not its context
    ax, ay, aw, ah = box_a
    region[ay - y0:ay - y0 + ah, ax - x0:ax - x0 + aw] = True
    inside &= region
    fa, fb = a.astype(np.float32), back.astype(np.float32)
    if inside.any():  # match b's brightness and contrast to a's over the shared pixels
        fb = (fb - fb[inside].mean()) / (fb[inside].std() + 1e-3) * fa[inside].std() + fa[inside].mean()
    diff = np.clip(np.abs(fa - fb).mean(axis=2, keepdims=True) * DIFF_GAIN, 0, 255).astype(np.uint8)
    diff = np.where(inside[:, :, None], diff, 128).repeat(3, axis=2)
    bx, by, bw, bh = _window(box_b, rgb_b.shape)
    views = {"a": a, "b": rgb_b[by:by + bh, bx:bx + bw], "b_on_a": back, "difference": diff}
    return {k: png_bytes(_view(np.ascontiguousarray(v))) for k, v in views.items()}


def _place(side: dict) -> str:
    x, y, w, h = side["box"]
    return f"{html.escape(side['label'])}, box x={x} y={y} {w}x{h}"


def sentence(f: dict) -> str:
    """Neutral wording: "these two regions match (mirrored left-right)"."""
    where = "within one image" if f["kind"] == "within" else "in two different images"
    return f"These two regions match ({f['transform']}), {where}."


def evidence(f: dict) -> str:
    parts = [f"correlation {f['correlation']:.2f}"]
    if f["inliers"]:
        parts.insert(0, f"{f['inliers']} keypoint inliers")
    if f.get("exact_blocks"):
        parts.append(f"{f['exact_blocks']} identical blocks")
    return ", ".join(parts) + f"; score {f['score']:.2f}"


STYLE = """body{font-family:sans-serif;margin:24px;max-width:1180px;color:#222}
h1{margin-bottom:4px} .summary{display:flex;gap:24px;margin:12px 0 24px;flex-wrap:wrap}
.summary div{background:#f2f4f7;padding:10px 16px;border-radius:6px} .summary b{font-size:22px;display:block}
.finding{border:1px solid #ccd;border-radius:6px;padding:12px;margin:14px 0}
.views{display:flex;gap:10px;flex-wrap:wrap} figure{margin:0;text-align:center;font-size:12px;color:#555}
figure img{display:block;border:1px solid #bbb;image-rendering:pixelated;max-width:260px}
.where{font-size:13px;color:#444;margin:6px 0} .muted{color:#777;font-size:13px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
code{background:#f2f4f7;padding:1px 4px}"""


def _finding_html(n: int, f: dict, pictures: dict) -> str:
    views = "".join(f'<figure><img src="{pictures[k]}" alt="finding {n}: {CAPTIONS[k]}">'
                    f"<figcaption>{CAPTIONS[k]}</figcaption></figure>" for k in VIEWS)
    return (f'<div class="finding" id="finding-{n}"><b>Finding {n}</b> ({f["kind"]}): {html.escape(sentence(f))}'
            f'<div class="where">a: {_place(f["a"])}<br>b: {_place(f["b"])}</div>'
            f'<div class="where">Evidence: {html.escape(evidence(f))}</div><div class="views">{views}</div></div>')


def page(screened: Sequence, result: dict, pictures: list[dict]) -> str:
    """index.html; ``pictures[n - 1]`` maps each view of finding n to its file name (relative)."""
    tiles = [("documents", result["documents"]), ("images", result["images"]), ("findings", result["findings"]),
             ("unreadable files", result["unreadable"])]
    out = ['<!doctype html><html><head><meta charset="utf-8"><title>Screening report</title>',
           f"<style>{STYLE}</style></head><body><h1>Screening report</h1>",
           '<p class="muted">Regions that match within an image or across the images of a document. A match is '
           "not an accusation: which region (if any) is the original is not claimed.</p>",
           '<div class="summary">' + "".join(f"<div><b>{v}</b>{k}</div>" for k, v in tiles) + "</div>"]
    n = 0
    for s in screened:
        out.append(f"<h2>{html.escape(s.name)}</h2><p class='muted'>{len(s.images)} images, "
                   f"{len(s.findings)} findings, {s.candidates} panel pairs verified across images</p>")
        for f in s.findings:
            n += 1
            out.append(_finding_html(n, f, pictures[n - 1]))
        shown = {(f[side]["image"]) for f in s.findings for side in ("a", "b")}
        quiet = [ref.label for ref, _ in s.images if ref.index not in shown]
        if quiet:
            out.append(f"<p><b>Images without findings ({len(quiet)}):</b> <span class='muted'>"
                       + "; ".join(html.escape(q) for q in quiet) + "</span></p>")
        if s.recurring:
            out.append(f"<p><b>Recurring identical elements ({len(s.recurring)}), not findings:</b> "
                       "<span class='muted'>" + "; ".join(
                           f"{_place(f['a'])} = {_place(f['b'])}" for f in s.recurring) + "</span></p>")
        if s.errors:
            out.append("<p><b>Could not be read:</b></p><table><tr><th>file</th><th>page</th><th>reason</th></tr>"
                       + "".join(f"<tr><td>{html.escape(e['file'])}</td><td>{e['page'] or ''}</td>"
                                 f"<td>{html.escape(e['reason'])}</td></tr>" for e in s.errors) + "</table>")
    out.append("</body></html>")
    return "\n".join(out)


def public(f: dict) -> dict:
    """A finding as findings.jsonl records it (no pixels, no internal bookkeeping)."""
    return {k: v for k, v in f.items() if k not in ("pictures", "panels", "identical")}


def write_report(folder: str, screened: Sequence, result: dict) -> None:
    """Write index.html, pictures/, findings.jsonl and errors.jsonl into ``folder`` (a staging folder)."""
    os.makedirs(os.path.join(folder, "pictures"), exist_ok=True)
    names, lines = [], []
    for s in screened:
        for f in s.findings:
            n = len(names) + 1
            files = {}
            for view, data in f["pictures"].items():
                files[view] = f"pictures/finding-{n:04d}-{view}.png"
                with open(os.path.join(folder, files[view]), "wb") as fh:
                    fh.write(data)
            names.append(files)
            lines.append(json.dumps({"id": n, "document": s.name, **public(f)}))
    with open(os.path.join(folder, "findings.jsonl"), "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    with open(os.path.join(folder, "errors.jsonl"), "w") as fh:
        fh.write("".join(json.dumps({"document": s.name, **e}) + "\n" for s in screened for e in s.errors))
    with open(os.path.join(folder, "index.html"), "w") as fh:
        fh.write(page(screened, result, names))
