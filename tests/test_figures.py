"""Compound figures: layout, decorations that really repeat, copy-moves that respect panels and
decorations, ground truth of look-alikes, determinism."""
from __future__ import annotations

import itertools
import json
import os

import cv2
import numpy as np
import pytest

from preprocessing import synth
from preprocessing.cases import discover_training_cases
from preprocessing.images import read_rgb8
from preprocessing.matching.verify import local_zncc
from preprocessing.synth import copymove, figure_forgery, figure_layout, figure_photos, figures
from preprocessing.synth.figure_page import Page, inside, text_alpha

INSIDE_PANEL = {"scale_bar", "scale_label", "channel", "letter"}  # decorations drawn on micrographs
SIZES = (160, 320)  # small pages keep these tests fast; the layout rule is the same at 1500 px


def _meta(root):
    with open(os.path.join(root, synth.META_FILE)) as f:
        return json.load(f)


def _forged_figures(n, seed=0, sizes=SIZES):
    """(authentic figure, forged image, instances, op records) for ``n`` figures that took a copy-move."""
    out = []
    for i in itertools.count():
        rng = np.random.default_rng([seed, i])
        fig = figures.make_figure(rng, *sizes)
        image, instances, ops = figures.forge(rng, fig, synth.MIN_REGION_STD)
        if ops:
            out.append((fig, image, instances, ops))
        if len(out) == n:
            return out


def _figures(n, seed=1, sizes=SIZES):
    return [figures.make_figure(np.random.default_rng([seed, i]), *sizes) for i in range(n)]


def _disjoint(a, b, gap=0):
    return copymove._disjoint(tuple(a), [tuple(b)], gap)


# ----------------------------------------------------------------------------- pages


def test_page_size_rule():
    assert figure_layout.width_range(100, 1500) == (400, 1500)  # the default: real figure widths
    assert figure_layout.width_range(160, 320) == (160, 320)  # small pages for tests and the CPU demo
    assert figure_layout.width_range(16, 200) == (figure_layout.FIGURE_MIN_SIDE, 200)
    with pytest.raises(ValueError, match="max_size"):
        figure_layout.width_range(16, 100)
    with pytest.raises(ValueError, match="exceeds"):
        figures.make_figure(np.random.default_rng(0), 400, 300)
    for sizes in ((100, 1500), (160, 320), (300, 700)):
        lo, hi = figure_layout.width_range(*sizes)
        for fig in _figures(4, seed=sizes[1], sizes=sizes):
            h, w = fig.image.shape[:2]
            assert lo <= w <= hi and sizes[0] <= h <= sizes[1]
            assert 2 <= len({p.group for p in fig.panels}) <= 6


def test_text_is_antialiased_truetype():
    alpha = text_alpha("50 \u00b5m", 14)
    assert alpha.dtype == np.uint8 and alpha.max() == 255
    assert ((alpha > 0) & (alpha < 255)).mean() > 0.1  # grey edge pixels: anti-aliased glyphs
    assert text_alpha("Merge", 14, bold=True).shape != text_alpha("Merge", 14).shape
    page = Page.blank(40, 100, rgb=True, font_size=12)
    box = page.text("+", 20, 50, "cm", "lane_label")
    assert box is not None and page.decorations[0].box == box
    assert page.text("far away", 500, 500) is None and len(page.decorations) == 1


def test_panels_and_decorations_are_recorded_where_they_are_drawn():
    kinds = set()
    for fig in _figures(30):
        H, W = fig.image.shape[:2]
        white = np.ones((H, W), bool)
        for p in fig.panels:
            assert inside(p.box, (0, 0, H, W))
            y, x, h, w = p.box
            white[y:y + h, x:x + w] = False
            kinds.add(p.kind)
            assert all(inside(lane, p.box) for lane in p.lanes)
            assert all(_disjoint(a, b) for a, b in itertools.combinations(p.lanes, 2))
        for d in fig.decorations:
            assert inside(d.box, (0, 0, H, W))
            holders = [p for p in fig.panels if not _disjoint(d.box, p.box)]
            if d.kind in INSIDE_PANEL and holders and holders[0].kind != "chart":
                assert inside(d.box, holders[0].box), d  # drawn on a micrograph, within it
            elif holders:
                assert all(p.kind == "chart" for p in holders), d  # else only on charts or white page
        page = fig.image if fig.image.ndim == 2 else fig.image.min(axis=2)
        assert (page[white] == 255).mean() > 0.7  # the page is white around panels
    assert kinds == {"micrograph", "fluorescence", "blot", "gel", "chart"}


def test_decorations_do_not_collide():
    for fig in _figures(40, seed=4) + _figures(10, seed=4, sizes=(100, 1500)):
        for a, b in itertools.combinations(fig.decorations, 2):
            nested = {a.kind, b.kind} == {"legend", "legend_text"}  # a legend holds its entries
            assert nested or _disjoint(a.box, b.box), (a, b)


def test_authentic_figures_repeat_a_decoration_pixel_identically():
    for fig in _figures(30, seed=2):
        groups = {}
        for d in fig.decorations:
            y, x, h, w = d.box
            groups.setdefault((d.kind, d.text, h, w), []).append(fig.image[y:y + h, x:x + w])
        assert any(any(np.array_equal(a, b) for a, b in itertools.combinations(crops, 2))
                   for crops in groups.values() if len(crops) > 1)


# ----------------------------------------------------------------------------- photographs


def test_duplicated_zones_of_gravel_and_grass_hold_every_copied_place():
    """Each recorded zone is a copy (its windows correlate with the shifted image), and no place
    outside it is (a few scattered windows of chance correlation, never a 20 x 20 px patch): a
    zone that missed part of a copy let figures show both copies as authentic."""
    for name, pairs in figure_photos.DUPLICATED_ZONES.items():
        img = figure_photos.view(name)
        img = img.mean(axis=2) if img.ndim == 3 else img
        h, w = img.shape
        for (y0, x0, y1, x1), (dy, dx) in pairs:
            here, there = np.ascontiguousarray(img[:h - dy, :w - dx]), np.ascontiguousarray(img[dy:, dx:])
            agree = local_zncc(here, there, 24)[0] > 0.5
            zone = np.zeros_like(agree)
            zone[y0:y1, x0:x1] = True
            assert agree[zone].mean() > 0.5, (name, dy, dx)
            _, _, stats, _ = cv2.connectedComponentsWithStats((agree & ~zone).astype(np.uint8))
            assert stats[1:, cv2.CC_STAT_AREA].max(initial=0) < 400, (name, dy, dx)


def test_windows_of_one_photograph_never_overlap_nor_hold_both_copies_of_a_file_duplicate():
    rng = np.random.default_rng(0)
    for photo in ("gravel", "grass", "cell"):
        used = {}
        for _ in range(12):
            figure_photos.micrograph(rng, "micrograph", 60, 80, used, keys=(photo,))
        windows = used[photo]
        assert len(windows) >= 3
        assert all(_disjoint(a, b) for a, b in itertools.combinations(windows, 2))
        assert not figure_photos._touches_both(photo, windows)


def test_some_authentic_figures_show_two_crops_of_one_photograph():
    with_pair = 0
    figs = _figures(40, seed=3)
    for fig in figs:
        by_photo = {}
        for p in fig.panels:
            if p.source:
                by_photo.setdefault(figure_photos.photo_of(p.source["photo"]), []).append(p.source["window"])
        pairs = [w for w in by_photo.values() if len(w) > 1]
        with_pair += bool(pairs)
        for windows in pairs:
            assert all(_disjoint(a, b) for a, b in itertools.combinations(windows, 2))
    assert with_pair >= 0.1 * len(figs)


# ----------------------------------------------------------------------------- copy-moves


def test_copies_stay_inside_panels_off_decorations_and_off_their_source():
    for fig, image, instances, ops in _forged_figures(25):
        assert 1 <= len(ops) <= 2 and len(instances) == 2 * len(ops)
        assert np.stack(instances).sum(axis=0).max() == 1  # no instance overlaps another
        for k, op in enumerate(ops):
            assert op["kind"] in figure_forgery.OP_KINDS
            src, dst = fig.panels[op["src_panel"]], fig.panels[op["dst_panel"]]
            assert src.kind in figure_forgery.FORGEABLE and src.kind == dst.kind
            assert inside(op["src_box"], src.box) and inside(op["dst_box"], dst.box)
            assert _disjoint(op["src_box"], op["dst_box"])
            assert (op["src_panel"] == op["dst_panel"]) == (op["kind"] == "within_panel" or
                                                              (op["kind"] == "lane" and src is dst))
            for inst, box in ((instances[2 * k], op["src_box"]), (instances[2 * k + 1], op["dst_box"])):
                ys, xs = np.nonzero(inst)
                assert inside((ys.min(), xs.min(), ys.ptp() + 1, xs.ptp() + 1), box)
                for d in fig.decorations:
                    y, x, h, w = d.box
                    assert not inst[y:y + h, x:x + w].any(), (op["kind"], d)
        changed = np.any(image != fig.image, axis=-1) if image.ndim == 3 else image != fig.image
        assert not changed[np.stack(instances[1::2]).sum(axis=0) == 0].any()  # only the copies changed


def _rotate_back(patch, op):
    """The copy undone: scaled by 1 / scale and rotated by -angle about its centre."""
    h, w = patch.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -op.angle, 1 / op.scale)
    return cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR)


def test_copied_pixels_equal_their_source():
    exact = warped = 0
    for fig, image, instances, ops in _forged_figures(40, seed=5):
        before = fig.image
        for k, d in enumerate(ops):
            op = synth.CopyMove.from_dict(d)
            (y, x, h, w), (dy, dx, dh, dw) = op.src_box, op.dst_box
            src = before[y:y + h, x:x + w].astype(np.float32)
            got = image[dy:dy + dh, dx:dx + dw].astype(np.float32)
            mask = instances[2 * k + 1][dy:dy + dh, dx:dx + dw].astype(bool)
            if op.feather:  # blended rim: compare the interior only
                r = int(np.ceil(3 * op.feather))
                mask = cv2.erode(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
            if op.angle or op.scale != 1:
                back = _rotate_back(got, op)
                ys, xs = np.nonzero(mask)
                if back.shape[0] < src.shape[0] or back.shape[1] < src.shape[1] or len(ys) < 50:
                    continue
                score = cv2.matchTemplate(back, src[h // 4:h - h // 4, w // 4:w - w // 4], cv2.TM_CCOEFF_NORMED)
                assert score.max() > 0.8, d
                warped += 1
                continue
            expected = src[:, ::-1] if op.flip == "h" else src[::-1] if op.flip == "v" else src
            expected = np.rot90(expected, op.rot90) * op.gain + op.offset
            assert np.abs(got[mask] - np.clip(expected[mask], 0, 255)).max() <= 0.5 + 1e-3, d
            exact += op.exact
    assert exact >= 10 and warped >= 1


def test_operation_kinds_and_transforms_follow_the_issue():
    ops = [op for *_, rec in _forged_figures(60, seed=7) for op in rec]
    kinds = {op["kind"] for op in ops}
    assert kinds == set(figure_forgery.OP_KINDS)
    plain = np.mean([op["transform"] == "translation" for op in ops])
    assert 0.3 < plain < 0.75
    assert {"flip", "rot90", "rotate", "scale", "brightness"} <= {op["transform"].split("+")[0] for op in ops}
    for op in ops:
        if op["kind"] != "lane":
            y, x, h, w = op["src_box"]
            assert h * w >= 16


# ----------------------------------------------------------------------------- the written dataset


def test_figures_dataset_layout_meta_and_masks(figures_dir):
    meta = _meta(figures_dir)
    assert meta["style"] == "figures"
    assert all(c["kind"] == "figure" and c["figure"]["panels"] for c in meta["cases"])
    cases, problems = discover_training_cases(figures_dir)
    assert problems == [] and len(cases) == 12
    by_id = {c["case_id"]: c for c in meta["cases"] if c["split"] == "train"}
    for case in (c for c in cases if c.label == 1):
        rec = by_id[case.case_id]
        masks = np.load(case.mask_path)
        image = read_rgb8(case.image_path)
        assert masks.dtype == np.uint8 and masks.shape == (2 * len(rec["ops"]),) + image.shape[:2]
        boxes = [p["box"] for p in rec["figure"]["panels"]]
        for m in masks:
            ys, xs = np.nonzero(m)
            assert any(inside((ys.min(), xs.min(), ys.ptp() + 1, xs.ptp() + 1), b) for b in boxes)
        for op in rec["ops"]:
            assert {"kind", "transform", "src_box", "dst_box", "src_panel", "dst_panel"} <= set(op)


def test_forged_figure_is_its_authentic_twin_plus_the_recorded_copy_moves(figures_dir):
    """Replaying synth_meta.json's ops on a stored authentic twin gives the forged file exactly."""
    replayed = 0
    for case in _meta(figures_dir)["cases"]:
        if not (case["paired"] and not case["post"]):
            continue
        image = read_rgb8(os.path.join(figures_dir, "train_images", "authentic", case["case_id"] + ".png"))
        truth = read_rgb8(os.path.join(figures_dir, "train_images", "forged", case["case_id"] + ".png"))
        if case["channels"] == 1:
            image, truth = image[:, :, 0], truth[:, :, 0]
        for d in case["ops"]:
            image, _, _ = synth.apply_copy_move(image, synth.CopyMove.from_dict(d))
        np.testing.assert_array_equal(image, truth)
        replayed += 1
    assert replayed >= 1


def test_figures_same_seed_same_bytes(tmp_path):
    kw = dict(num_train=4, num_test=2, min_size=160, max_size=240, style="figures", show_progress=False)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    synth.generate(a, seed=9, **kw)
    synth.generate(b, seed=9, **kw)
    names = sorted(os.path.relpath(os.path.join(d, n), a) for d, _, ns in os.walk(a) for n in ns)
    for n in names:
        with open(os.path.join(a, n), "rb") as fa, open(os.path.join(b, n), "rb") as fb:
            assert fa.read() == fb.read(), n


def test_render_examples(tmp_path):
    path = str(tmp_path / "example.png")
    meta = figures.render_examples(path, seed=1, min_size=160, max_size=320)
    sheet = cv2.imread(path)
    assert sheet is not None and sheet.shape[1] > 320
    assert meta["forged"]["ops"] and meta["authentic"]["panels"]
