"""The synthetic copy-move generator: layout, masks, exact copies, RLE solution, determinism, CLI."""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from preprocessing import rle, synth
from preprocessing.cases import discover_test_images, discover_training_cases
from preprocessing.images import read_rgb8, to_rgb8
from preprocessing.masks import load_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _meta(root):
    with open(os.path.join(root, synth.META_FILE)) as f:
        return json.load(f)


def _stored(path):
    """The PNG exactly as stored (gray stays 2-D, 16-bit stays 16-bit)."""
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def _native(path):
    """A stored PNG as the generator drew it: uint8, grayscale 2-D, RGB order."""
    stored = _stored(path)
    rgb = to_rgb8(stored)
    return rgb if stored.ndim == 3 else rgb[:, :, 0]


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns)


def _textured_image(h=120, w=150, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels == 3 else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _region(op):
    y, x, h, w = op.src_box
    return synth.region_mask(op.shape, h, w, op.vertices).astype(bool)


# ----------------------------------------------------------------------------- pure copy-move


@pytest.mark.parametrize("shape", synth.SHAPES)
@pytest.mark.parametrize("channels", [1, 3])
def test_exact_copy_equals_its_source_and_nothing_else_changes(shape, channels):
    image = _textured_image(channels=channels)
    vertices = ((2, 0), (39, 5), (30, 29), (0, 20)) if shape == "polygon" else ()
    op = synth.CopyMove(shape=shape, src_box=(10, 12, 30, 40), dst_box=(70, 90, 30, 40), vertices=vertices)
    assert op.exact
    out, src, dst = synth.apply_copy_move(image, op)
    region = _region(op)
    assert region.sum() > 0
    np.testing.assert_array_equal(src[10:40, 12:52], region)
    np.testing.assert_array_equal(dst[70:100, 90:130], region)
    assert src.sum() == dst.sum() == region.sum()
    np.testing.assert_array_equal(out[70:100, 90:130][region], image[10:40, 12:52][region])
    np.testing.assert_array_equal(out[dst == 0], image[dst == 0])
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("flip,rot90", [("h", 0), ("v", 1), ("", 2), ("h", 3)])
def test_flips_and_quarter_turns_are_exact(flip, rot90):
    image = _textured_image()
    probe = synth.CopyMove(shape="ellipse", src_box=(5, 8, 24, 34), flip=flip, rot90=rot90)
    _, tmask = synth.transform_patch(image[5:29, 8:42], synth.region_mask("ellipse", 24, 34), probe)
    op = synth.CopyMove(shape="ellipse", src_box=(5, 8, 24, 34), flip=flip, rot90=rot90,
                        dst_box=(60, 70) + tmask.shape)
    out, _, dst = synth.apply_copy_move(image, op)
    expected = image[5:29, 8:42]
    expected = expected[:, ::-1] if flip == "h" else expected[::-1] if flip == "v" else expected
    expected = np.rot90(expected, rot90)
    region = dst[60:60 + tmask.shape[0], 70:70 + tmask.shape[1]].astype(bool)
    assert expected.shape[:2] == region.shape
    np.testing.assert_array_equal(out[60:60 + region.shape[0], 70:70 + region.shape[1]][region], expected[region])


def test_rotated_scaled_brightened_feathered_copy_stays_inside_its_box():
    image = _textured_image(h=160, w=180, channels=1)
    base = dict(shape="polygon", src_box=(10, 10, 40, 50), angle=23.5, scale=1.2, gain=1.1, offset=-5.0,
                feather=2.0, vertices=((0, 0), (49, 10), (40, 39), (5, 30)))
    patch = image[10:50, 10:60]
    _, tmask = synth.transform_patch(patch, synth.region_mask("polygon", 40, 50, base["vertices"]),
                                     synth.CopyMove(**base))
    op = synth.CopyMove(dst_box=(90, 100) + tmask.shape, **base)
    assert not op.exact
    out, src, dst = synth.apply_copy_move(image, op)
    # scaled by 1.2 then rotated: the area grows by ~1.44 (pixel rounding aside)
    assert 1.2 < dst.sum() / src.sum() < 1.7
    ys, xs = np.nonzero(dst)
    assert ys.min() == 90 and xs.min() == 100
    assert ys.max() + 1 == 90 + tmask.shape[0] and xs.max() + 1 == 100 + tmask.shape[1]
    box = np.zeros_like(dst, dtype=bool)
    box[90:90 + tmask.shape[0], 100:100 + tmask.shape[1]] = True
    np.testing.assert_array_equal(out[~box], image[~box])
    assert not np.array_equal(out[box], image[box])


def test_dst_box_must_match_the_transformed_region():
    op = synth.CopyMove(shape="rectangle", src_box=(0, 0, 10, 20), rot90=1, dst_box=(50, 50, 10, 20))
    with pytest.raises(ValueError, match="dst_box"):
        synth.apply_copy_move(_textured_image(), op)


def test_forge_draws_disjoint_textured_regions_of_learnable_size():
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(_textured_image(h=180, w=140, seed=5), (0, 0), 1.0)
    for _ in range(20):
        out, instances, ops = synth.forge(rng, image)
        assert 1 <= len(ops) <= 3 and len(instances) == 2 * len(ops)
        total = np.zeros(image.shape[:2], np.int32)
        for inst in instances:
            assert inst.shape == image.shape[:2] and inst.dtype == np.uint8
            assert 0.005 * inst.size < inst.sum() < 0.3 * inst.size
            total += inst
        assert total.max() == 1  # no overlap at all between instances
        for op in ops:
            y, x, h, w = op.src_box
            assert image[y:y + h, x:x + w][_region(op)].std() >= synth.MIN_REGION_STD


def test_flat_image_cannot_get_a_textured_copy():
    flat = np.full((100, 130), 128, np.uint8)
    _, instances, ops = synth.forge(np.random.default_rng(0), flat)
    assert ops == [] and instances == []
    _, instances, ops = synth.forge(np.random.default_rng(0), flat, min_std=0.0)
    assert ops and len(instances) == 2 * len(ops)


def test_post_processing_is_shared_by_a_before_after_pair():
    image = _textured_image(channels=3)
    post = {"jpeg_quality": 80, "noise_sigma": 3.0, "noise_seed": 11}
    a, b = synth.post_process(image, post), synth.post_process(image.copy(), post)
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and a.dtype == np.uint8 and not np.array_equal(a, image)
    gray = synth.post_process(image[:, :, 0], {"jpeg_quality": 90})
    assert gray.shape == image.shape[:2]
    np.testing.assert_array_equal(synth.post_process(image, {}), image)


def test_16bit_png_reads_back_exactly(tmp_path):
    gray = _textured_image(channels=1)
    path = str(tmp_path / "g16.png")
    synth.write_png(path, gray, bit16=True)
    stored = _stored(path)
    assert stored.dtype == np.uint16 and stored.ndim == 2
    np.testing.assert_array_equal(read_rgb8(path)[:, :, 0], gray)


def test_base_images_cover_blots_gels_and_offline_photos():
    names = synth.available_science_images()
    assert {"cell", "immunohistochemistry", "retina"} <= set(names)
    rng = np.random.default_rng(0)
    for fn in (synth.western_blot, synth.gel):
        for rgb in (False, True):
            img = fn(rng, 70, 110, rgb)
            assert img.shape == ((70, 110, 3) if rgb else (70, 110)) and img.dtype == np.uint8
            assert img.std() > 5  # bands are visible
    img, name = synth.photo_crop(rng, 300, 1600, gray=True)  # wider than every sample: upscaled
    assert img.shape == (300, 1600) and name in names
    fig = synth.figure_panels(rng, 200, 330, rgb=True)
    assert fig.shape == (200, 330, 3) and (fig[:2] == 255).all() and (fig[:, :2] == 255).all()  # white margin
    assert fig.std() > 20
    assert synth.figure_panels(rng, 20, 90, rgb=False) is None  # panels would be tiny


def test_panel_grids_never_show_one_photograph_twice(monkeypatch):
    """An authentic panel grid holds no hidden duplicate: every photograph is replaced by a map of
    its own coordinates (red: row, green: column, blue: which photograph), so each crop reveals
    where it came from, and no two panels may come from overlapping windows of one photograph."""
    from preprocessing.synth import base

    shipped = base._science_image

    def coordinates(name):
        img = shipped(name)
        if img is None:
            return None
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        which = np.full_like(yy, 10 * base.SCIENCE_IMAGES.index(name))
        return np.stack([yy * 255 // (h - 1), xx * 255 // (w - 1), which], 2).astype(np.uint8)

    monkeypatch.setattr(base, "_science_image", coordinates)
    photo_panels = 0
    for seed in range(40):
        fig = synth.figure_panels(np.random.default_rng(seed), 360, 540, rgb=True)
        white = (fig == 255).all(axis=2)
        n, labels = cv2.connectedComponents((~white).astype(np.uint8))
        windows = []
        for k in range(1, n):
            px = fig[labels == k]
            which = np.unique(px[:, 2])
            if len(which) == 1 and which[0] % 10 == 0 and (px[:, 0] != px[:, 1]).any():  # a photograph
                windows.append((int(which[0]), px[:, 0].min(), px[:, 0].max(), px[:, 1].min(), px[:, 1].max()))
        photo_panels += len(windows)
        for i, a in enumerate(windows):
            for b in windows[i + 1:]:
                overlap = a[1] <= b[2] and b[1] <= a[2] and a[3] <= b[4] and b[3] <= a[4]
                assert not (a[0] == b[0] and overlap), f"seed {seed}: one photograph in two panels"
    assert photo_panels >= 60  # most grids hold several photographs


# ----------------------------------------------------------------------------- the written dataset


def test_layout_is_discoverable_and_about_half_forged(synth_dir):
    cases, problems = discover_training_cases(synth_dir)
    assert problems == []
    forged = [c for c in cases if c.label == 1]
    authentic = [c for c in cases if c.label == 0]
    assert len(cases) == 24 and len(forged) == 12 and len(authentic) == 12
    assert all(c.mask_path for c in forged)
    assert all(c.case_id.isdigit() for c in cases)
    pairs = {c.case_id for c in forged} & {c.case_id for c in authentic}
    assert 4 <= len(pairs) < len(forged)  # many, not all, forged cases have their authentic twin
    test = discover_test_images(synth_dir)[0]
    assert len(test) == 8
    meta = _meta(synth_dir)
    assert meta["train"] == {"images": 24, "forged": 12, "authentic": 12, "pairs": len(pairs)}
    assert meta["test"] == {"images": 8, "forged": 4, "authentic": 4}


def test_images_have_the_requested_sizes_and_formats(synth_dir):
    shapes = []
    for rel in _files(synth_dir):
        if rel.endswith(".png"):
            img = _stored(os.path.join(synth_dir, rel))
            h, w = img.shape[:2]
            assert 64 <= h <= 200 and 64 <= w <= 200 and h != w, rel
            shapes.append(img.ndim)
    assert 2 in shapes and 3 in shapes  # grayscale stored single-channel, and RGB
    kinds = {c["kind"].split(":")[0] for c in _meta(synth_dir)["cases"]}
    assert {"photo", "blot", "gel"} <= kinds <= set(synth.BASE_KINDS)


def test_every_mask_instance_is_nonempty_disjoint_and_matches_its_image(synth_dir):
    meta = {c["case_id"]: c for c in _meta(synth_dir)["cases"] if c["split"] == "train"}
    cases, _ = discover_training_cases(synth_dir)
    for case in (c for c in cases if c.label == 1):
        image = read_rgb8(case.image_path)
        assert load_mask(case.mask_path, image_shape=image.shape[:2]).notes == []
        inst = np.load(case.mask_path)
        assert inst.dtype == np.uint8 and inst.ndim == 3 and inst.shape[1:] == image.shape[:2]
        assert set(np.unique(inst)) <= {0, 1}
        assert inst.shape[0] == 2 * len(meta[case.case_id]["ops"])
        areas = inst.reshape(len(inst), -1).sum(axis=1)
        assert (areas > 0).all()
        assert inst.sum(axis=0).max() == 1


def _replay_checks(root):
    """For before/after pairs stored without post-processing: replaying the recorded ops on the
    authentic image gives the forged image exactly, and each exact copy equals its source.
    Returns (replayed cases, exact copies checked)."""
    replayed = exact = 0
    for case in _meta(root)["cases"]:
        if not (case["paired"] and not case["post"]):
            continue
        image = _native(os.path.join(root, "train_images", "authentic", case["case_id"] + ".png"))
        truth = _native(os.path.join(root, "train_images", "forged", case["case_id"] + ".png"))
        masks = np.load(os.path.join(root, "train_masks", case["case_id"] + ".npy"))
        for k, d in enumerate(case["ops"]):
            op = synth.CopyMove.from_dict(d)
            assert op.exact == d["exact"]
            if op.exact:
                (y, x, h, w), (dy, dx, _, _) = op.src_box, op.dst_box
                region = _region(op)
                np.testing.assert_array_equal(truth[dy:dy + h, dx:dx + w][region], image[y:y + h, x:x + w][region])
                exact += 1
            image, src, dst = synth.apply_copy_move(image, op)
            np.testing.assert_array_equal(src, masks[2 * k])
            np.testing.assert_array_equal(dst, masks[2 * k + 1])
        np.testing.assert_array_equal(image, truth)
        replayed += 1
    return replayed, exact


def test_forged_image_is_its_authentic_twin_plus_the_recorded_copy_moves(synth_dir, tmp_path):
    replayed, exact = _replay_checks(synth_dir)
    more = str(tmp_path / "more")
    synth.generate(more, num_train=30, num_test=0, seed=12, min_size=40, max_size=90)
    r2, e2 = _replay_checks(more)
    assert replayed >= 1 and replayed + r2 >= 5
    assert exact + e2 >= 3


def test_test_solution_decodes_to_masks_of_each_image_size(synth_dir):
    sol = pd.read_csv(os.path.join(synth_dir, synth.SOLUTION_FILE), dtype={"case_id": str, "annotation": str},
                      keep_default_na=False)
    assert list(sol.columns) == ["case_id", "annotation", "height", "width"]
    images = dict(discover_test_images(synth_dir)[0])
    assert set(sol.case_id) == set(images)
    meta = {c["case_id"]: c for c in _meta(synth_dir)["cases"] if c["split"] == "test"}
    for row in sol.itertuples():
        h, w = read_rgb8(images[row.case_id]).shape[:2]
        assert (row.height, row.width) == (h, w)
        masks = rle.decode(row.annotation, h, w)
        assert len(masks) == 2 * len(meta[row.case_id]["ops"])
        assert (row.annotation == rle.AUTHENTIC) == (not meta[row.case_id]["forged"])
        for m in masks:
            assert m.shape == (h, w) and m.sum() > 0
    assert (sol.annotation != rle.AUTHENTIC).sum() == 4


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(num_train=6, num_test=2, min_size=40, max_size=80, show_progress=False)
    a, b, c = (str(tmp_path / n) for n in "abc")
    synth.generate(a, seed=3, **kw)
    synth.generate(b, seed=3, **kw)
    synth.generate(c, seed=4, **kw)
    files = _files(a)
    assert files == _files(b) and len(files) >= 6 + 2 + 3 + 2
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    other = _files(c)
    assert len(other) == len(files) and other != files  # other case ids
    pngs = lambda root, names: sorted(open(os.path.join(root, n), "rb").read() for n in names if n.endswith(".png"))
    assert set(pngs(a, files)).isdisjoint(pngs(c, other))  # and other pictures


def test_one_case_replays_as_written(tmp_path):
    """``replay_case`` makes one case of a set again, equal to the written file, without the
    others; an id the set does not hold is an error naming it."""
    from preprocessing.images import read_rgb8

    kw = dict(num_train=0, num_test=6, seed=5, min_size=40, max_size=300, style="hard", sources="unseen")
    synth.generate(str(tmp_path / "s"), show_progress=False, **kw)
    meta = _meta(str(tmp_path / "s"))
    for case in meta["cases"][:3]:
        image, record = synth.replay_case(case["case_id"], **kw)
        assert record.case_id == case["case_id"] and record.forged == case["forged"]
        written = read_rgb8(str(tmp_path / "s" / "test_images" / f"{case['case_id']}.png"))
        assert np.array_equal(image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2), written)
    with pytest.raises(KeyError, match="no case '1'"):
        synth.replay_case("1", **kw)


def test_progress_bar_on_request(tmp_path, capsys):
    synth.generate(str(tmp_path / "p"), 2, 1, 0, min_size=32, max_size=40, show_progress=True)
    assert "synth" in capsys.readouterr().err
    synth.generate(str(tmp_path / "q"), 2, 1, 0, min_size=32, max_size=40)
    assert "synth" not in capsys.readouterr().err


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="min_size"):
        synth.generate(str(tmp_path), 2, 0, 0, min_size=300, max_size=100)
    with pytest.raises(ValueError, match="num_train"):
        synth.generate(str(tmp_path), -1, 0, 0)


def test_cli_writes_a_tiny_dataset(tmp_path):
    out = str(tmp_path / "cli")
    proc = subprocess.run(
        [sys.executable, "-m", "preprocessing.synth", "--output_dir", out, "--num_train", "3", "--num_test", "2",
         "--seed", "5", "--min_size", "32", "--max_size", "48"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "copy-moves" in proc.stdout
    cases, problems = discover_training_cases(out)
    assert len(cases) == 3 and problems == []
    assert len(discover_test_images(out)[0]) == 2
    assert _meta(out)["options"] == {"num_train": 3, "num_test": 2, "min_size": 32, "max_size": 48}


# ----------------------------------------------------------------------------- styles

ORIGINAL_COMMIT = "6a92ea8"  # the last commit before styles: its generator is today's `photos` style


def _original_synth(tmp_path):
    """The generator as it was before styles existed, loaded from git history (skip without it)."""
    import importlib.util

    proc = subprocess.run(["git", "-C", REPO, "show", f"{ORIGINAL_COMMIT}:preprocessing/synth.py"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"commit {ORIGINAL_COMMIT} is not in this clone")
    path = tmp_path / "synth_before_styles.py"
    # The competition RLE has moved to the data contract since; the encoder itself is unchanged.
    path.write_text(proc.stdout.replace("from serving import rle", "from preprocessing import rle"))
    spec = importlib.util.spec_from_file_location("synth_before_styles", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_photos_style_writes_the_same_bytes_as_before_styles(tmp_path):
    old = _original_synth(tmp_path)
    kw = dict(num_train=10, num_test=4, seed=5, min_size=60, max_size=300, show_progress=False)
    a, b = str(tmp_path / "before"), str(tmp_path / "photos")
    old.generate(a, **kw)
    synth.generate(b, style="photos", **kw)
    files = _files(a)
    assert files == _files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, [f for f in files if f != synth.META_FILE], shallow=False)
    assert mismatch == [] and errors == []
    meta = _meta(b)
    assert meta.pop("style") == "photos"
    assert meta == _meta(a)  # the metadata too, but for the new "style" key


def test_mixed_style_is_the_default_and_mixes_figures_and_photos(tmp_path):
    out = str(tmp_path / "mixed")
    meta = synth.generate(out, num_train=10, num_test=4, seed=2, min_size=160, max_size=320)
    assert meta["style"] == "mixed" and _meta(out)["style"] == "mixed"
    kinds = [c["kind"] for c in meta["cases"]]
    assert "figure" in kinds and any(k != "figure" for k in kinds)
    assert all(("figure" in c) == (c["kind"] == "figure") for c in _meta(out)["cases"])
    cases, problems = discover_training_cases(out)
    assert problems == [] and len(cases) == 10
    small = synth.generate(str(tmp_path / "small"), num_train=6, num_test=0, seed=2, min_size=40, max_size=80)
    assert all(c["kind"] != "figure" for c in small["cases"])  # pages under 128 px cannot hold a figure


def test_bad_styles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="style"):
        synth.generate(str(tmp_path), 2, 0, 0, style="poster")
    with pytest.raises(ValueError, match="max_size"):
        synth.generate(str(tmp_path), 2, 0, 0, min_size=40, max_size=100, style="figures")


def test_cli_style_flag(tmp_path):
    out = str(tmp_path / "cli_figures")
    proc = subprocess.run(
        [sys.executable, "-m", "preprocessing.synth", "--output_dir", out, "--num_train", "2", "--num_test", "1",
         "--seed", "1", "--min_size", "160", "--max_size", "240", "--style", "figures"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    meta = _meta(out)
    assert meta["style"] == "figures" and all(c["kind"] == "figure" for c in meta["cases"])
