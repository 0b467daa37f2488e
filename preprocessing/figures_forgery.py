"""Copy-moves on a figure, the way they happen in papers: inside one panel, between two panels
of the same kind, or a blot lane / band group copied onto another lane.

Every source and copy lies inside a panel, clear of every decoration box, and clear of each
other; each is applied with ``synth.apply_copy_move``, so masks and replay work as for photos.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from preprocessing import synth
from preprocessing.figures_page import Panel

FORGEABLE = ("micrograph", "fluorescence", "blot", "gel")  # charts are drawn, not photographed
OP_KINDS = ("within_panel", "cross_panel", "lane")
OP_WEIGHTS = (0.45, 0.3, 0.25)
N_OPS, N_OPS_P = (1, 2), (0.65, 0.35)  # the issue: one or two operations
REGION_FRAC = (0.015, 0.08)  # of the source panel's area
PLAIN_PROB = 0.5  # about half of the copies are plain translations
FEATHER_PROB = 0.3  # of the transformed copies
LANE_PLAIN_PROB, LANE_GAIN_PROB = 0.6, 0.25  # duplicated lanes are mostly exact; else re-exposed or mirrored
BAND_GROUP_PROB = 0.5  # a lane op copies a band group (part of the lane) rather than the whole lane
OP_ATTEMPTS = 6
LANE_GAP = 1


def draw_transform(rng: np.random.Generator) -> dict:
    """Half plain; otherwise one change (flip, 90/180/270 turn, 5-30 deg rotation, 0.8-1.25 scale,
    brightness/contrast), sometimes with feathered edges."""
    if rng.random() < PLAIN_PROB:
        return {}
    which = int(rng.integers(5))
    if which == 0:
        t = {"flip": "h" if rng.random() < 0.5 else "v"}
    elif which == 1:
        t = {"rot90": int(rng.integers(1, 4))}
    elif which == 2:
        t = {"angle": float(np.round(rng.choice([-1, 1]) * rng.uniform(5, 30), 1))}
    elif which == 3:
        t = {"scale": float(np.round(rng.choice([rng.uniform(0.8, 0.95), rng.uniform(1.05, 1.25)]), 2))}
    else:
        t = {"gain": float(np.round(rng.choice([rng.uniform(0.8, 0.93), rng.uniform(1.07, 1.2)]), 2)),
             "offset": float(np.round(rng.uniform(-15, 15), 1))}
    if rng.random() < FEATHER_PROB:
        t["feather"] = float(np.round(rng.uniform(1.0, 3.0), 1))
    return t


def _lane_transform(rng: np.random.Generator) -> dict:
    u = rng.random()
    if u < LANE_PLAIN_PROB:
        return {}
    if u < LANE_PLAIN_PROB + LANE_GAIN_PROB:
        return {"gain": float(np.round(rng.uniform(0.85, 1.15), 2)), "offset": float(np.round(rng.uniform(-10, 10), 1))}
    return {"flip": "h"}


def describe(op: synth.CopyMove) -> str:
    """The transform in one word, as recorded in synth_meta.json (``+feather`` if blended)."""
    name = ("flip" if op.flip else "rot90" if op.rot90 % 4 else "rotate" if op.angle else
            "scale" if op.scale != 1 else "brightness" if op.gain != 1 or op.offset else "translation")
    return name + ("+feather" if op.feather else "")


def _family(p: Panel) -> tuple:
    """Panels a copy may pass between: same kind and same look (one dye, colour or grey photos)."""
    return p.kind, p.source.get("look", "")


def _pick(rng: np.random.Generator, items: list):
    """One item, bigger panels likelier (a copy needs room)."""
    areas = np.array([p.box[2] * p.box[3] for p in items], np.float64)
    return items[int(rng.choice(len(items), p=areas / areas.sum()))]


def _lane_op(rng: np.random.Generator, image: np.ndarray, src: Panel, dst: Panel, occupied: list,
             min_std: float) -> Optional[synth.CopyMove]:
    """A lane (or band group) of ``src`` copied onto a different lane of ``dst`` at the same height."""
    a = src.lanes[int(rng.integers(len(src.lanes)))]
    b = dst.lanes[int(rng.integers(len(dst.lanes)))]
    if a == b:
        return None
    w = min(a[3], b[3])
    h = min(a[2], b[2])
    if rng.random() < BAND_GROUP_PROB:
        h = max(4, int(h * rng.uniform(0.3, 0.6)))
    top = int(rng.integers(a[2] - h + 1))
    sbox = (a[0] + top, a[1] + (a[3] - w) // 2, h, w)
    dbox = (b[0] + min(top, b[2] - h), b[1] + (b[3] - w) // 2, h, w)
    if image[sbox[0]:sbox[0] + h, sbox[1]:sbox[1] + w].std() < min_std:
        return None
    if not (synth._disjoint(sbox, occupied, LANE_GAP) and synth._disjoint(dbox, occupied + [sbox], LANE_GAP)):
        return None
    return synth.CopyMove(shape="rectangle", src_box=sbox, dst_box=dbox, **_lane_transform(rng))


def _one_op(rng: np.random.Generator, image: np.ndarray, panels: list, occupied: list, min_std: float):
    """(op kind, CopyMove, source panel, target panel) or None when this draw does not fit."""
    forgeable = [p for p in panels if p.kind in FORGEABLE]
    pairs = [p for p in forgeable if any(q is not p and _family(q) == _family(p) for q in forgeable)]
    laned = [p for p in forgeable if p.lanes]
    feasible = [forgeable, pairs, [p for p in laned if len(p.lanes) > 1 or
                                   any(q is not p and _family(q) == _family(p) for q in laned)]]
    weights = np.array([w if f else 0 for w, f in zip(OP_WEIGHTS, feasible)])
    if weights.sum() == 0:
        return None
    kind = OP_KINDS[int(rng.choice(3, p=weights / weights.sum()))]
    src = _pick(rng, feasible[OP_KINDS.index(kind)])
    if kind == "within_panel":
        dst = src
    else:
        same = [q for q in (laned if kind == "lane" else forgeable) if _family(q) == _family(src) and q is not src]
        dst = src if kind == "lane" and (not same or (len(src.lanes) > 1 and rng.random() < 0.6)) else _pick(rng, same)
    if kind == "lane":
        op = _lane_op(rng, image, src, dst, occupied, min_std)
    else:
        op = synth.draw_copy_move(rng, image, occupied, tries=20, min_frac=REGION_FRAC[0], max_frac=REGION_FRAC[1],
                                  min_std=min_std, src_area=src.box, dst_area=dst.box, transform=draw_transform)
    return None if op is None else (kind, op, panels.index(src), panels.index(dst))


def forge_figure(rng: np.random.Generator, image: np.ndarray, panels: list, decorations: list,
                 min_std: float = synth.MIN_REGION_STD) -> tuple[np.ndarray, list, list]:
    """(forged image, instance masks, op records) for one or two operations; no records if none fits."""
    n_ops = int(rng.choice(N_OPS, p=N_OPS_P))
    occupied = [d.box for d in decorations]
    out, instances, records = image, [], []
    for _ in range(n_ops):
        for _ in range(OP_ATTEMPTS):
            drawn = _one_op(rng, out, panels, occupied, min_std)
            if drawn is not None:
                break
        if drawn is None:
            continue
        kind, op, i, j = drawn
        out, src_inst, dst_inst = synth.apply_copy_move(out, op)
        instances += [src_inst, dst_inst]
        occupied += [op.src_box, op.dst_box]
        records.append({**op.to_dict(), "kind": kind, "transform": describe(op), "src_panel": i, "dst_panel": j})
    return out, instances, records
