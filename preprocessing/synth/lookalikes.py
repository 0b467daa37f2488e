"""Authentic look-alikes: legitimate repeats a copy-move detector must leave alone.

- ``channel_merge``: a channel-split fluorescence figure, rows of one field shown per channel
  (DAPI, GFP, ...) followed by its Merge (the sum of the tinted channels, so the merge contains
  every channel by construction), each panel labelled with its channel name in the dye's colour
  (the same coloured "GFP" in every row);
- ``coloured_labels``: different micrographs, each with the same label ("GFP") and scale bar
  drawn in one colour, vivid or muted (the pen colours the decoration finder may miss);
- ``cell_field``: a field of a few hundred look-alike cells (one shape, small variations);
- ``inset``: a micrograph with an inset that zooms into part of it (framed, in a corner);
- ``grid``: a regular lattice (wells, a grating) with sensor noise.
Each returns (uint8 image, record) where the record says what was drawn, for synth_meta.json.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from preprocessing.synth import figure_photos as photos
from preprocessing.synth.figure_page import Page

LOOKALIKES = ("channel_merge", "coloured_labels", "cell_field", "inset", "grid")
# Channels of a split figure: (label, view of the IHC slide, dye colour); DAPI comes first as in papers.
SPLIT_CHANNELS = (("DAPI", "immunohistochemistry:hematoxylin", (60, 110, 255)),
                  ("GFP", "immunohistochemistry:dab", (40, 230, 60)))
SPLIT_ROWS = (1, 2)  # conditions shown (each row: channels then merge)
PAGE_MARGIN, GUTTER = 6, 4  # px around and between panels, as in tight fluorescence grids
LABEL_LIGHTEN = 60  # labels are drawn a little lighter than the dye so they stand out on black
# Label colours of ``coloured_labels``: dye colours as drawn, a darker green, a pink and an orange.
LABEL_COLOURS = ((40, 230, 60), (60, 110, 255), (255, 50, 40), (0, 128, 0), (255, 150, 150), (230, 120, 0))
LABEL_TEXTS = ("GFP", "RFP", "DAPI", "CD31", "Ki67")
FIELD_CELLS = 200  # look-alike cells per field (the "a field of 200 look-alike cells")
CELL_RADIUS = (5.0, 8.0)  # px, one cell type: radii vary little
CELL_NOISE = 3.0  # sensor noise, grey levels
INSET_ZOOM = (2.0, 3.0)  # magnification of an inset
INSET_SIDE = 0.35  # inset side as a share of the panel's shorter side
GRID_PITCH = (14, 30)  # px between lattice points


def channel_merge(rng: np.random.Generator, panel: int = 160, font: int = 12) -> tuple[np.ndarray, dict]:
    """A channel-split figure with its Merge panels (see the module docstring)."""
    rows = int(rng.integers(SPLIT_ROWS[0], SPLIT_ROWS[1] + 1))
    cols = len(SPLIT_CHANNELS) + 1
    h = 2 * PAGE_MARGIN + rows * panel + (rows - 1) * GUTTER
    w = 2 * PAGE_MARGIN + cols * panel + (cols - 1) * GUTTER
    page = Page.blank(h, w, True, font)
    used: dict = {}
    windows = []
    for r in range(rows):
        picked = photos.pick_window(rng, SPLIT_CHANNELS[0][1], panel, panel, used)
        if picked is None:
            break
        window, k = picked
        used.setdefault("immunohistochemistry", []).append(window)
        windows.append([int(v) for v in window])
        tinted = [photos.tint(photos.crop(view, window, k, panel, panel), colour) for _, view, colour in SPLIT_CHANNELS]
        merge = np.minimum(sum(tinted), 255)
        y = PAGE_MARGIN + r * (panel + GUTTER)
        for c, (image, name) in enumerate(zip(tinted + [merge], [ch[0] for ch in SPLIT_CHANNELS] + [photos.MERGE])):
            x = PAGE_MARGIN + c * (panel + GUTTER)
            page.place(np.rint(image).astype(np.uint8), (y, x, panel, panel), "fluorescence", r * cols + c)
            colour = (255, 255, 255) if c == cols - 1 else tuple(min(255, v + LABEL_LIGHTEN) for v in
                                                                  SPLIT_CHANNELS[c][2])
            page.text(name, y + 3, x + panel - 3, "rt", "channel", rgb=colour)
    return page.canvas, {"lookalike": "channel_merge", "rows": len(windows), "windows": windows,
                         "channels": [ch[0] for ch in SPLIT_CHANNELS]}


def coloured_labels(rng: np.random.Generator, panel: int = 150, font: int = 14) -> tuple[np.ndarray, dict]:
    """3-4 different micrographs in a row, each with the same coloured label and scale bar."""
    cols = int(rng.integers(3, 5))
    colour = LABEL_COLOURS[int(rng.integers(len(LABEL_COLOURS)))]
    text = LABEL_TEXTS[int(rng.integers(len(LABEL_TEXTS)))]
    page = Page.blank(2 * PAGE_MARGIN + panel, 2 * PAGE_MARGIN + cols * panel + (cols - 1) * GUTTER, True, font)
    used: dict = {}
    kind = "fluorescence" if rng.random() < 0.5 else "micrograph"
    channel = next(c for c in photos.CHANNELS if c[0] == "GFP") if kind == "fluorescence" else None
    for c in range(cols):
        drawn = photos.micrograph(rng, kind, panel, panel, used, channel)
        if drawn is None:
            break
        x = PAGE_MARGIN + c * (panel + GUTTER)
        page.place(drawn[0], (PAGE_MARGIN, x, panel, panel), kind, c)
        page.text(text, PAGE_MARGIN + 4, x + 4, "lt", "channel", rgb=colour)
        bar = (PAGE_MARGIN + panel - 8, x + panel - 40, 3, 30)
        page.fill(bar, colour)
    return page.canvas, {"lookalike": "coloured_labels", "label": text, "colour": list(colour), "panels": cols,
                         "kind": kind}


def _cell(radius: float, aspect: float, angle: float) -> np.ndarray:
    """A soft elliptical cell with a brighter nucleus, float32 in [0, 1]."""
    s = int(np.ceil(2 * radius * max(aspect, 1.0))) + 4
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) - (s - 1) / 2.0
    c, si = np.cos(angle), np.sin(angle)
    u, v = (c * xx + si * yy) / (radius * aspect), (-si * xx + c * yy) / radius
    r2 = u * u + v * v
    return np.clip(0.6 * np.exp(-r2 ** 2) + 0.4 * np.exp(-4 * r2), 0, 1)


def cell_field(rng: np.random.Generator, h: int = 360, w: int = 480, cells: int = FIELD_CELLS
               ) -> tuple[np.ndarray, dict]:
    """A fluorescence-like field of ``cells`` look-alike cells on a dark background."""
    out = np.zeros((h, w), np.float32)
    placed = 0
    for _ in range(cells * 4):
        if placed == cells:
            break
        cell = _cell(rng.uniform(*CELL_RADIUS), rng.uniform(1.0, 1.3), rng.uniform(0, np.pi))
        s = cell.shape[0]
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        out[y:y + s, x:x + s] = np.maximum(out[y:y + s, x:x + s], cell * rng.uniform(0.7, 1.0))
        placed += 1
    out = cv2.GaussianBlur(out, (0, 0), 0.8) * 200 + 15
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(CELL_NOISE)
    grey = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    colour = np.array([40, 230, 60], np.float32) / 255.0  # one dye
    image = np.clip(np.rint(grey[:, :, None] * colour), 0, 255).astype(np.uint8)
    return image, {"lookalike": "cell_field", "cells": placed}


def inset(rng: np.random.Generator, h: int = 360, w: int = 480) -> Optional[tuple[np.ndarray, dict]]:
    """A micrograph with a framed inset zooming into part of it (top-right corner)."""
    drawn = photos.micrograph(rng, "micrograph", h, w, {})
    if drawn is None:
        return None
    image, source = drawn
    image = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    side = int(INSET_SIDE * min(h, w))
    zoom = rng.uniform(*INSET_ZOOM)
    src = max(8, int(side / zoom))
    y, x = int(rng.integers(h // 2, h - src)), int(rng.integers(0, w // 2 - src))
    patch = cv2.resize(image[y:y + src, x:x + src], (side, side), interpolation=cv2.INTER_CUBIC)
    out = image.copy()
    out[2:2 + side, w - side - 2:w - 2] = patch
    cv2.rectangle(out, (w - side - 3, 1), (w - 2, side + 2), (255, 255, 255), 1)
    cv2.rectangle(out, (x, y), (x + src - 1, y + src - 1), (255, 255, 255), 1)  # where the inset comes from
    return out, {"lookalike": "inset", "zoom": round(float(zoom), 2), "from": [y, x, src, src], "source": source}


def grid(rng: np.random.Generator, h: int = 360, w: int = 480) -> tuple[np.ndarray, dict]:
    """A regular lattice of identical wells (a plate, a grating) under sensor noise."""
    pitch = int(rng.integers(*GRID_PITCH))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.3 * pitch
    dy = (yy % pitch) - pitch / 2.0
    dx = (xx % pitch) - pitch / 2.0
    wells = np.exp(-((dx * dx + dy * dy) / (r * r)) ** 2)
    img = 60 + 150 * wells + rng.standard_normal((h, w)).astype(np.float32) * np.float32(CELL_NOISE)
    grey = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2), {"lookalike": "grid", "pitch": pitch}


def lookalike(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, dict]:
    """One authentic look-alike image of ``kind`` (one of ``LOOKALIKES``)."""
    if kind == "channel_merge":
        return channel_merge(rng)
    if kind == "coloured_labels":
        return coloured_labels(rng)
    if kind == "cell_field":
        return cell_field(rng)
    if kind == "inset":
        drawn = inset(rng)
        if drawn is not None:
            return drawn
        return cell_field(rng)
    if kind == "grid":
        return grid(rng)
    raise ValueError(f"unknown look-alike {kind!r}; one of {LOOKALIKES}")
