"""Micrograph panels: crops of the photographs scikit-image ships offline, with no hidden repeats.

Every crop of a figure is a window of a photograph in its own pixel grid; two windows of one
photograph in the same figure never overlap, so an authentic figure's look-alike panels are
really different places (and a forged figure's only duplicates are its copy-moves).
"""
from __future__ import annotations

import functools
from typing import Optional

import cv2
import numpy as np

from preprocessing.errors import UsageError
from preprocessing.synth import base, copymove
from preprocessing.synth.figure_page import Box

# gravel.png and grass.png each hold a copy-move made by whoever prepared the files. Found by
# matching 24 px blocks of each image against the whole image (cv2.TM_CCOEFF_NORMED > 0.9 away
# from the block itself: one dominant offset per pair); each zone is where the image and its
# shifted self correlate above 0.5 in 24 px windows (unrelated places: under 0.1% of the image),
# grown by 8 px. Correlation, not equal grey levels: grass's second copy was retouched (its
# pixels differ from the source's by 24 grey levels on average), and a test of equal pixels saw
# only 3% of it (y 0-24, x 104-147), so figures showed both copies of the rest as "authentic"
# look-alikes. Each entry is the source zone (y0, x0, y1, x1) and the shift (dy, dx) to its
# copy: gravel y 0-55, x 342-477 reappears 273 px down, 35 right; grass y 0-127, x 288-474 at
# (162, 3), and y 0-133, x 0-189 at (346, 182).
DUPLICATED_ZONES = {
    "gravel": (((0, 334, 63, 485), (273, 35)),),
    "grass": (((0, 280, 135, 482), (162, 3)), ((0, 0, 141, 197), (346, 182))),
}
# Brightfield-like photographs: stained tissue, phase contrast, fundus, and textures that pass
# for electron micrographs.
BRIGHTFIELD = ("immunohistochemistry", "cell", "retina", "moon", "gravel", "grass")  # microaneurysms: 102 px, too small
# Fluorescence channels: (label, view, tint). Views are grey images with a dark background made
# from the photographs (stain separation of the IHC slide, inverted fundus vessels, deep-field dots).
CHANNELS = (
    ("DAPI", "immunohistochemistry:hematoxylin", (60, 110, 255)),
    ("Hoechst", "immunohistochemistry:hematoxylin", (60, 110, 255)),
    ("GFP", "immunohistochemistry:dab", (40, 230, 60)),
    ("Ki67", "immunohistochemistry:dab", (255, 50, 40)),
    ("CD31", "retina:vessels", (255, 60, 50)),
    ("Lectin", "retina:vessels", (40, 230, 60)),
    ("LC3", "hubble_deep_field:gray", (40, 230, 60)),
    ("p62", "hubble_deep_field:gray", (255, 60, 200)),
)
BACKGROUND_PERCENTILE = {"vessels": 75}  # vessels cover less of the fundus than nuclei of the slide
MERGE = "Merge"  # a two-channel overlay of one window of the IHC slide: nuclei blue, stain green
SCALE_RANGE = (0.6, 1.7)  # source px per panel px: roughly the photograph's own resolution
ROOM = 0.6  # a window spans at most 60% of its photograph's side, so another panel can use the rest
MAX_UPSCALE = 3.0  # a window is never enlarged more than 3x (blur would give it away)
WINDOW_TRIES = 30
SHRINK = 0.8  # every 6 failed tries the window shrinks, so a crowded photograph still takes another
MIN_IMAGED = 0.97  # of a window inside the imaged area: figures crop away a fundus photo's black surround
MIN_WINDOW_STD = 12.0  # a crop flatter than this is empty background (retina corners, sky)


@functools.cache
def view(key: str) -> np.ndarray:
    """A read-only float32 image in 0-255: ``name`` (as shipped) or ``name:variant``."""
    name, _, variant = key.partition(":")
    img = base._science_image(name)
    if img is None:
        raise UsageError(f"scikit-image sample {name!r} is not available offline")
    if variant == "":
        out = img.astype(np.float32)
    elif variant == "gray":
        out = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img).astype(np.float32)
    elif variant in ("hematoxylin", "dab"):
        from skimage.color import rgb2hed

        out = rgb2hed(img)[:, :, 0 if variant == "hematoxylin" else 2].astype(np.float32)
    elif variant == "vessels":  # green channel of the fundus, inverted: vessels bright on dark
        out = 255.0 - img[:, :, 1].astype(np.float32)
        out *= cv2.erode((img[:, :, 1] > 20).astype(np.uint8), np.ones((15, 15), np.uint8))
    else:
        raise ValueError(f"unknown view {key!r}")
    if variant:
        lo, hi = np.percentile(out, (BACKGROUND_PERCENTILE.get(variant, 50), 99.7))  # background black
        out = np.clip((out - lo) / max(hi - lo, 1e-6), 0, 1) ** 0.8 * 255
    out = np.ascontiguousarray(out, dtype=np.float32)
    out.setflags(write=False)
    return out


@functools.cache
def _inside_fraction(photo: str) -> Optional[np.ndarray]:
    """Integral image of the photograph's imaged area (the fundus disc of ``retina``; None: all of it)."""
    if photo != "retina":
        return None
    img = base._science_image(photo)
    disc = cv2.erode((img.max(axis=2) > 20).astype(np.uint8), np.ones((9, 9), np.uint8))
    return cv2.integral(disc)


def _mostly_imaged(photo: str, box: Box) -> bool:
    """Whether the window lies inside the imaged area (no black surround of a fundus photograph)."""
    integral = _inside_fraction(photo)
    if integral is None:
        return True
    y, x, h, w = box
    inside_px = integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]
    return inside_px >= MIN_IMAGED * h * w


def photo_of(key: str) -> str:
    return key.partition(":")[0]


def available(keys) -> tuple:
    """The keys whose photograph loads offline."""
    return tuple(k for k in keys if base._science_image(photo_of(k)) is not None)


def _touches_both(photo: str, windows: list) -> bool:
    """Whether ``windows`` together include both copies of one of the photograph's own duplicates."""
    for (y0, x0, y1, x1), (dy, dx) in DUPLICATED_ZONES.get(photo, ()):
        zones = [(y0, x0, y1 - y0, x1 - x0), (y0 + dy, x0 + dx, y1 - y0, x1 - x0)]
        if all(any(not copymove._disjoint(w, [z], 0) for w in windows) for z in zones):
            return True
    return False


def pick_window(rng: np.random.Generator, key: str, h: int, w: int, used: dict) -> Optional[tuple[Box, int]]:
    """(window in the photograph, quarter turns) for an (h, w) panel, disjoint from ``used[photo]``.

    ``used`` maps a photograph to the windows this figure already took from it; None if no
    textured window fits.
    """
    photo = photo_of(key)
    src = view(key)
    sh, sw = src.shape[:2]
    taken = used.get(photo, [])
    for attempt in range(WINDOW_TRIES):
        k = int(rng.integers(4))
        vh, vw = (h, w) if k % 2 == 0 else (w, h)  # the window's size before it is turned
        fit = min(sh / vh, sw / vw) * ROOM  # leave room for other windows of the same photograph
        scale = min(np.exp(rng.uniform(*np.log(SCALE_RANGE))), fit) * SHRINK ** (attempt // 6)
        if scale < 1.0 / MAX_UPSCALE:
            return None
        wh, ww = max(8, int(round(vh * scale))), max(8, int(round(vw * scale)))
        if wh > sh or ww > sw:
            continue
        box = (int(rng.integers(sh - wh + 1)), int(rng.integers(sw - ww + 1)), wh, ww)
        if not copymove._disjoint(box, taken, 0) or _touches_both(photo, taken + [box]):
            continue
        if src[box[0]:box[0] + wh, box[1]:box[1] + ww].std() < MIN_WINDOW_STD or not _mostly_imaged(photo, box):
            continue
        return box, k
    return None


def crop(key: str, window: Box, k: int, h: int, w: int) -> np.ndarray:
    """The window turned by ``k`` quarter turns and resized to (h, w), float32 0-255."""
    y, x, wh, ww = window
    patch = np.rot90(view(key)[y:y + wh, x:x + ww], k)
    interp = cv2.INTER_AREA if patch.shape[0] > h else cv2.INTER_CUBIC
    return np.clip(cv2.resize(np.ascontiguousarray(patch), (w, h), interpolation=interp), 0, 255)


def tint(gray: np.ndarray, rgb: tuple) -> np.ndarray:
    """A fluorescence channel: grey intensity in the dye's colour."""
    return gray[:, :, None] * (np.float32(rgb) / 255.0)


def micrograph(rng: np.random.Generator, kind: str, h: int, w: int, used: dict,
               channel: Optional[tuple] = None, keys: Optional[tuple] = None) -> Optional[tuple[np.ndarray, dict]]:
    """(uint8 image, source record) of a brightfield or fluorescence panel; None if nothing fits.

    ``channel`` is one of CHANNELS or None for a merge; ``keys`` restricts the photographs
    (a look-alike pair asks for the same one). The chosen window is added to ``used``.
    """
    if keys:
        options = list(available(keys))
    elif kind == "micrograph":
        options = [str(k) for k in rng.permutation(available(BRIGHTFIELD))]
    elif channel is not None:  # the dye's own view first; another when its photograph is used up
        others = sorted({c[1] for c in CHANNELS} - {channel[1]})
        options = list(available((channel[1],))) + [str(k) for k in rng.permutation(available(others))]
    else:
        options = list(available(("immunohistochemistry:hematoxylin",)))
    for key in options:
        picked = pick_window(rng, key, h, w, used)
        if picked is not None:
            window, k = picked
            break
    else:
        return None
    if kind == "micrograph":
        image = crop(key, window, k, h, w)
    elif channel is not None:
        image = tint(crop(key, window, k, h, w), channel[2])
    else:
        nuclei = tint(crop(key, window, k, h, w), CHANNELS[0][2])
        stain = tint(crop(photo_of(key) + ":dab", window, k, h, w), CHANNELS[2][2])
        image = np.minimum(nuclei + stain, 255)
    used.setdefault(photo_of(key), []).append(window)
    look = ("rgb" if image.ndim == 3 else "gray") if kind == "micrograph" else channel[0] if channel else MERGE
    return np.rint(image).astype(np.uint8), {"photo": key, "window": list(window), "turns": k, "look": look}
