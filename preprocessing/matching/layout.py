"""Panels and decorations of a figure, in working pixels (never enlarged: gutters and pen
strokes are a few native pixels wide)."""
from __future__ import annotations

import numpy as np

from preprocessing.matching.decorations import decoration_mask
from preprocessing.matching.panels import find_panels
from preprocessing.matching.work import WorkImage


def layout(work: WorkImage) -> tuple[list, np.ndarray]:
    """(panels as [((x, y, w, h), kind)], decoration mask uint8), in working pixels."""
    panels = find_panels(work.rgb, work.gray)
    return panels, decoration_mask(work.rgb, work.gray, panels)


def to_original(panels, work_shape: tuple[int, int], shape: tuple[int, int]) -> list:
    """Working-pixel boxes in original pixels."""
    rx, ry = shape[1] / work_shape[1], shape[0] / work_shape[0]
    out = []
    for (x, y, w, h), kind in panels:
        x0, y0 = int(round(x * rx)), int(round(y * ry))
        out.append(((x0, y0, max(1, int(round((x + w) * rx)) - x0), max(1, int(round((y + h) * ry)) - y0)), kind))
    return out
