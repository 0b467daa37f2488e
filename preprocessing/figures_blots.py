"""Western blot and gel panels with the labels papers put around them.

A blot is one to four strips (one protein each) sharing lanes: "+ −" treatment rows above,
protein names at the right, kDa markers at the left. A gel has a ladder lane ("M"), numbered
lanes and bp sizes. The strips themselves are ``synth.western_blot`` / ``synth.gel`` drawn
with a fixed lane geometry, so labels and lane boxes line up with the bands.
"""
from __future__ import annotations

import numpy as np

from preprocessing import synth
from preprocessing.figures_page import Box, Page

MINUS = "\u2212"  # the typographic minus papers use in "+ −" rows
TREATMENTS = ("siRNA", "shRNA", "TNF-\u03b1", "LPS", "Dox", "IFN-\u03b3", "MG132", "EGF", "Insulin", "CHX",
              "H\u2082O\u2082")
PROTEINS = ("p-ERK1/2", "ERK1/2", "p-AKT", "AKT", "LC3-I/II", "p62", "Cleaved caspase-3", "PARP", "HIF-1\u03b1",
            "p53", "Bcl-2", "Bax", "Vinculin", "c-Myc", "NF-\u03baB p65")
LOADING = ("\u03b2-actin", "GAPDH", "\u03b1-tubulin")  # the loading control is the last strip
KDA = (15, 17, 25, 35, 42, 55, 70, 100, 130)
BP = (100, 250, 500, 750, 1000, 2000, 5000)
MAX_LANES = 10  # a blot strip in a figure rarely shows more
MIN_PITCH = 9  # px per lane: narrower lanes stop looking like lanes
MIN_STRIP_H = 10
LANE_GAP = 1  # px kept free on each side of a lane box, so neighbouring lane boxes never touch
TINTED_BLOT_PROB = 0.15  # most blots are shown in grey; some scans keep a faint colour cast
ROW_PITCH = 1.35  # label row height in font sizes


def lane_geometry(rng: np.random.Generator, strip_w: int, max_lanes: int) -> tuple[int, float, float]:
    """(lanes, side margin, band width) for ``synth._lane_pattern``: 3 to ``max_lanes`` lanes."""
    n = int(rng.integers(3, max(3, min(max_lanes, strip_w // MIN_PITCH)) + 1))
    margin = strip_w * rng.uniform(0.03, 0.08)
    pitch = (strip_w - 2 * margin) / n
    return n, margin, pitch * rng.uniform(0.6, 0.8)


def lane_boxes(box: Box, lanes: tuple[int, float, float]) -> tuple[Box, ...]:
    """Page boxes of each lane of a strip (full strip height, one lane pitch minus a gap)."""
    y, x, h, w = box
    n, margin, _ = lanes
    pitch = (w - 2 * margin) / n
    out = []
    for i in range(n):
        x0 = int(np.ceil(x + margin + i * pitch)) + LANE_GAP
        x1 = int(np.floor(x + margin + (i + 1) * pitch)) - LANE_GAP
        out.append((y, x0, h, x1 - x0))
    return tuple(out)


def lane_centres(box: Box, lanes: tuple[int, float, float]) -> list[float]:
    y, x, h, w = box
    n, margin, _ = lanes
    pitch = (w - 2 * margin) / n
    return [x + margin + (i + 0.5) * pitch for i in range(n)]


def _sign_rows(page: Page, rng: np.random.Generator, centres: list, top: float, names: list,
               label_x: int) -> None:
    """"+ −" rows above lanes, each with its treatment name right-aligned at ``label_x``."""
    fs = page.font_size
    n = len(centres)
    for r, name in enumerate(names):
        yc = top + (r + 0.5) * fs * ROW_PITCH
        period = 2 ** r  # factorial designs: the sign alternates every 1, 2, 4 lanes
        signs = [(i // period) % 2 == 1 for i in range(n)] if rng.random() < 0.7 else list(rng.random(n) < 0.5)
        for c, plus in zip(centres, signs):
            page.text("+" if plus else MINUS, yc, c, "cm", "lane_label")
        page.text(name, yc, label_x, "rm", "treatment")


def _widest(page: Page, texts) -> int:
    return max((page.text_size(t)[1] for t in texts), default=0)


def compose_blot(page: Page, rng: np.random.Generator, slot: Box, group: int) -> bool:
    """Draw a blot in ``slot``; False (nothing drawn) if it cannot fit legibly."""
    y, x, h, w = slot
    fs = page.font_size
    n_strips = int(rng.integers(1, 5))
    proteins = [str(p) for p in rng.choice(PROTEINS, n_strips - 1, replace=False)] + [str(rng.choice(LOADING))]
    kdas = [f"{k} \u2014" for k in sorted(rng.choice(KDA, n_strips, replace=False), reverse=True)]
    names = [str(t) for t in rng.choice(TREATMENTS, int(rng.integers(1, 4)), replace=False)]
    left = max(_widest(page, kdas), _widest(page, names)) + fs // 2
    right = _widest(page, proteins) + fs // 2
    top = int(len(names) * fs * ROW_PITCH) + fs // 3
    gap = max(2, int(fs * rng.uniform(0.3, 0.8)))
    strip_w = w - left - right
    strip_h = int(min((h - top - gap * (n_strips - 1)) / n_strips, strip_w * rng.uniform(0.12, 0.3)))
    max_lanes = min(MAX_LANES, strip_w // (_widest(page, ["+", MINUS]) + 3))  # signs must not touch
    if max_lanes < 3 or strip_h < max(MIN_STRIP_H, fs):
        return False
    lanes = lane_geometry(rng, strip_w, max_lanes)
    sx = x + left
    sy = y + top
    centres = lane_centres((sy, sx, strip_h, strip_w), lanes)
    _sign_rows(page, rng, centres, y, names, sx - fs // 3)
    rgb = page.rgb and rng.random() < TINTED_BLOT_PROB
    for i, (protein, kda) in enumerate(zip(proteins, kdas)):
        box = (sy, sx, strip_h, strip_w)
        page.place(synth.western_blot(rng, strip_h, strip_w, rgb, lanes=lanes), box, "blot", group,
                   lanes=lane_boxes(box, lanes))
        page.text(protein, sy + strip_h / 2, sx + strip_w + fs // 3, "lm", "protein")
        page.text(kda, sy + strip_h / 2, sx - 2, "rm", "kda")
        sy += strip_h + gap
    return True


def compose_gel(page: Page, rng: np.random.Generator, slot: Box, group: int) -> bool:
    """Draw an agarose gel (ladder lane "M", numbered lanes, bp sizes) in ``slot``; False if too small."""
    y, x, h, w = slot
    fs = page.font_size
    sizes = [f"{s} bp" for s in sorted(rng.choice(BP, int(rng.integers(3, 6)), replace=False), reverse=True)]
    names = [str(t) for t in rng.choice(TREATMENTS, int(rng.integers(0, 2)), replace=False)]
    left = max(_widest(page, sizes), _widest(page, names)) + fs // 2
    top = int((len(names) + 1) * fs * ROW_PITCH) + fs // 3
    gw = w - left - fs
    gh = int(min(h - top, gw * rng.uniform(0.5, 0.9)))
    max_lanes = min(MAX_LANES + 2, gw // (_widest(page, ["+", MINUS, "M"]) + 3))
    if max_lanes < 4 or gh < 3 * fs:
        return False
    lanes = lane_geometry(rng, gw, max_lanes)
    box = (y + top, x + left, gh, gw)
    rgb = page.rgb and rng.random() < 0.4
    page.place(synth.gel(rng, gh, gw, rgb, lanes=lanes), box, "gel", group, lanes=lane_boxes(box, lanes)[1:])
    centres = lane_centres(box, lanes)
    numbered = _widest(page, [str(len(centres) - 1)]) < (centres[1] - centres[0]) * 0.8  # else only "M"
    for i, c in enumerate(centres if numbered else centres[:1]):
        page.text("M" if i == 0 else str(i), y + fs * 0.7, c, "cm", "lane_label")
    _sign_rows(page, rng, centres[1:], y + fs * ROW_PITCH, names, box[1] - fs // 3)
    sizes = sizes[:max(1, int(gh * 0.8 / (fs * ROW_PITCH)))]  # as many as fit beside the gel
    for k, size in enumerate(sizes):  # spaced like a ladder: tighter towards the small sizes
        yk = box[0] + gh * (0.12 + 0.8 * ((k + 0.5) / len(sizes)) ** 1.3)
        page.text(size, yk, box[1] - fs // 3, "rm", "bp")
    return True
