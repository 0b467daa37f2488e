"""Bar and line chart panels drawn with plain primitives (fast) and TrueType text.

Charts are full of legitimate repeats (identical error-bar caps, stars, same-coloured bars,
legend swatches), the false positives detectors fall for; they are never forged.
"""
from __future__ import annotations

import cv2
import numpy as np

from preprocessing import synth
from preprocessing.figures_page import Box, Decoration, Page, Panel, anchored

GROUPS = ("Ctrl", "Veh", "WT", "KO", "siNC", "siRNA", "Mock", "OE", "Sham", "MI", "Low", "High")
TIMES = ("0 h", "6 h", "12 h", "24 h", "48 h", "72 h", "D1", "D3", "D7", "D14")
SERIES = ("WT", "KO", "Vehicle", "Drug", "Control", "Treated", "shNC", "shRNA")
Y_LABELS = ("Relative expression", "Fold change", "% of control", "Cell viability (%)", "OD 450 nm",
            "Tumor volume (mm\u00b3)", "Band intensity (a.u.)", "mRNA level")
STARS = ("*", "**", "***", "#", "##")
PALETTES = (  # per figure: greyscale as in many papers, or a colour set
    ((40, 40, 40), (150, 150, 150), (255, 255, 255)),
    ((31, 119, 180), (255, 127, 14), (44, 160, 44)),
    ((200, 50, 50), (60, 90, 200), (120, 120, 120)),
    ((0, 0, 0), (230, 159, 0), (86, 180, 233)),
)
BLACK = (0, 0, 0)
MIN_PLOT = 40  # px each way: below this a chart is unreadable
MAX_ASPECT = 1.6  # width / height of the widest chart
LEGEND_PITCH = 1.3  # legend row height in font sizes


def _nice_ticks(top: float) -> np.ndarray:
    """0, step, 2 step, ... covering ``top`` with a 1/2/5 step and 3-6 ticks."""
    raw = top / 4
    mag = 10 ** np.floor(np.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    return np.arange(0, top + step * 0.999, step)


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1 or v == 0 else f"{v:.1f}"


def _legend_height(fs: int, n: int) -> int:
    return int(n * fs * LEGEND_PITCH) + fs // 2


def _axes(page: Page, rng: np.random.Generator, slot: Box, ymax: float, n_series: int):
    """Draw the y axis (label, ticks, tick labels) and x axis line; returns (plot box, y scale) or None."""
    y, x, h, w = slot
    fs = page.font_size
    ticks = _nice_ticks(ymax)
    labels = [_fmt(t) for t in ticks]
    ylabel = str(rng.choice(Y_LABELS))
    lab_w = page.text_size(ylabel)[0]  # the label is vertical: its height becomes a width
    tick_w = max(page.text_size(t)[1] for t in labels)
    tick_len = max(2, fs // 3)
    lw = max(1, fs // 10)
    px = x + lab_w + fs // 2 + tick_w + tick_len + 2
    py = y + fs + (_legend_height(fs, n_series) if n_series > 1 else fs)  # the legend sits above the plot
    pw, ph = x + w - px - fs // 2, y + h - py - int(fs * 1.6)
    if pw < MIN_PLOT or ph < MIN_PLOT or page.text_size(ylabel)[1] > ph + 2 * fs:
        return None
    scale = ph / ticks[-1]
    page.fill((py, px - lw, ph + lw, lw), BLACK)  # y axis
    page.fill((py + ph, px - lw, lw, pw + lw), BLACK)  # x axis
    for t, lab in zip(ticks, labels):
        ty = int(round(py + ph - t * scale))
        page.fill((ty, px - lw - tick_len, lw, tick_len), BLACK)
        page.text(lab, ty, px - lw - tick_len - 2, "rm", "tick_label")
    page.text(ylabel, py + ph / 2, x + lab_w / 2, "cm", "axis_label", vertical=True)
    return (py, px, ph, pw), scale


def _error_bar(page: Page, cx: int, top: int, bottom: int, cap: int, lw: int) -> None:
    page.fill((top, cx - lw // 2, max(1, bottom - top), lw), BLACK)
    page.fill((top, cx - cap, lw, 2 * cap + 1), BLACK)


def _legend(page: Page, names: list, colours: list, plot: Box) -> None:
    """A framed legend box at the top right, recorded as one decoration (its swatches repeat bars)."""
    fs = page.font_size
    py, px, ph, pw = plot
    sw = fs
    width = sw + fs // 2 + max(page.text_size(n)[1] for n in names) + fs
    height = _legend_height(fs, len(names))
    top, left = py - height - fs // 2, px + pw - width
    if left < px:
        return
    page.fill((top, left, height, width), BLACK)
    page.fill((top + 1, left + 1, height - 2, width - 2), (255, 255, 255))
    for i, (name, colour) in enumerate(zip(names, colours)):
        cy = top + fs // 4 + int((i + 0.5) * fs * LEGEND_PITCH)
        box = (cy - sw // 3, left + fs // 3, 2 * (sw // 3), sw)
        page.fill(box, BLACK)
        page.fill((box[0] + 1, box[1] + 1, box[2] - 2, box[3] - 2), colour)
        page.text(name, cy, left + fs // 3 + sw + fs // 3, "lm", "legend_text")
    page.decorations.append(Decoration((top, left, height, width), "legend", " ".join(names)))


def compose_chart(page: Page, rng: np.random.Generator, slot: Box, group: int, palette: tuple) -> bool:
    """Draw a bar chart (groups x series, error bars, stars) or a line chart in ``slot``; False if too small."""
    fs = page.font_size
    y, x, h, w = slot
    slot = (y, x, h, min(w, int(h * MAX_ASPECT)))  # a chart is not a banner: keep it left, leave white
    line = rng.random() < 0.35
    n_series = int(rng.integers(1, 4)) if not line else int(rng.integers(2, 4))
    cats = list(TIMES[:int(rng.integers(4, 8))] if line else
                rng.choice(GROUPS, int(rng.integers(2 if n_series > 1 else 3, 6)), replace=False))
    means = rng.uniform(0.2, 1.0, (len(cats), n_series))
    if line:
        means = np.cumsum(means, axis=0) / len(cats) * rng.uniform(0.5, 2.0, n_series)
    magnitude = 10.0 ** int(rng.integers(0, 3))
    means *= magnitude
    errs = means * rng.uniform(0.05, 0.2, means.shape)
    drawn = _axes(page, rng, slot, float((means + errs).max()) * 1.15, n_series)
    if drawn is None:
        return False
    (py, px, ph, pw), scale = drawn
    lw = max(1, fs // 10)
    colours = [palette[i % len(palette)] for i in range(n_series)]
    if line:  # lines in black first, then the palette's visible colours (white lines would vanish)
        colours = ([BLACK] + [c for c in palette if c != BLACK and max(c) < 250] * 2)[:n_series]
    slot_w = pw / len(cats)
    bar_w = max(2, int(slot_w * 0.75 / n_series))
    cap = max(2, bar_w // 4)
    star = str(rng.choice(STARS))
    every = int(np.ceil(max(page.text_size(c)[1] for c in cats) / (0.9 * slot_w)))  # labels that fit
    tops = []
    for c, cat in enumerate(cats):
        for s in range(n_series):
            cx = px + slot_w * (c + 0.5) + (s - (n_series - 1) / 2) * (bar_w if not line else 0)
            cx = int(round(cx))
            vy = int(round(py + ph - means[c, s] * scale))
            ey = int(round(errs[c, s] * scale))
            if not line:
                page.fill((vy, cx - bar_w // 2, py + ph - vy, bar_w), BLACK)
                page.fill((vy + lw, cx - bar_w // 2 + lw, max(0, py + ph - vy - lw), bar_w - 2 * lw), colours[s])
            _error_bar(page, cx, vy - ey, vy + (ey if line else 0), cap, lw)
            tops.append((vy - ey, cx, c, s))
        if c % every == 0:
            page.text(cat, py + ph + fs // 3, px + slot_w * (c + 0.5), "ct", "tick_label")
    if line:
        for s in range(n_series):
            pts = [(cx, int(round(py + ph - means[c, s] * scale))) for (_, cx, c, ss) in tops if ss == s]
            colour = tuple(float(v) for v in np.atleast_1d(page.colour(colours[s])))
            for a, b in zip(pts, pts[1:]):
                cv2.line(page.canvas, a, b, colour, lw + 1, cv2.LINE_AA)
            for p in pts:
                cv2.circle(page.canvas, p, max(2, fs // 4), colour, -1, cv2.LINE_AA)
    # the same significance mark over at least two treated bars (a real, pixel-identical repeat)
    treated = [t for t in tops if t[2] > 0 and (not line or t[0] == min(u[0] for u in tops if u[2] == t[2]))]
    for top, cx, _, _ in [treated[i] for i in rng.choice(len(treated), min(len(treated), max(2, len(treated) // 2)),
                                                          replace=False)]:
        box = anchored(page.text_size(star), top - 2, cx, "cb") + page.text_size(star)
        if synth._disjoint(box, [d.box for d in page.decorations], 1):  # neighbours' stars must not touch
            page.text(star, top - 2, cx, "cb", "significance")
    if n_series > 1:
        _legend(page, [str(n) for n in rng.choice(SERIES, n_series, replace=False)], colours, (py, px, ph, pw))
    page.panels.append(Panel((py, px, ph, pw), "chart", group))
    return True
