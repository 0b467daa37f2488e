"""Pictures a reviewer reads: an image with its predicted copy pairs, each drawn as a numbered line
joining its two regions (no direction is claimed) with the transform in words, predicted
instances coloured by whether they match the truth, and the true instances that were missed.

Used by the demo's ``predictions.html`` and by the submission section of ``serving.report``.
Colours: a predicted instance that matches a true one (pixel F1 >= ``MATCH_F1`` in the metric's
Hungarian assignment) is green, one that matches nothing is red; a missed true instance is outlined
in orange. Pure functions of arrays, boxes and evidence records.
"""
from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from serving.metric import f1_matrix

MATCH_F1 = 0.5  # a predicted instance at least this close to a true one counts as found
TP, FP, MISS = (40, 170, 60), (220, 40, 40), (255, 150, 0)  # RGB
LINE = (30, 90, 230)
MAX_SIDE = 420  # pictures are downscaled to this longest side for the page


@dataclass
class Outcome:
    """Which predicted instances match the truth, and which true ones were missed."""

    matched: list  # bool per predicted instance
    missed: list  # indices of true instances no prediction matches


def match_instances(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> Outcome:
    """The metric's own assignment (Hungarian on pixel F1), thresholded at ``MATCH_F1``."""
    if not pred or not truth:
        return Outcome([False] * len(pred), list(range(len(truth))))
    f1 = f1_matrix(pred, truth)[: len(pred)]
    rows, cols = linear_sum_assignment(-f1)
    matched, found = [False] * len(pred), set()
    for r, c in zip(rows, cols):
        if f1[r, c] >= MATCH_F1:
            matched[r], found = True, found | {int(c)}
    return Outcome(matched, [k for k in range(len(truth)) if k not in found])


def _outline(canvas: np.ndarray, mask: np.ndarray, colour, thickness: int, fill: float = 0.0):
    small = cv2.resize(mask.astype(np.uint8), (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_NEAREST)
    if fill:
        sel = small.astype(bool)
        canvas[sel] = ((1 - fill) * canvas[sel] + fill * np.array(colour)).astype(np.uint8)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, colour, thickness)


def _centre(box, scale: float) -> tuple[int, int]:
    x, y, w, h = box
    return int(round((x + w / 2) * scale)), int(round((y + h / 2) * scale))


def draw(rgb: np.ndarray, pred: Sequence[np.ndarray], truth: Sequence[np.ndarray],
         pairs: Sequence[dict] = (), max_side: int = MAX_SIDE) -> tuple[np.ndarray, Outcome]:
    """The picture of one image: predicted instances (green found / red false), missed true
    instances (orange), and a numbered line joining the two regions of each pair (no arrow: which one is the
    original is not known)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    canvas = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = np.ascontiguousarray(canvas)
    outcome = match_instances(pred, truth)
    for k in outcome.missed:
        _outline(canvas, truth[k], MISS, 2)
    for m, ok in zip(pred, outcome.matched):
        _outline(canvas, m, TP if ok else FP, 2, fill=0.25)
    for n, pair in enumerate(pairs, 1):
        a, b = _centre(pair["source_box"], scale), _centre(pair["copy_box"], scale)
        cv2.line(canvas, a, b, LINE, 2, cv2.LINE_AA)
        middle = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        cv2.putText(canvas, str(n), middle, cv2.FONT_HERSHEY_SIMPLEX, 0.6, LINE, 2, cv2.LINE_AA)
    return canvas, outcome


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    return buf.tobytes()


def data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode()


def pair_lines(pairs: Sequence[dict]) -> list[str]:
    """One line per pair, numbered as on the picture: "1. regions at ... and ... match: ..."."""
    return [f"{n}. {p['description']} (inliers {p['inliers']}, correlation {p['correlation']:.2f})"
            for n, p in enumerate(pairs, 1)]


def verdict(truth: Sequence, pred: Sequence) -> str:
    """"true positive" / "false positive" / "missed" / "true negative" at the image level."""
    return {(True, True): "forged, flagged", (False, True): "FALSE POSITIVE: authentic, flagged",
            (True, False): "MISSED: forged, called authentic", (False, False): "authentic, not flagged"}[
        (bool(truth), bool(pred))]


def review_order(truth_forged: dict, flagged: dict, n: int, seed: int = 0) -> list[str]:
    """The ``n`` case ids a reviewer looks at first: authentic images that were flagged, then forged
    ones (found or missed, a reproducible sample), then a few authentic ones left alone.
    ``truth_forged``, ``flagged``: case_id -> bool."""
    rng = np.random.default_rng(seed)
    ids = sorted(truth_forged)
    false_pos = [c for c in ids if not truth_forged[c] and flagged.get(c, False)]
    forged = [c for c in ids if truth_forged[c]]
    quiet = [c for c in ids if not truth_forged[c] and not flagged.get(c, False)]
    picked = false_pos[:n]
    picked += list(rng.permutation(forged)[:max(0, n - len(picked) - n // 4)]) if forged else []
    picked += list(rng.permutation(quiet)[:max(0, n - len(picked))]) if quiet else []
    return [str(c) for c in picked]


def card(case_id: str, rgb: np.ndarray, pred: Sequence[np.ndarray], truth: Sequence[np.ndarray],
         pairs: Sequence[dict] = (), score: Optional[float] = None, png_path: Optional[str] = None) -> str:
    """An HTML block for one image: the picture, its image-level verdict and the pairs in words. The
    picture is inlined, or written to ``png_path`` and linked by its file name."""
    picture, outcome = draw(rgb, pred, truth, pairs)
    if png_path:
        from preprocessing import outputs

        with outputs.atomic_file(png_path, "wb") as f:
            f.write(png_bytes(picture))
        src = html.escape(os.path.basename(png_path))
    else:
        src = data_uri(picture)
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in pair_lines(pairs))
    found = sum(outcome.matched)
    facts = (f"{html.escape(verdict(truth, pred))}; {len(truth)} true, {len(pred)} predicted instances "
             f"({found} found, {len(pred) - found} false, {len(outcome.missed)} missed)"
             + (f"; oF1 {score:.2f}" if score is not None else ""))
    return (f"<div class='card'><h3>{html.escape(case_id)}</h3><img src='{src}'>"
            f"<p>{facts}</p><ol>{lines}</ol></div>")


CSS = (".card{display:inline-block;vertical-align:top;width:440px;margin:6px;font:13px sans-serif}"
       ".card img{max-width:430px;border:1px solid #ccc}.legend span{padding:0 6px;margin-right:8px}")
LEGEND = (f"<p class='legend'>Predicted instance <span style='border:2px solid rgb{TP}'>found</span>"
          f"<span style='border:2px solid rgb{FP}'>false</span>; missed true instance "
          f"<span style='border:2px solid rgb{MISS}'>outlined</span>; a numbered line joins the two regions "
          "that match (which one is the original is not claimed).</p>")
