"""The competition's run-length encoding: the one place that reads and writes it.

Format: ``authentic``, or one JSON-like list per instance joined by ``;``:
``[start, length, start, length, ...]`` with 1-based starts over the
column-major flattening of the mask (``mask.T.flatten()``). The seed wrote
``[s l s l]`` with spaces and merged all instances into one; that is not it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

AUTHENTIC = "authentic"


class RLEError(ValueError):
    """An annotation string that is not valid competition RLE."""


def encode_instance(mask: np.ndarray) -> list[int]:
    """Runs ``[start, length, ...]`` (1-based, column-major) of one binary mask."""
    pixels = np.asarray(mask).astype(bool).T.reshape(-1)
    padded = np.concatenate([[False], pixels, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0::2] = starts + 1
    runs[1::2] = ends - starts
    return runs.tolist()


def encode(instances: Iterable[np.ndarray]) -> str:
    """Annotation for a list of instance masks; ``authentic`` when all are empty."""
    parts = []
    for inst in instances:
        runs = encode_instance(inst)
        if runs:
            parts.append("[" + ", ".join(str(v) for v in runs) + "]")
    return ";".join(parts) if parts else AUTHENTIC


def parse(annotation: str) -> list[list[int]]:
    """Run lists of an annotation (``[]`` for authentic), validating their shape."""
    if not isinstance(annotation, str):
        raise RLEError(f"annotation must be a string, got {type(annotation).__name__}")
    text = annotation.strip()
    if text.lower() == AUTHENTIC:
        return []
    if not text:
        raise RLEError("empty annotation (expected 'authentic' or RLE)")
    out = []
    for k, part in enumerate(text.split(";")):
        try:
            runs = json.loads(part)
        except json.JSONDecodeError as exc:
            raise RLEError(f"instance {k}: not a JSON list: {part[:60]!r}") from exc
        if not isinstance(runs, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in runs):
            raise RLEError(f"instance {k}: expected a list of integers: {part[:60]!r}")
        if not runs:  # encode never writes it; counting it as a forged instance would be a guess
            raise RLEError(f"instance {k}: an empty run list is not an instance (an image without instances "
                           "is written 'authentic')")
        if len(runs) % 2:
            raise RLEError(f"instance {k}: odd number of values ({len(runs)}); runs come in start,length pairs")
        out.append(runs)
    return out


def _spans(runs: Sequence[int], height: int, width: int) -> Iterable[tuple[int, int]]:
    """The runs as 0-based half-open spans of the column-major flattening; rejects out-of-range,
    overlapping or unsorted runs."""
    size = height * width
    prev_end = 0  # 1-based index one past the previous run
    for i in range(0, len(runs), 2):
        start, length = int(runs[i]), int(runs[i + 1])
        if start < 1 or length < 1:
            raise RLEError(f"run {i // 2}: start {start} and length {length} must be >= 1")
        if start < prev_end:
            raise RLEError(f"run {i // 2}: start {start} overlaps or precedes the previous run "
                           f"(ends at {prev_end - 1})")
        end = start + length
        if end - 1 > size:
            raise RLEError(f"run {i // 2}: [{start}, {end - 1}] is beyond the {height}x{width} image ({size} pixels)")
        yield start - 1, end - 1
        prev_end = end


def decode_instance(runs: Sequence[int], height: int, width: int) -> np.ndarray:
    """Binary (H, W) uint8 mask of one run list; rejects out-of-range, overlapping or unsorted runs."""
    flat = np.zeros(height * width, dtype=np.uint8)
    for start, end in _spans(runs, height, width):
        flat[start:end] = 1
    return flat.reshape(width, height).T.copy()


def decode(annotation: str, height: int, width: int) -> list[np.ndarray]:
    """Instance masks (each (H, W) uint8) of an annotation; ``[]`` for authentic."""
    return [decode_instance(runs, height, width) for runs in parse(annotation)]


def decode_pixels(annotation: str, height: int, width: int) -> list[np.ndarray]:
    """Per instance of an annotation, the sorted 0-based indices of its pixels in the column-major
    flattening (the pixels ``decode``'s masks hold, checked alike): memory follows the instances'
    areas, not instances x H x W, so a row of 1500 instances or a huge claimed size costs nothing."""
    out = []
    for runs in parse(annotation):
        spans = list(_spans(runs, height, width))
        out.append(np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in spans]) if spans
                   else np.zeros(0, np.int64))
    return out
