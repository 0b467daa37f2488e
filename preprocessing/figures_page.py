"""The page of a synthetic figure: its canvas, and a record of every panel and decoration on it.

Text is rendered with DejaVu Sans (shipped by matplotlib) through Pillow, anti-aliased like a
paper's figure. Each string is rasterised once and stamped at integer positions, so the same
label on the same background is pixel-identical wherever it appears: the legitimate repeats
(scale bars, lane signs, channel names) that a copy-move detector must learn to ignore.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

Box = tuple[int, int, int, int]  # (y, x, h, w) in page pixels

FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
WHITE = 255
BLACK = 0


@functools.lru_cache(maxsize=None)
def _font(size: int, bold: bool):
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", FONT_FILES[bold]), size)


@functools.lru_cache(maxsize=4096)
def text_alpha(text: str, size: int, bold: bool = False, vertical: bool = False) -> np.ndarray:
    """Coverage (uint8 0-255) of ``text`` cropped to its ink; ``vertical`` reads bottom to top."""
    from PIL import Image, ImageDraw

    if not text or size < 1:
        raise ValueError(f"need a non-empty text and a positive size, got {text!r}, {size}")
    font = _font(int(size), bool(bold))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), text, fill=255, font=font)
    alpha = np.asarray(img)
    ys, xs = np.nonzero(alpha)
    alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    if vertical:
        alpha = np.rot90(alpha)
    alpha = np.ascontiguousarray(alpha)
    alpha.setflags(write=False)
    return alpha


def anchored(size: tuple[int, int], y: float, x: float, anchor: str) -> tuple[int, int]:
    """Top-left corner of an (h, w) box whose ``anchor`` point is at (y, x).

    ``anchor`` is two letters, horizontal then vertical: l/c/r and t/m/b (as in Pillow).
    """
    h, w = size
    dx = {"l": 0.0, "c": w / 2.0, "r": float(w)}[anchor[0]]
    dy = {"t": 0.0, "m": h / 2.0, "b": float(h)}[anchor[1]]
    return int(round(y - dy)), int(round(x - dx))


def inside(a: Box, b: Box) -> bool:
    """Whether box ``a`` lies within box ``b``."""
    return b[0] <= a[0] and b[1] <= a[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


@dataclass
class Panel:
    """An image area of the figure: where copy-moves may start and land."""

    box: Box
    kind: str  # micrograph, fluorescence, blot, gel or chart
    group: int  # the lettered panel it belongs to (the strips of one blot share it)
    source: dict = field(default_factory=dict)  # photo name and its crop window, for look-alikes
    lanes: tuple = ()  # page boxes of the lanes of a blot strip or gel

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decoration:
    box: Box
    kind: str  # letter, scale_bar, scale_label, channel, header, lane_label, protein, kda, ...
    text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Page:
    """A white page being drawn on; ``panels`` and ``decorations`` record what went where."""

    canvas: np.ndarray
    font_size: int
    panels: list = field(default_factory=list)
    decorations: list = field(default_factory=list)

    @classmethod
    def blank(cls, h: int, w: int, rgb: bool, font_size: int) -> "Page":
        return cls(np.full((h, w, 3) if rgb else (h, w), WHITE, np.uint8), font_size)

    @property
    def rgb(self) -> bool:
        return self.canvas.ndim == 3

    def colour(self, rgb: tuple) -> np.ndarray:
        """An RGB colour as this page stores it (luma on a grayscale page)."""
        c = np.asarray(rgb, np.float32)
        return c if self.rgb else np.float32(c @ np.float32([0.299, 0.587, 0.114]))

    def fits(self, box: Box) -> bool:
        return inside(box, (0, 0) + self.canvas.shape[:2])

    def stamp(self, alpha: np.ndarray, y: int, x: int, rgb: tuple) -> Optional[Box]:
        """Paint colour ``rgb`` with coverage ``alpha`` at (y, x); None (nothing drawn) if off the page."""
        box = (int(y), int(x)) + alpha.shape
        if not self.fits(box):
            return None
        region = self.canvas[y:y + alpha.shape[0], x:x + alpha.shape[1]]
        a = alpha.astype(np.float32) / 255.0
        if self.rgb:
            a = a[:, :, None]
        region[...] = np.rint(a * self.colour(rgb) + (1.0 - a) * region).astype(np.uint8)
        return box

    def fill(self, box: Box, rgb: tuple) -> None:
        y, x, h, w = box
        self.canvas[y:y + h, x:x + w] = np.rint(self.colour(rgb)).astype(np.uint8)

    def text(self, text: str, y: float, x: float, anchor: str = "lt", kind: str = "label",
             size: Optional[int] = None, bold: bool = False, rgb: tuple = (0, 0, 0),
             vertical: bool = False) -> Optional[Box]:
        """Draw and record one label as a decoration; None when it would leave the page."""
        alpha = text_alpha(text, size or self.font_size, bold, vertical)
        top, left = anchored(alpha.shape, y, x, anchor)
        box = self.stamp(alpha, top, left, rgb)
        if box is not None:
            self.decorations.append(Decoration(box, kind, text))
        return box

    def text_size(self, text: str, size: Optional[int] = None, bold: bool = False) -> tuple[int, int]:
        return text_alpha(text, size or self.font_size, bold).shape

    def place(self, image: np.ndarray, box: Box, kind: str, group: int, **info) -> Panel:
        """Put a panel image (gray or RGB, exactly the box's size) on the page and record it."""
        y, x, h, w = box
        if image.shape[:2] != (h, w):
            raise ValueError(f"panel image {image.shape[:2]} does not fit box {box}")
        if self.rgb and image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif not self.rgb and image.ndim == 3:
            image = np.rint(image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.uint8)
        self.canvas[y:y + h, x:x + w] = image
        panel = Panel(tuple(int(v) for v in box), kind, group, **info)
        self.panels.append(panel)
        return panel
