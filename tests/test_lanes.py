"""The lane stage (preprocessing.matching.lanes): copied blot lanes that keypoints and exact
hashing miss are found, and authentic blots and gels stay authentic."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from preprocessing import synth
from preprocessing.matching import DecisionParams, MatcherConfig, decide, detect
from preprocessing.matching.lanes import band_signal, lane_matches, lane_spans, laned_boxes, regular_lanes
from preprocessing.synth.figure_blots import lane_boxes, lane_centres
from serving.metric import f1_matrix

LANES = (8, 12.0, 30.0)  # 8 lanes, 12 px side margin, 30 px bands on a 360 px strip


def blot(seed: int) -> np.ndarray:
    return synth.western_blot(np.random.default_rng(seed), 120, 360, rgb=False, lanes=LANES)


def copy_lane(image: np.ndarray, change: dict, post: dict) -> tuple[np.ndarray, list]:
    """Lane 1 (most of its height) pasted over lane 5 with ``change``; (RGB image, truth masks)."""
    a, b = (lane_boxes((0, 0) + image.shape[:2], LANES)[k] for k in (1, 5))
    op = synth.CopyMove("rectangle", (a[0] + 5, a[1], 100, a[3]), (b[0] + 5, b[1], 100, a[3]), **change)
    y, x, h, w = op.src_box
    _, mask = synth.transform_patch(image[y:y + h, x:x + w], synth.region_mask("rectangle", h, w), op)
    op = dataclasses.replace(op, dst_box=op.dst_box[:2] + mask.shape)
    out, src, dst = synth.apply_copy_move(image, op)
    return np.repeat(synth.post_process(out, post)[:, :, None], 3, axis=2), [src, dst]


def best_pair_f1(image: np.ndarray, truth: list, config: MatcherConfig = MatcherConfig()) -> float:
    """The smaller of source and copy F1 of the best decided pair (0 when nothing is decided)."""
    best = 0.0
    for p in decide(detect(image, config)):
        f = f1_matrix([p.source.mask(), p.copy.mask()], truth)
        best = max(best, max(min(f[0, 0], f[1, 1]), min(f[0, 1], f[1, 0])))
    return best


def test_lanes_are_found_from_column_profiles():
    spans = lane_spans(band_signal(blot(2)))
    centres = lane_centres((0, 0, 120, 360), LANES)
    assert len(spans) == LANES[0]
    assert all(min(abs((a + b) / 2 - c) for c in centres) <= 4 for a, b in spans)


def test_only_panels_with_lanes_count_as_laned():
    """The keypoint stage keeps its higher contrast threshold in laned panels only: a blot, not a
    grey micrograph that the panel classifier also calls "blot"."""
    gray = blot(2)
    box = (0, 0, gray.shape[1], gray.shape[0])
    assert laned_boxes(gray, [(box, "blot")]) == [box]
    assert laned_boxes(gray, [(box, "photo")]) == []
    for seed in range(4):  # grey micrographs whose columns do show runs, but irregular ones
        micrograph, _ = synth.photo_crop(np.random.default_rng(seed), gray.shape[0], gray.shape[1], gray=True)
        assert laned_boxes(micrograph, [(box, "blot")]) == []


def test_the_lane_stage_compares_no_lanes_in_panels_without_regular_lanes():
    """Column runs of a grey micrograph are no lanes: their smooth residuals matched each other
    under a rescale and a mirror in an authentic tuning image (docs/matcher_recall.md)."""
    forged, _ = copy_lane(blot(2), {"flip": "h"}, {})
    gray = np.ascontiguousarray(forged[:, :, 0])
    box = (0, 0, gray.shape[1], gray.shape[0])
    none = np.zeros(gray.shape, np.uint8)
    assert lane_matches(gray, none, regular_lanes(gray, [(box, "blot")]), 8.0)  # a blot's copied lane matches
    with_runs = 0
    for seed in range(4):
        micrograph, _ = synth.photo_crop(np.random.default_rng(seed), gray.shape[0], gray.shape[1], gray=True)
        with_runs += len(lane_spans(band_signal(micrograph))) >= 3
        assert lane_matches(micrograph, none, regular_lanes(micrograph, [(box, "blot")]), 8.0) == []
    assert with_runs  # the rule, not the lack of column runs, is what stops them


@pytest.mark.parametrize("seed,case_id", [(8228, "56633"), (8338, "16015"), (8338, "66964")])
def test_textures_with_regular_columns_are_not_laned(seed, case_id, monkeypatch):
    """A brick wall and a row of coins (authentic dev images, unseen style) show regular column
    runs, and their "lanes" matched each other under a rescale or a half turn. Their columns
    differ in kind, not in noise: the lanes' shared profiles leave much of them unexplained
    (``residual_share``), so they are not laned, and the images stay authentic."""
    from preprocessing.matching import lanes
    from preprocessing.matching.layout import layout
    from preprocessing.matching.work import to_work

    image, case = synth.replay_case(case_id, 0, 150, seed, max_size=1000, style="hard", sources="unseen")
    assert not case.forged and case.kind in ("photo:brick", "photo:coins")
    work = to_work(image)
    panels = layout(work)[0]
    assert regular_lanes(work.gray, panels) == {}
    assert decide(detect(image)) == []
    monkeypatch.setattr(lanes, "LANE_MAX_RESIDUAL_SHARE", np.inf)  # the rule off: laned, and flagged
    assert regular_lanes(work.gray, panels) != {}
    assert decide(detect(image)) != []


def test_blots_keep_their_lanes_under_noise_jpeg_and_blur():
    """What the lanes leave unexplained in a blot is its noise: after any post-processing of the
    hard style a blot's share stays far below the limit (0.04-0.11 here, 0.18 at most on the dev
    sets)."""
    from preprocessing.matching.lanes import LANE_MAX_RESIDUAL_SHARE, residual_share

    for seed in range(3):
        for post in ({}, {"noise_sigma": 5.0, "noise_seed": seed}, {"jpeg_quality": 70}, {"blur_sigma": 1.2}):
            gray = synth.post_process(blot(seed), post)
            spans = lane_spans(band_signal(gray))
            assert len(spans) >= LANES[0] - 1  # a faint lane may drop out
            assert residual_share(gray, spans) <= 0.5 * LANE_MAX_RESIDUAL_SHARE, (seed, post)


@pytest.mark.parametrize("seed,change", [(0, {"gain": 0.9, "offset": 5.0}), (2, {"flip": "h"})])
def test_copied_lane_is_found_only_with_the_lane_stage(seed, change):
    """A re-exposed or mirrored lane after JPEG 85 (not pixel-exact, too few keypoints)."""
    image, truth = copy_lane(blot(seed), change, {"jpeg_quality": 85})
    assert best_pair_f1(image, truth) >= 0.7
    assert best_pair_f1(image, truth, MatcherConfig(lanes=False)) < 0.7


def test_lane_pairs_say_how_they_were_found():
    image, truth = copy_lane(blot(2), {"gain": 0.9, "offset": 5.0}, {"jpeg_quality": 85})
    pairs = decide(detect(image))
    assert pairs and "lanes" in pairs[0].method and pairs[0].lane >= DecisionParams().min_lane_score
    assert pairs[0].to_dict()["lane"] == round(pairs[0].lane, 3)


@pytest.mark.parametrize("seed", [101, 104, 107, 110])
def test_authentic_blots_and_gels_stay_authentic(seed):
    rng = np.random.default_rng(seed)
    make = synth.western_blot if seed % 2 else synth.gel
    image = synth.post_process(make(rng, int(rng.integers(80, 200)), int(rng.integers(200, 500)), rgb=False),
                               {"jpeg_quality": 85})
    assert decide(detect(np.repeat(image[:, :, None], 3, axis=2))) == []


def test_tiny_and_two_lane_panels_never_raise():
    """Tiles rescaled by 1.25 can outgrow a short panel of narrow lanes; two lanes have no third
    to compare with, so they propose nothing."""
    rng = np.random.default_rng(0)
    for h, w, lanes in ((14, 30, (2, 2.0, 6.0)), (20, 60, (3, 3.0, 8.0)), (40, 120, (2, 5.0, 30.0))):
        strip = synth.western_blot(rng, h, w, rgb=False, lanes=lanes)
        assert isinstance(decide(detect(np.repeat(strip[:, :, None], 3, axis=2))), list)
    two = synth.western_blot(rng, 60, 120, rgb=False, lanes=(2, 5.0, 30.0))
    assert lane_spans(band_signal(two)) == []
