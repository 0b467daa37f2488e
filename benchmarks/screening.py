"""Screening benchmark: speed and memory on a 20-figure paper, and the cross-figure search's recall
and false findings on synthetic documents.

    python -m benchmarks.screening [--figures 20] [--reuse_docs 2] [--authentic_docs 20] [--workers 1]

Documents are PDFs (one JPEG figure per page, quality 92) of ``preprocessing.synth`` figures:
- the timing document: ``--figures`` authentic figures, screened by ``python -m serving.screen``
  in a child process (wall time per page and per image, the child's peak resident memory);
- reuse documents: three figures each, where a photo panel of figure 1 is reused in a panel of
  figure 3 with one of the matcher tests' transforms (plus a crop and a brightness change); a
  reuse is found when an ``across`` finding joins figure 1's panel and figure 3's target panel;
- authentic documents: three figures each, every page with the same journal banner (a logo cut
  from a photograph and a title) and the figures' own scale bars and labels. Every finding there
  is counted as false, except an ``across`` finding between two panels the generator cropped from
  overlapping windows of one photograph (they share pixels: a real reuse) which is listed apart.
Prints one JSON line per measurement and a summary.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags
from PIL import Image

from preprocessing.synth.figures import make_figure

flags.DEFINE_integer("figures", 20, "Figures (pages) of the timing document.")
flags.DEFINE_integer("reuse_docs", 1, "Documents per reuse transform.")
flags.DEFINE_integer("authentic_docs", 20, "Authentic documents (three figures each).")
flags.DEFINE_integer("long_pages", 0, "Pages of a long PDF of large scans (peak memory against page count; 0: skip).")
flags.DEFINE_integer("workers", 1, "Processes for screening.")
flags.DEFINE_integer("seed", 7, "Random seed.")
FLAGS = flags.FLAGS

MIN_SIZE, MAX_SIZE = 500, 1000  # figure sides (px), as a journal's figures at screen resolution
PHOTO_KINDS = ("micrograph", "fluorescence")
BANNER_H = 70
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rot(x: np.ndarray, angle: float, scale: float = 1.0) -> np.ndarray:
    h, w = x.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    return cv2.warpAffine(x, m, (w, h), borderMode=cv2.BORDER_REFLECT)


# The matcher tests' transforms (tests/test_matching.py), plus a crop and a brightness change.
TRANSFORMS = {
    "identical": lambda p: p,
    "mirrored left-right": lambda p: p[:, ::-1],
    "mirrored top-bottom": lambda p: p[::-1],
    "turned 90": lambda p: np.rot90(p),
    "scaled 1.2": lambda p: cv2.resize(p, None, fx=1.2, fy=1.2, interpolation=cv2.INTER_LINEAR),
    "rotated 20": lambda p: _rot(p, 20.0),
    "cropped 60%": lambda p: p[p.shape[0] // 5:p.shape[0] * 4 // 5, p.shape[1] // 5:p.shape[1] * 4 // 5],
    "brightness -25%, +30": lambda p: np.clip(p.astype(np.float32) * 0.75 + 30, 0, 255).astype(np.uint8),
}


def rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def photo_panels(fig) -> list:
    return [p for p in fig.panels if p.kind in PHOTO_KINDS]


def figure_with_photos(rng, n: int = 1):
    while True:
        fig = make_figure(rng, MIN_SIZE, MAX_SIZE)
        if len(photo_panels(fig)) >= n:
            return fig


def write_pdf(path: str, pages: list) -> None:
    images = [Image.fromarray(rgb(p)) for p in pages]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=100, quality=92)


def banner(rng) -> np.ndarray:
    """A journal banner: a logo cut from a photograph and a title, identical on every page."""
    from preprocessing.synth.base import photo_crop

    logo, _ = photo_crop(rng, 56, 90, gray=False)
    out = np.full((BANNER_H, 600, 3), 255, np.uint8)
    out[7:63, 7:97] = rgb(logo)
    cv2.putText(out, "Journal of Reproducible Results", (112, 45), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (20, 40, 120), 2,
                cv2.LINE_AA)
    return out


def with_banner(page: np.ndarray, top: np.ndarray) -> np.ndarray:
    page = rgb(page)
    w = max(page.shape[1], top.shape[1])
    out = np.full((page.shape[0] + BANNER_H, w, 3), 255, np.uint8)
    out[:BANNER_H, :top.shape[1]] = top
    out[BANNER_H:, :page.shape[1]] = page
    return out


def paste(page: np.ndarray, box, patch: np.ndarray) -> np.ndarray:
    """``patch`` over the panel at synth ``box`` (y, x, h, w): centre-cropped to it when larger."""
    y, x, h, w = box
    page = rgb(page).copy()
    ph, pw = patch.shape[:2]
    cy, cx = max(0, (ph - h) // 2), max(0, (pw - w) // 2)
    patch = rgb(np.ascontiguousarray(patch[cy:cy + h, cx:cx + w]))
    page[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    return page


def screen(paths: list, out: str, workers: int) -> tuple[dict, list, float, int]:
    """Run ``python -m serving.screen`` as a user would: (summary, findings, seconds, peak RSS in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "serving.screen", *paths, "--output", out, "--workers",
                           str(workers)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    findings = [json.loads(line) for line in open(os.path.join(out, "findings.jsonl"))]
    return json.loads(proc.stdout.splitlines()[0]), findings, seconds, max(peak, before) // 1024


def _children_cpu() -> float:
    """CPU seconds of finished child processes (the machine may be shared: wall time alone misleads)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def inside(box, synth_box, dy: int = 0) -> bool:
    """Whether the centre of a finding's box (x, y, w, h) lies in a synth panel (y, x, h, w)."""
    x, y, w, h = box
    py, px, ph, pw = synth_box
    cx, cy = x + w / 2, y + h / 2 - dy
    return px <= cx < px + pw and py <= cy < py + ph


def timing(tmp: str, rng) -> dict:
    pages = [figure_with_photos(rng).image for _ in range(FLAGS.figures)]
    path = os.path.join(tmp, "paper20.pdf")
    write_pdf(path, pages)
    cpu0 = _children_cpu()
    summary, findings, seconds, peak = screen([path], os.path.join(tmp, "out20"), FLAGS.workers)
    cpu = _children_cpu() - cpu0
    row = {"measure": "timing", "figures": FLAGS.figures, "workers": FLAGS.workers, "seconds": round(seconds, 1),
           "s_per_page": round(seconds / FLAGS.figures, 2), "cpu_s_per_page": round(cpu / FLAGS.figures, 2),
           "s_per_image": round(seconds / max(1, summary["images"]), 2),
           "peak_rss_mb": peak, "images": summary["images"], "findings": summary["findings"],
           "pixels_per_page_mp": round(float(np.mean([p.shape[0] * p.shape[1] for p in pages])) / 1e6, 2)}
    print(json.dumps(row), flush=True)
    return row


SCAN_SHAPE = (2200, 1700)  # an A4 page scanned at 200 dpi


def scan(rng) -> np.ndarray:
    """A unique large grey scan: smoothed noise at a few scales (texture everywhere, no repeats)."""
    h, w = SCAN_SHAPE
    small = rng.normal(128, 40, (h // 8, w // 8)).astype(np.float32)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 12, (h, w)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def long_pdf(tmp: str, rng) -> dict:
    """Peak memory of screening a ``--long_pages`` PDF of large scans, next to the timing document's."""
    path = os.path.join(tmp, "long.pdf")
    images = (Image.fromarray(scan(rng)) for _ in range(FLAGS.long_pages))
    next(images).save(path, save_all=True, append_images=images, resolution=200, quality=85)
    cpu0 = _children_cpu()
    summary, _, seconds, peak = screen([path], os.path.join(tmp, "out-long"), FLAGS.workers)
    row = {"measure": "long_pdf", "pages": FLAGS.long_pages, "scan_px": list(SCAN_SHAPE[::-1]),
           "file_mb": round(os.path.getsize(path) / 1e6, 1), "seconds": round(seconds, 1),
           "cpu_s_per_page": round((_children_cpu() - cpu0) / FLAGS.long_pages, 2), "peak_rss_mb": peak,
           "images": summary["images"], "findings": summary["findings"]}
    print(json.dumps(row), flush=True)
    return row


def reuse(tmp: str, rng) -> dict:
    found, total, rows = 0, 0, []
    for name, op in TRANSFORMS.items():
        for _ in range(FLAGS.reuse_docs):
            figs = [figure_with_photos(rng) for _ in range(3)]
            src = photo_panels(figs[0])[0]
            target = photo_panels(figs[2])[0]
            y, x, h, w = src.box
            patch = np.ascontiguousarray(op(rgb(figs[0].image)[y:y + h, x:x + w]))
            pages = [figs[0].image, figs[1].image, paste(figs[2].image, target.box, patch)]
            path = os.path.join(tmp, f"reuse-{len(rows)}.pdf")
            write_pdf(path, pages)
            _, findings, _, _ = screen([path], os.path.join(tmp, f"reuse-out-{len(rows)}"), FLAGS.workers)
            hit = any(f["kind"] == "across" and {f["a"]["page"], f["b"]["page"]} == {1, 3}
                      and any(inside(f[s]["box"], src.box) and inside(f[t]["box"], target.box)
                              for s, t in (("a", "b"), ("b", "a")) if f[s]["page"] == 1 and f[t]["page"] == 3)
                      for f in findings)
            kinds = [classify(f, figs) for f in findings]
            rows.append({"measure": "reuse", "transform": name, "found": hit, "findings": len(findings),
                         "within": kinds.count("within"), "shared_source": kinds.count("shared_source")})
            print(json.dumps(rows[-1]), flush=True)
            found += hit
            total += 1
    return {"reused": total, "found": found, "recall": round(found / total, 3)}


def _shared_source(a, b) -> bool:
    """Two synth panels cropped from overlapping windows of one photograph (they share pixels)."""
    sa, sb = a.source, b.source
    if not sa or not sb or sa.get("photo") != sb.get("photo"):
        return False
    (xa, ya, wa, ha), (xb, yb, wb, hb) = sa["window"], sb["window"]
    return min(xa + wa, xb + wb) > max(xa, xb) and min(ya + ha, yb + hb) > max(ya, yb)


def _panel_at(fig, box, dy: int):
    return next((p for p in fig.panels if inside(box, p.box, dy)), None)


def classify(f: dict, figs: list, dy: int = 0) -> str:
    """"within", "shared_source" (two panels cropped from overlapping windows of one photograph)
    or "across"."""
    if f["kind"] == "within":
        return "within"
    pa = _panel_at(figs[f["a"]["page"] - 1], f["a"]["box"], dy)
    pb = _panel_at(figs[f["b"]["page"] - 1], f["b"]["box"], dy)
    return "shared_source" if pa is not None and pb is not None and _shared_source(pa, pb) else "across"


def authentic(tmp: str, rng) -> dict:
    false_across, false_within, shared = 0, 0, 0
    for k in range(FLAGS.authentic_docs):
        top = banner(rng)
        figs = [figure_with_photos(rng) for _ in range(3)]
        path = os.path.join(tmp, f"authentic-{k}.pdf")
        write_pdf(path, [with_banner(f.image, top) for f in figs])
        summary, findings, _, _ = screen([path], os.path.join(tmp, f"authentic-out-{k}"), FLAGS.workers)
        kinds = [classify(f, figs, BANNER_H) for f in findings]
        fa, fw, sh = kinds.count("across"), kinds.count("within"), kinds.count("shared_source")
        for f, kind in zip(findings, kinds):
            if kind == "across":
                print(json.dumps({"false_across": {s: f[s]["label"] + f" {f[s]['box']}" for s in "ab"},
                                  "transform": f["transform"], "correlation": f["correlation"]}), flush=True)
        row = {"measure": "authentic", "doc": k, "false_across": fa, "false_within": fw, "shared_source": sh,
               "recurring_elements": summary["recurring_elements"]}
        print(json.dumps(row), flush=True)
        false_across += fa
        false_within += fw
        shared += sh
    return {"authentic_docs": FLAGS.authentic_docs, "false_across": false_across, "false_within": false_within,
            "shared_source_across": shared}


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"timing": timing(tmp, rng) if FLAGS.figures else None,
                  "reuse": reuse(tmp, rng) if FLAGS.reuse_docs else None,
                  "authentic": authentic(tmp, rng) if FLAGS.authentic_docs else None,
                  "long_pdf": long_pdf(tmp, rng) if FLAGS.long_pages else None}
    print(json.dumps({"summary": result}))


if __name__ == "__main__":
    app.run(main)
