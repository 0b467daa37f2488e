"""The matcher end to end, on real images: copies it must find, figures it must leave alone.

Images are crops of the scikit-image photographs the synthetic generator uses, forged with the
generator's own copy-move code (``preprocessing.synth``), figures from ``preprocessing.synth.figures``,
and a figure drawn here with Pillow and a real font (repeated letters, scale bars, legends,
similar lanes). Copies that are re-saved through JPEG cannot be found by exact hashing, so they
exercise keypoints and dense verification.
"""
from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from preprocessing import synth
from preprocessing.matching import DecisionParams, MatcherConfig, decide, describe, detect, instances_of
from preprocessing.synth import base as synth_base
from preprocessing.synth import figures
from serving.metric import f1_matrix, instance_of1

JPEG = {"jpeg_quality": 90}


def photo(h: int, w: int, name: str = "immunohistochemistry", y: int = 0, x: int = 0) -> np.ndarray:
    img = synth_base._science_image(name)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def forge(image: np.ndarray, op: synth.CopyMove, post: dict) -> tuple[np.ndarray, list]:
    """(forged image, [source, copy] truth masks) with ``op.dst_box`` sized to the transformed region."""
    y, x, h, w = op.src_box
    _, mask = synth.transform_patch(image[y:y + h, x:x + w], synth.region_mask(op.shape, h, w, op.vertices), op)
    op = dataclasses.replace(op, dst_box=op.dst_box[:2] + mask.shape)
    out, src, dst = synth.apply_copy_move(image, op)
    return synth.post_process(out, post), [src, dst]


def found(image: np.ndarray, truth: list) -> list:
    """The decided pairs whose source and copy match the truth (F1 >= 0.5 each, either order)."""
    det = detect(image)
    hits = []
    for p in decide(det):
        f = f1_matrix([p.source.mask(), p.copy.mask()], truth)
        if max(min(f[0, 0], f[1, 1]), min(f[0, 1], f[1, 0])) >= 0.5:
            hits.append(p)
    return hits


@pytest.fixture(scope="module")
def base():
    return photo(420, 560)


def test_translated_copy_gives_two_accurate_instances(base):
    image, truth = forge(base, synth.CopyMove("rectangle", (40, 50, 90, 110), (250, 330)), JPEG)
    det = detect(image)
    masks = instances_of(decide(det), det.shape)
    assert len(masks) == 2 and all(m.shape == image.shape[:2] and m.dtype == np.uint8 for m in masks)
    f = f1_matrix(masks, truth)
    assert max(min(f[0, 0], f[1, 1]), min(f[0, 1], f[1, 0])) >= 0.8
    assert instance_of1(masks, truth) >= 0.8


@pytest.mark.parametrize("change,check", [
    ({"flip": "h"}, lambda t: t.flip and abs(abs(t.angle) % 180) < 3),
    ({"flip": "v"}, lambda t: t.flip and abs(abs(t.angle) - 180) < 3),
    ({"rot90": 1}, lambda t: not t.flip and abs(abs(t.angle) - 90) < 3),
    ({"scale": 1.2}, lambda t: not t.flip and abs(max(t.scale, 1 / t.scale) - 1.2) < 0.05),
    ({"angle": 20.0}, lambda t: not t.flip and abs(abs(t.angle) - 20) < 3),
])
def test_transformed_copies_are_found_with_their_transform(base, change, check):
    image, truth = forge(base, synth.CopyMove("ellipse", (40, 50, 100, 110), (240, 320), **change), JPEG)
    hits = found(image, truth)
    assert hits, f"copy with {change} not found"
    assert check(hits[0].transform), hits[0].to_dict()


def test_low_texture_blot_lane_copied_onto_another_lane():
    rng = np.random.default_rng(3)
    blot = synth.western_blot(rng, 160, 420, rgb=False)
    blot = np.repeat(blot[:, :, None], 3, axis=2)
    lane = (20, 40, 110, 26)  # a band group of one lane, pasted onto a lane further right
    image, truth = forge(blot, synth.CopyMove("rectangle", lane, (20, 300)), {})
    hits = found(image, truth)
    assert hits and hits[0].exact_blocks > 0


def test_exact_copy_in_a_figure_blot_strip_is_found():
    """A band group copied between lanes of a small blot strip inside a compound figure."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        fig = figures.make_figure(rng, 600, 900)
        image, instances, ops = figures.forge(rng, fig, synth.MIN_REGION_STD)
        if ops and all(op["kind"] == "lane" and op["transform"] == "translation" for op in ops):
            break
    else:
        pytest.skip("no lane-only figure among the seeds")
    det = detect(image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2))
    assert instance_of1(instances_of(decide(det), det.shape), instances) >= 0.5


def _text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill=(0, 0, 0)) -> None:
    import matplotlib

    font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts/ttf/DejaVuSans.ttf"), size)
    draw.text(xy, text, font=font, fill=fill)


def drawn_figure() -> np.ndarray:
    """A white page with four lettered panels: two micrographs (different places of one slide)
    with identical scale bars and labels, two blot strips with similar lanes, lane numbers and
    kDa markers, and a small chart with a legend of repeated markers."""
    page = Image.new("RGB", (900, 620), (255, 255, 255))
    rng = np.random.default_rng(5)
    page.paste(Image.fromarray(photo(260, 380, y=0, x=0)), (30, 40))
    page.paste(Image.fromarray(photo(260, 380, y=600, x=600)), (470, 40))
    for k in range(2):
        strip = synth.western_blot(rng, 60, 380, rgb=False)
        page.paste(Image.fromarray(np.repeat(strip[:, :, None], 3, axis=2)), (30, 380 + 90 * k))
    draw = ImageDraw.Draw(page)
    for letter, xy in zip("ABCD", ((8, 8), (448, 8), (8, 340), (448, 340))):
        _text(draw, xy, letter, 26)
    for x0 in (30, 470):  # the same scale bar and label in each micrograph
        draw.rectangle((x0 + 290, 280, x0 + 360, 285), fill=(255, 255, 255))
        _text(draw, (x0 + 295, 255), "50 \u00b5m", 16, fill=(255, 255, 255))
    for k in range(8):  # lane numbers and kDa markers, repeated for both strips
        _text(draw, (50 + 45 * k, 350), str(k + 1), 16)
    for k, kda in enumerate(("55", "42")):
        _text(draw, (0, 395 + 90 * k), kda, 14)
    draw.rectangle((480, 360, 870, 600), outline=(0, 0, 0))  # a chart: axes, bars, legend
    for k in range(5):
        draw.rectangle((510 + 70 * k, 600 - 40 * (k + 1), 550 + 70 * k, 600), fill=(60, 60, 60), outline=(0, 0, 0))
    for k, name in enumerate(("Control", "Treated")):
        draw.rectangle((760, 370 + 22 * k, 772, 382 + 22 * k), fill=(60, 60, 60) if k == 0 else (200, 200, 200),
                       outline=(0, 0, 0))
        _text(draw, (778, 366 + 22 * k), name, 14)
    return np.asarray(page)


def test_authentic_drawn_figure_with_repeated_decorations_stays_authentic():
    det = detect(drawn_figure())
    assert decide(det) == []
    kinds = [kind for _, kind in det.panels]
    assert "chart" in kinds and "photo" in kinds
    assert det.decorations.shape == (620, 900) and det.decorations.any()


def test_authentic_generated_figures_stay_authentic():
    flagged = []
    for seed in range(6):
        fig = figures.make_figure(np.random.default_rng(1000 + seed), 500, 1000)
        image = fig.image if fig.image.ndim == 3 else np.repeat(fig.image[:, :, None], 3, axis=2)
        pairs = decide(detect(image))
        if pairs:
            flagged.append((seed, [p.to_dict() for p in pairs]))
    assert not flagged


@pytest.mark.parametrize("image", [
    np.zeros((300, 400, 3), np.uint8),
    np.full((300, 400, 3), 255, np.uint8),
    np.full((120, 90), 37, np.uint8),
    np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8),
    np.zeros((1, 1, 3), np.uint8),
    np.random.default_rng(1).integers(0, 256, (40, 3000, 3), dtype=np.uint8),
])
def test_blank_flat_and_tiny_images_are_authentic(image):
    det = detect(image)
    assert decide(det) == [] and instances_of(decide(det), det.shape) == []
    assert det.score == 0.0 and det.decorations.shape == image.shape[:2]


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="uint8"):
        detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        detect(np.zeros((50, 50, 4), np.uint8))


def test_large_page_is_matched_at_the_working_resolution(base):
    """A 4000 x 3000 page: work capped at 1280 px, masks back at 4000 x 3000."""
    image, truth = forge(base, synth.CopyMove("rectangle", (40, 50, 120, 140), (240, 330)), JPEG)
    big = cv2.resize(image, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    truth = [cv2.resize(t, (4000, 3000), interpolation=cv2.INTER_NEAREST) for t in truth]
    det = detect(big)
    assert max(det.work_shape) == MatcherConfig().work_max_side
    masks = instances_of(decide(det), det.shape)
    assert masks and masks[0].shape == (3000, 4000)
    assert instance_of1(masks, truth) >= 0.8


def test_evidence_is_readable_and_json(base):
    image, truth = forge(base, synth.CopyMove("rectangle", (40, 50, 90, 110), (250, 330), flip="h"), JPEG)
    pair = found(image, truth)[0]
    text = describe(pair)
    assert "mirrored left-right" in text and "match: the second is the first" in text
    d = json.loads(json.dumps(pair.to_dict()))
    assert d["transform"]["flip"] is True and d["method"].startswith("keypoints")
    assert set(d) >= {"source_box", "copy_box", "transform", "inliers", "correlation", "area", "method", "within_panel"}
    dx, dy = d["transform"]["dx"], d["transform"]["dy"]  # centre to centre, either direction
    assert abs(abs(dx) - 280) <= 4 and abs(abs(dy) - 210) <= 4


def test_decide_is_pure_and_monotone(base):
    image, _ = forge(base, synth.CopyMove("rectangle", (40, 50, 90, 110), (250, 330)), JPEG)
    det = detect(image)
    before = [p.to_dict() for p in det.candidates]
    loose, strict = DecisionParams(min_inliers=4, min_area=0.0), DecisionParams(min_correlation=0.999)
    assert set(map(id, decide(det, strict))) <= set(map(id, decide(det, loose)))
    assert decide(det) == decide(det) and [p.to_dict() for p in det.candidates] == before
    assert DecisionParams.from_dict(DecisionParams(min_inliers=12).to_dict()).min_inliers == 12


def test_a_low_contrast_photograph_gets_keypoints_by_its_own_spread(monkeypatch):
    """SIFT's contrast threshold is absolute: a fundus photograph spanning ~50 grey levels showed
    a few hundred keypoints, and a mirrored, turned copy in it had no match. The thresholds scale
    with the image's spread (``keypoints.contrast_scale``), as if the image were stretched."""
    from preprocessing.matching import lanes
    from preprocessing.matching import params as P
    from preprocessing.matching.keypoints import contrast_scale

    fundus = cv2.resize(synth_base._science_image("microaneurysms"), (400, 300), interpolation=cv2.INTER_CUBIC)
    fundus = np.repeat(fundus[:, :, None], 3, axis=2) if fundus.ndim == 2 else fundus
    gray = cv2.cvtColor(fundus, cv2.COLOR_RGB2GRAY)
    assert 0.1 < contrast_scale(gray, np.ones_like(gray)) < 0.25
    image, truth = forge(fundus, synth.CopyMove("ellipse", (40, 30, 80, 100), (150, 200), flip="h", angle=-17.0), {})
    scaled = detect(image)
    assert found(image, truth)
    monkeypatch.setattr(P, "CONTRAST_MIN_SCALE", 1.0)  # the thresholds as they were, when
    monkeypatch.setattr(lanes, "LANE_MAX_RESIDUAL_SHARE", np.inf)  # this photo passed for a laned blot
    assert not found(image, truth)
    assert scaled.stats["keypoints"] > 3 * detect(image).stats["keypoints"]
