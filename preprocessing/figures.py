"""Synthetic compound scientific figures, authentic or with copy-moves: the ``figures`` style of
``preprocessing.synth``.

A figure is a white page with 2-6 lettered panels in rows: micrographs (crops of scikit-image's
offline photographs, brightfield or fluorescence-tinted), western blots, agarose gels and
charts, with the decorations of a paper's figure drawn in DejaVu Sans: panel letters in one
style, the same scale bar and label in several micrographs, channel names or column headers,
"+ −" lane rows, kDa / bp markers, protein names, axis text, stars and legends. Those are the
legitimate repeats a detector must not flag. Copy-moves (``figures_forgery``) stay inside
panels and off the decorations. See ``figures_layout`` for the page-size rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from preprocessing import figures_photos as photos
from preprocessing.figures_blots import compose_blot, compose_gel
from preprocessing.figures_charts import PALETTES, compose_chart
from preprocessing.figures_forgery import forge_figure
from preprocessing.figures_layout import IMAGING, font_size, plan, width_range
from preprocessing.figures_page import Box, Decoration, Page

# one label per figure, drawn under every (or the last) micrograph's scale bar
SCALE_LABELS = ("10 \u00b5m", "20 \u00b5m", "50 \u00b5m", "100 \u00b5m", "200 \u00b5m", "500 nm")
# column headers over brightfield micrographs
CONDITIONS = ("Control", "Vehicle", "Sham", "siNC", "siRNA", "Treated", "WT", "KO", "Day 0", "Day 7", "Mock",
              "Infected")
LETTERS = "abcdef"  # one per panel (2-6), upper or lower case per figure
NUCLEAR = ("DAPI", "Hoechst")  # the stains papers show first in a channel row
LOOKALIKE_PROB = 0.3  # figures with two different crops of one photograph in two micrographs
RGB_PROB = 0.75  # the rest are greyscale pages
DARK = 110  # mean grey under a label below which it is drawn in white
FIGURE_ATTEMPTS = 8  # layouts drawn before giving up (tiny pages may not fit two panels)


@dataclass
class Figure:
    """An authentic figure: its page (uint8, grey or RGB) and what is where on it."""

    image: np.ndarray
    panels: list
    decorations: list
    info: dict

    def meta(self) -> dict:
        return {**self.info, "panels": [p.to_dict() for p in self.panels],
                "decorations": [d.to_dict() for d in self.decorations]}


def _ink_for(page: Page, box: Box) -> tuple:
    """White on a dark background, black on a light one."""
    y, x, h, w = box
    return (255, 255, 255) if page.canvas[y:y + h, x:x + w].mean() < DARK else (0, 0, 0)


def _scale_bar(page: Page, box: Box, length: int, label: str, inks: dict, kind: str) -> None:
    """Bar and label at the panel's bottom right, identical in every micrograph of the figure: the
    first panel of each kind picks the colour (``inks``) that the others reuse, as authors do."""
    y, x, h, w = box
    fs = page.font_size
    th, tw = page.text_size(label)
    thick = max(2, fs // 4)
    pad = max(3, fs // 2)
    if length > 0.45 * w or tw > 0.6 * w or th + thick + 2 * pad > 0.4 * h:
        return
    bar = (y + h - pad - thick, x + w - pad - max(length, tw) // 2 - length // 2, thick, length)
    ink = inks.setdefault(kind, _ink_for(page, (bar[0] - th - 2, bar[1], th + thick + 2, length)))
    page.fill(bar, ink)
    page.decorations.append(Decoration(bar, "scale_bar", label))
    page.text(label, bar[0] - 2, bar[1] + length / 2, "cb", "scale_label", rgb=ink)


def _letter(page: Page, style: dict, i: int, slot: Box, panel: Optional[Box]) -> None:
    """The panel letter: in the label space above the slot, or inside the micrograph's corner."""
    text = LETTERS[i].upper() if style["upper"] else LETTERS[i]
    text = f"({text})" if style["paren"] else text
    if style["inside"] and panel is not None:
        pad = max(2, page.font_size // 3)
        size = page.text_size(text, style["size"], style["bold"])
        ink = _ink_for(page, (panel[0] + pad, panel[1] + pad) + size)
        page.text(text, panel[0] + pad, panel[1] + pad, "lt", "letter", style["size"], style["bold"], ink)
    else:
        page.text(text, slot[0], slot[1], "lt", "letter", style["size"], style["bold"])


def _imaging(page: Page, rng: np.random.Generator, slot, content: Box, group: int, fig: dict) -> Optional[Box]:
    """A micrograph panel with its scale bar and channel name; its box, or None if no crop fits."""
    y, x, h, w = content
    channel = fig["channels"][slot.col % len(fig["channels"])] if slot.kind == "fluorescence" else None
    keys = fig["lookalike"] if slot in fig["lookalike_slots"] else None
    drawn = photos.micrograph(rng, slot.kind, h, w, fig["used"], channel, keys)
    if drawn is None:
        return None
    image, source = drawn
    page.place(image, content, slot.kind, group, source=source)
    if fig["bars"] == "all" or slot.col == fig["last_col"].get(slot.row):
        _scale_bar(page, content, fig["bar_len"], fig["bar_label"], fig["inks"], slot.kind)
    name = channel[0] if channel else photos.MERGE if slot.kind == "fluorescence" else fig["headers"].get(slot.col)
    if not name:
        return content
    tw = page.text_size(name)[1]
    if fig["label_inside"] and slot.kind == "fluorescence" and tw < w / 2:  # in the dye's colour, top right
        pad = max(2, page.font_size // 3)
        colour = tuple(int(min(255, c + 60)) for c in channel[2]) if channel else (255, 255, 255)
        page.text(name, y + pad, x + w - pad, "rt", "channel", rgb=colour)
    elif slot.row == 0 and tw < w - 4 * fig["reserve"]:  # a column header, clear of the panel letter
        page.text(name, y - 2, x + w / 2, "cb", "header")
    return content


def _figure_style(rng: np.random.Generator, page: Page, layout) -> dict:
    """The choices one figure makes once for all its panels."""
    imaging = [s for s in layout.slots if s.kind in IMAGING]
    cols = max((s.col for s in imaging), default=0) + 1
    order = [photos.CHANNELS[k] for k in rng.permutation(len(photos.CHANNELS))]
    nuclear = [c for c in order if c[0] in NUCLEAR]
    first = nuclear[0] if rng.random() < 0.6 else order[0]  # usually a nuclear stain first
    channels = [first] + [c for c in order if c[0] not in NUCLEAR and c is not first][:cols - 1]
    if cols >= 3 and rng.random() < 0.6:
        channels[-1] = None  # the last column is the merge
    narrow = min((s.box[3] for s in imaging), default=page.canvas.shape[1])
    micro = [s for s in imaging if s.kind == "micrograph"]
    lookalike = rng.random() < LOOKALIKE_PROB and len(micro) >= 2
    pair = rng.choice(len(micro), 2, replace=False) if lookalike else ()
    return {
        "channels": channels,
        "bars": "all" if rng.random() < 0.7 else "last",
        "last_col": {s.row: s.col for s in imaging},
        "bar_len": max(6, int(narrow * rng.uniform(0.15, 0.3))),
        "bar_label": str(rng.choice(SCALE_LABELS)),
        "label_inside": bool(rng.random() < 0.5),
        "headers": dict(enumerate(rng.choice(CONDITIONS, cols, replace=False))) if rng.random() < 0.6 else {},
        "lookalike": (str(rng.choice(photos.available(photos.BRIGHTFIELD))),) if lookalike else None,
        "lookalike_slots": [micro[int(k)] for k in pair],
        "used": {},
        "inks": {},
    }


def make_figure(rng: np.random.Generator, min_size: int, max_size: int) -> Figure:
    """An authentic figure whose sides lie in the size bounds (see ``figures_layout``)."""
    lo, hi = width_range(min_size, max_size)
    for _ in range(FIGURE_ATTEMPTS):
        figure = _draw_figure(rng, lo, hi, min_size, max_size)
        if figure is not None:
            return figure
    raise RuntimeError(f"no figure with two panels fits pages of {lo}-{hi} px")


def _draw_figure(rng: np.random.Generator, lo: int, hi: int, min_h: int, max_h: int) -> Optional[Figure]:
    width = int(rng.integers(lo, hi + 1))
    fs = font_size(rng, width)
    letter = {"upper": bool(rng.random() < 0.7), "bold": bool(rng.random() < 0.85), "paren": bool(rng.random() < 0.1),
              "size": int(round(fs * rng.uniform(1.15, 1.6))), "inside": bool(rng.random() < 0.35)}
    reserve = max(letter["size"], fs) + max(2, fs // 3)
    layout = plan(rng, width, min_h, max_h, fs, reserve)
    page = Page.blank(layout.height, width, bool(rng.random() < RGB_PROB), fs)
    fig = _figure_style(rng, page, layout)
    fig["reserve"] = reserve
    palette = PALETTES[int(rng.integers(len(PALETTES)))]
    drawn = 0
    for slot in layout.slots:
        y, x, h, w = slot.box
        content = (y + reserve, x, h - reserve, w)
        if min(content[2], content[3]) < 2 * fs:
            continue
        if slot.kind in IMAGING:
            panel = _imaging(page, rng, slot, content, drawn, fig)
            ok = panel is not None
        else:
            panel = None
            compose = {"blot": compose_blot, "gel": compose_gel}.get(slot.kind)
            ok = compose(page, rng, content, drawn) if compose else compose_chart(page, rng, content, drawn, palette)
        if ok:
            _letter(page, letter, drawn, slot.box, panel)
            drawn += 1
    if drawn < 2 or not any(p.kind != "chart" for p in page.panels):
        return None
    info = {"template": layout.template, "font_size": fs, "letters": letter,
            "scale_bar": {"length": fig["bar_len"], "label": fig["bar_label"]}}
    return Figure(page.canvas, page.panels, page.decorations, info)


def forge(rng: np.random.Generator, figure: Figure, min_std: float):
    """(forged image, instance masks, op records) for ``figure``; see ``figures_forgery``."""
    return forge_figure(rng, figure.image, figure.panels, figure.decorations, min_std)


OUTLINE_COLOURS = ((255, 0, 0), (0, 200, 255), (255, 200, 0), (255, 0, 255))  # one per copy-move


def outline(image: np.ndarray, instances: list) -> np.ndarray:
    """RGB copy of ``image`` with each source/copy pair outlined in its own colour."""
    import cv2

    out = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy())
    thick = max(2, min(out.shape[:2]) // 300)
    for k, inst in enumerate(instances):
        contours, _ = cv2.findContours(inst.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, OUTLINE_COLOURS[(k // 2) % len(OUTLINE_COLOURS)], thick, cv2.LINE_AA)
    return out


def render_examples(path: str, seed: int = 0, min_size: int = 100, max_size: int = 1100) -> dict:
    """Write one forged figure (its copy-moves outlined, one colour per source/copy pair) beside
    one authentic figure, as the README's example; returns both figures' metadata."""
    import cv2

    rng = np.random.default_rng(seed)
    forged, ops = None, []
    while not ops:
        forged = make_figure(rng, min_size, max_size)
        image, instances, ops = forge(rng, forged, 10.0)
    authentic = make_figure(rng, min_size, max_size)
    while authentic.image.shape[0] > 1.2 * forged.image.shape[0]:  # side by side: similar heights
        authentic = make_figure(rng, min_size, max_size)
    left = outline(image, instances)
    right = authentic.image if authentic.image.ndim == 3 else np.repeat(authentic.image[:, :, None], 3, axis=2)
    h = max(left.shape[0], right.shape[0])
    gap = np.full((h, 24, 3), 160, np.uint8)
    pad = lambda a: np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255)
    sheet = np.concatenate([pad(left), gap, pad(right)], axis=1)
    if not cv2.imwrite(path, np.ascontiguousarray(sheet[:, :, ::-1])):
        raise OSError(f"could not write {path}")
    return {"forged": {**forged.meta(), "ops": ops}, "authentic": authentic.meta()}
