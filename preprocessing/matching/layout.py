"""Panels and decorations of a figure, in working pixels (never enlarged: gutters and pen
strokes are a few native pixels wide)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from preprocessing.matching.decorations import decoration_mask
from preprocessing.matching.panels import Page, edges_sharp, page_and_panels
from preprocessing.matching.work import WorkImage


def layout(work: WorkImage) -> tuple[list, np.ndarray, Optional[Page]]:
    """(panels as [((x, y, w, h), kind)], decoration mask uint8, page or None), working pixels."""
    sharp = edges_sharp(work.gray)  # read by the gutter cut and by the decoration finder
    page, panels = page_and_panels(work.rgb, work.gray, sharp)
    return panels, decoration_mask(work.rgb, work.gray, panels, sharp), page


def page_pixels(rgb: np.ndarray, page: Optional[Page]) -> np.ndarray:
    """uint8 mask of the pixels of the page's colour (inside panels too: the white around a
    blot strip's tick marks is page, whichever leaf it fell in)."""
    if page is None:
        return np.zeros(rgb.shape[:2], np.uint8)
    return (np.abs(rgb.astype(np.float32) - page.colour).max(axis=2) <= page.tol).astype(np.uint8)


def to_original(panels, work_shape: tuple[int, int], shape: tuple[int, int]) -> list:
    """Working-pixel boxes in original pixels."""
    rx, ry = shape[1] / work_shape[1], shape[0] / work_shape[0]
    out = []
    for (x, y, w, h), kind in panels:
        x0, y0 = int(round(x * rx)), int(round(y * ry))
        out.append(((x0, y0, max(1, int(round((x + w) * rx)) - x0), max(1, int(round((y + h) * ry)) - y0)), kind))
    return out
