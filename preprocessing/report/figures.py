"""Figures for ``preprocessing.report``: small functions that take plain data and write one PNG each.

Every function returns the file name it wrote (relative to the report folder)
or ``None`` when there is nothing to draw, so the page only ever links files
that exist. Matplotlib runs headless (Agg) and figures are closed right away:
a report over thousands of images must not pile up open figures.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

DPI = 72  # small PNGs: the page is for a browser, not for print
INSTANCE_COLOURS = plt.get_cmap("tab10").colors  # instance k gets colour k % 10
GROUP_COLOURS = {"forged region": "#d62728", "rest of forged image": "#1f77b4", "authentic image": "#2ca02c"}


def _save(fig, out_dir: str, name: str) -> str:
    fig.savefig(os.path.join(out_dir, name), dpi=DPI)
    plt.close(fig)
    return name


def _title(ax, text: str, **kw) -> None:
    """Titles come from file names; parse_math=False so a '$' in a case id is not read as TeX."""
    ax.set_title(text, parse_math=False, **kw)


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


def histograms(out_dir: str, name: str, panels: Sequence[tuple[str, str, Sequence[float]]],
               bins: int = 30, log_x: Sequence[bool] = ()) -> Optional[str]:
    """One row of histograms; ``panels`` = (title, x label, values). Empty panels say so."""
    if not panels or all(len(_finite(v)) == 0 for _, _, v in panels):
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for i, (ax, (title, xlabel, values)) in enumerate(zip(axes[0], panels)):
        v = _finite(values)
        use_log = i < len(log_x) and log_x[i] and len(v) and v.min() > 0
        if len(v) == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        elif use_log:
            ax.hist(v, bins=np.geomspace(v.min(), v.max() * 1.0001, bins), color="#4c72b0")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.hist(v, bins=_int_bins(v) if _is_small_int(v) else bins, color="#4c72b0")
        _title(ax, title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
    fig.tight_layout()
    return _save(fig, out_dir, name)


def _is_small_int(v: np.ndarray) -> bool:
    return len(v) > 0 and np.all(v == np.round(v)) and v.max() - v.min() <= 40


def _int_bins(v: np.ndarray) -> np.ndarray:
    return np.arange(v.min() - 0.5, v.max() + 1.5, 1.0)


def bar_counts(out_dir: str, name: str, panels: Sequence[tuple[str, dict]]) -> Optional[str]:
    """Bar charts of categorical counts (e.g. colour modes, bit depths)."""
    panels = [(t, c) for t, c in panels if c]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, counts) in zip(axes[0], panels):
        keys = [str(k) for k in counts]
        ax.bar(range(len(keys)), list(counts.values()), color="#4c72b0")
        ax.set_xticks(range(len(keys)), keys, rotation=30 if len(keys) > 4 else 0)
        _title(ax, title, fontsize=10)
        ax.set_ylabel("images")
    fig.tight_layout()
    return _save(fig, out_dir, name)


def feature_distributions(out_dir: str, name: str, features: Sequence[tuple[str, dict]]) -> Optional[str]:
    """Overlaid density histograms per pixel group for each forensic feature."""
    features = [(t, g) for t, g in features if any(len(v) for v in g.values())]
    if not features:
        return None
    fig, axes = plt.subplots(1, len(features), figsize=(5.2 * len(features), 3.4), squeeze=False)
    for ax, (title, groups) in zip(axes[0], features):
        allv = np.concatenate([_finite(v) for v in groups.values() if len(v)])
        hi = float(np.percentile(allv, 99.5)) if len(allv) else 1.0
        lo = float(allv.min()) if len(allv) else 0.0
        edges = np.linspace(lo, max(hi, lo + 1e-6), 50)
        for group, values in groups.items():
            v = _finite(values)
            if len(v):
                ax.hist(np.clip(v, lo, edges[-1]), bins=edges, density=True, histtype="step", linewidth=1.6,
                        color=GROUP_COLOURS.get(group), label=f"{group} (n={len(v):,})")
        _title(ax, title, fontsize=10)
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, name)


def overlay(rgb: np.ndarray, instances: Sequence[np.ndarray], alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 with each instance blended in its own colour."""
    out = rgb.astype(np.float32).copy()
    for k, m in enumerate(instances):
        colour = np.array(INSTANCE_COLOURS[k % len(INSTANCE_COLOURS)], np.float32) * 255.0
        sel = np.asarray(m) > 0
        out[sel] = (1 - alpha) * out[sel] + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _draw_boxes(ax, boxes: Sequence[tuple[int, int, int, int]], labels: Sequence[str], dashed=False,
                colours: Optional[Sequence] = None) -> None:
    """Boxes (x, y, w, h) in the displayed image's pixels; solid ones labelled above, dashed ones below."""
    for k, ((x, y, w, h), label) in enumerate(zip(boxes, labels)):
        colour = colours[k] if colours is not None else INSTANCE_COLOURS[k % len(INSTANCE_COLOURS)]
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.8,
                               linestyle="--" if dashed else "-"))
        ax.text(x, y + h if dashed else y - 1, label, color="white", fontsize=7, va="top" if dashed else "bottom",
                parse_math=False,
                bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.9))


def _tight_images(fig) -> None:
    """Fixed margins for image grids: tight_layout would measure every title and tick for nothing."""
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.05, hspace=0.18)


def _grid(n: int, cols: int, tile: float = 2.6, extra_h: float = 0.5):
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, (tile + extra_h) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, list(axes.flat)


def instance_grid(out_dir: str, name: str, tiles: Sequence[dict], cols: int = 4) -> Optional[str]:
    """Forged thumbnails; tile = {title, rgb, instances, boxes} (boxes scaled to the thumbnail)."""
    if not tiles:
        return None
    fig, axes = _grid(len(tiles), min(cols, len(tiles)))
    for ax, t in zip(axes, tiles):
        ax.imshow(overlay(t["rgb"], t["instances"]))
        _draw_boxes(ax, t["boxes"], [f"inst {k + 1}" for k in range(len(t["boxes"]))])
        _title(ax, t["title"], fontsize=8)
    _tight_images(fig)
    return _save(fig, out_dir, name)


def authentic_vs_forged(out_dir: str, name: str, pairs: Sequence[tuple[Optional[dict], Optional[dict]]]
                        ) -> Optional[str]:
    """Two rows: authentic images on top, forged (with overlays) below, column by column."""
    if not pairs:
        return None
    cols = len(pairs)
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 6.0), squeeze=False)
    for c, (auth, forged) in enumerate(pairs):
        for r, t in enumerate((auth, forged)):
            ax = axes[r][c]
            ax.axis("off")
            if t is None:
                continue
            ax.imshow(overlay(t["rgb"], t.get("instances", ())))
            _draw_boxes(ax, t.get("boxes", ()), [f"inst {k + 1}" for k in range(len(t.get("boxes", ())))])
            _title(ax, t["title"], fontsize=8)
    _tight_images(fig)
    return _save(fig, out_dir, name)


def copy_move_peek(out_dir: str, name: str, tiles: Sequence[dict], cols: int = 3) -> Optional[str]:
    """Instance boxes (solid) and each one's best template-match hit elsewhere (dashed, with score)."""
    if not tiles:
        return None
    fig, axes = _grid(len(tiles), min(cols, len(tiles)), tile=3.4)
    for ax, t in zip(axes, tiles):
        ax.imshow(t["rgb"])
        colours = [INSTANCE_COLOURS[h["instance"] % len(INSTANCE_COLOURS)] for h in t["hits"]]
        _draw_boxes(ax, [h["source"] for h in t["hits"]], [f"inst {h['instance'] + 1}" for h in t["hits"]],
                    colours=colours)
        _draw_boxes(ax, [h["hit"] for h in t["hits"]],
                    [f"hit {h['instance'] + 1}: {h['score']:.2f}" for h in t["hits"]], dashed=True, colours=colours)
        _title(ax, t["title"], fontsize=8)
    _tight_images(fig)
    return _save(fig, out_dir, name)


def prediction_pairs(out_dir: str, name: str, rows: Sequence[dict]) -> Optional[str]:
    """One row per image: truth overlay | predicted overlay, the image's oF1 in the title."""
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(6.0, 3.0 * len(rows)), squeeze=False)
    for (ax_t, ax_p), r in zip(axes, rows):
        for ax, inst, label in ((ax_t, r["truth"], "truth"), (ax_p, r["pred"], "predicted")):
            ax.axis("off")
            ax.imshow(overlay(r["rgb"], inst))
            _title(ax, f"{r['case_id']} {label}: {len(inst)} inst" +
                   (f" (oF1 {r['score']:.2f})" if label == "predicted" else ""), fontsize=8)
    _tight_images(fig)
    return _save(fig, out_dir, name)


def thumbnail(rgb: np.ndarray, instances: Sequence[np.ndarray], max_side: int
              ) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Downscale an image (area) and its instances (nearest) so the longest side is <= max_side."""
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return rgb, [np.asarray(m) for m in instances], 1.0
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return small, [cv2.resize(np.asarray(m, np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in instances], s
