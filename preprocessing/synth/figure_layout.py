"""Where a figure's panels go: page size, rows and columns, gutters, label space.

Page size rule: the width is drawn from [min_size, max_size], raised to at least 400 px when
max_size allows (real compound figures are 400-1500 px wide) and never below FIGURE_MIN_SIDE;
the height follows from the rows (panel aspect plus label space), shrunk to fit max_size and
padded with white to reach the lower bound. Small pages get fewer columns and 8 px text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocessing.errors import UsageError
from preprocessing.synth.figure_page import Box

FIGURE_WIDTH = (400, 1500)  # px: the width of real compound figures
FIGURE_MIN_SIDE = 128  # px: the smallest page that holds two panels with legible labels
MIN_SLOT = 64  # px: narrowest column (a blot needs room for labels and three lanes)
SLOT_WIDTH = 220  # px: typical column width, so 1000 px pages hold 3-4 columns
MAX_COLS = 4
PANELS = (2, 6)  # panels per figure, as in the competition's figures
FONT = (0.013, 0.019)  # text height as a fraction of the page width (paper figures at print size)
MIN_FONT, MAX_FONT = 8, 24  # px: below 8 text is unreadable; above 22 it is a poster
IMAGING = ("micrograph", "fluorescence")
ASSAYS = ("blot", "gel", "chart", "micrograph")
ASSAY_WEIGHTS = (0.4, 0.15, 0.3, 0.15)
TEMPLATES = ("imaging", "assay", "combo")  # all images, all assays, images over assays
TEMPLATE_WEIGHTS = (0.4, 0.25, 0.35)
ASPECT = {"micrograph": (0.7, 1.05), "fluorescence": (0.8, 1.05), "blot": (0.55, 0.95), "gel": (0.65, 0.9),
          "chart": (0.75, 1.0)}  # content height / width


def width_range(min_size: int, max_size: int) -> tuple[int, int]:
    """The page widths the size options allow (see the module docstring); ValueError if none."""
    if min_size > max_size:
        raise UsageError(f"min_size {min_size} exceeds max_size {max_size}")
    if max_size < FIGURE_MIN_SIDE:
        raise UsageError(f"figures need max_size >= {FIGURE_MIN_SIDE}, got {max_size}")
    lo = max(min_size, FIGURE_MIN_SIDE, FIGURE_WIDTH[0] if max_size >= FIGURE_WIDTH[0] else 0)
    return lo, max_size


def font_size(rng: np.random.Generator, width: int) -> int:
    return int(np.clip(round(width * rng.uniform(*FONT)), MIN_FONT, MAX_FONT))


@dataclass
class Slot:
    box: Box  # the whole cell: label space on top, then content
    kind: str
    row: int
    col: int


@dataclass
class Layout:
    height: int
    width: int
    slots: list
    template: str
    top_reserve: int  # px at the top of every slot for the panel letter / column headers


def _row_counts(rng: np.random.Generator, n: int, max_cols: int) -> list[int]:
    """Split ``n`` panels into as few rows as ``max_cols`` allows, sometimes one more (at most 3,
    and never a row of one panel when the page has room for two)."""
    rows = int(np.ceil(n / max_cols))
    if rows < 3 and n // (rows + 1) >= min(2, max_cols) and rng.random() < 0.4:
        rows += 1
    base, extra = divmod(n, rows)
    return [base + (r < extra) for r in range(rows)]


def _row_kinds(rng: np.random.Generator, template: str, counts: list[int]) -> list[list[str]]:
    imaging = IMAGING[int(rng.random() < 0.5)]
    out = []
    for r, c in enumerate(counts):
        if template == "imaging" or (template == "combo" and r < max(1, len(counts) - 1)):
            out.append([imaging] * c)
        else:
            out.append([ASSAYS[i] for i in rng.choice(len(ASSAYS), c, p=ASSAY_WEIGHTS)])
    return out


def plan(rng: np.random.Generator, width: int, min_h: int, max_h: int, font: int, reserve: int) -> Layout:
    """Rows of slots filling a page of ``width``; ``reserve`` px of label space tops each slot."""
    max_cols = int(np.clip(width // MIN_SLOT, 1, MAX_COLS))
    max_cols = min(max_cols, max(1, int(round(width / SLOT_WIDTH * rng.uniform(0.9, 1.6)))))
    n = int(rng.integers(PANELS[0], min(PANELS[1], 3 * max_cols) + 1))
    n = max(n, min(2 * max_cols, PANELS[1])) if max_cols >= 3 and rng.random() < 0.5 else n  # fill wide pages
    template = TEMPLATES[int(rng.choice(len(TEMPLATES), p=TEMPLATE_WEIGHTS))]
    counts = _row_counts(rng, n, max_cols)
    kinds = _row_kinds(rng, template, counts)
    margin = max(2, font // 2)
    gutter_x = [max(2, int(font * rng.uniform(0.2, 1.5))) for _ in counts]  # tight image grids, looser assays
    gutter_y = max(2, int(font * rng.uniform(0.3, 1.2)))
    widths, heights = [], []
    for row, gx in zip(kinds, gutter_x):
        free = width - 2 * margin - gx * (len(row) - 1)
        share = np.ones(len(row)) if row[0] in IMAGING else rng.uniform(0.7, 1.3, len(row))
        w = np.floor(free * share / share.sum()).astype(int)
        widths.append(w)
        aspect = rng.uniform(*ASPECT[row[0]])  # one aspect per row, so a row's panels line up
        heights.append(int(max(rng.uniform(*ASPECT[k]) if k not in IMAGING else aspect for k in row)
                           * w.mean()) + reserve)
    fixed = 2 * margin + gutter_y * (len(kinds) - 1)
    total = fixed + sum(heights)
    if total > max_h:  # shrink the rows' content (never the label space) to fit the page
        f = (max_h - fixed - reserve * len(heights)) / max(1, total - fixed - reserve * len(heights))
        heights = [reserve + int((h - reserve) * f) for h in heights]
    out, y = [], margin
    for r, (row, w, h) in enumerate(zip(kinds, widths, heights)):
        x = margin
        for c, (kind, wc) in enumerate(zip(row, w)):
            out.append(Slot((y, x, h, int(wc)), kind, r, c))
            x += int(wc) + gutter_x[r]
        y += h + gutter_y
    height = int(np.clip(y - gutter_y + margin, min_h, max_h))
    return Layout(height, width, out, template, reserve)
