"""The dense field and the small-panel keypoints, end to end on images made here with numpy and cv2.

Each forged image is built so that the older searches have a hard time: a copy in a smooth area
carried only by sensor noise, with its brightness changed (so exact hashing cannot see it); a
copy rotated by 15 degrees and one rescaled by 0.85 in a field of look-alike cells; a small copy
(0.3% of the image) re-saved as JPEG. Each must come out as two instances of pixel F1 >= 0.7
(issue 22; the target not met yet, the small copy, is a strict xfail, so it fails once met). A regular grid
of identical cells and a periodic grating are legitimate repeats: they must stay authentic with
every stage on.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocessing.matching import DecisionParams, MatcherConfig, decide, detect, instances_of
from preprocessing.matching.densefield import densefield_hypotheses, map_ok, zernike_pairs
from preprocessing.matching.keypoints import needs_dense_keypoints, panel_features, sift_features
from preprocessing.matching.verify import bandpass
from serving.metric import pair_f1

FIELD = MatcherConfig(dense_field=True, small_panels=False)
PANELS = MatcherConfig(dense_field=False, small_panels=True)
ON = MatcherConfig(dense_field=True, small_panels=True)


def cells(h: int, w: int, seed: int, n: int = 160, noise: float = 2.0) -> np.ndarray:
    """A grey micrograph-like field: blurred random cells of varied size and brightness on a
    smooth background, with sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 90 + 30 * np.sin(xx / w * 2.0) * np.cos(yy / h * 1.5)
    layer = np.zeros((h, w), np.float32)
    for _ in range(n):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax, ay = rng.uniform(4, 14), rng.uniform(4, 14)
        cv2.ellipse(layer, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(0, 180)), 0, 360,
                    float(rng.uniform(30, 110)), -1)
    layer = cv2.GaussianBlur(layer, (0, 0), 1.5)
    img = img + layer + rng.normal(0, noise, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def smooth_field(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, low-texture background (a slow gradient) with a few cells on one side and
    sensor noise of sigma 2 everywhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 120 + 25 * (xx / w) + 10 * np.sin(yy / h * 3.0)
    for _ in range(12):
        cv2.circle(img, (int(rng.uniform(0, w * 0.3)), int(rng.uniform(0, h))), int(rng.uniform(6, 14)),
                   float(rng.uniform(40, 90)), -1)
    img = img + rng.normal(0, 2.0, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(image: np.ndarray, center: tuple[float, float], radius: float, to: tuple[float, float],
          angle: float = 0.0, scale: float = 1.0, gain: float = 0.0) -> tuple[np.ndarray, list]:
    """Copy the disk of ``radius`` around ``center`` to ``to``, rotated by ``angle`` degrees and
    scaled by ``scale``, its grey levels raised by ``gain``; returns (image, [source, copy] masks)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(center, angle, scale)
    m[:, 2] += np.array(to) - np.array(center)
    src = np.zeros((h, w), np.uint8)
    cv2.circle(src, (int(round(center[0])), int(round(center[1]))), int(radius), 1, -1)
    warped = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR)
    copy = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_NEAREST)
    out = image.copy().astype(np.float32)
    out[copy > 0] = np.clip(warped[copy > 0].astype(np.float32) + gain, 0, 255)
    return out.astype(np.uint8), [src, copy]


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def best_f1(image: np.ndarray, truth: list, config: MatcherConfig = ON) -> float:
    """The lower F1 of the two instances of the best decided pair (0 when none is decided)."""
    return max((pair_f1([p.source.mask(), p.copy.mask()], truth) for p in decide(detect(image, config))), default=0.0)


def test_zernike_moments_up_to_order_five_are_eleven_magnitudes():
    assert zernike_pairs(5) == [(1, 1), (2, 0), (2, 2), (3, 1), (3, 3), (4, 0), (4, 2), (4, 4), (5, 1), (5, 3), (5, 5)]


def test_sheared_unevenly_scaled_or_mirrored_maps_are_refused():
    turn = cv2.getRotationMatrix2D((0, 0), 15, 0.85)
    assert map_ok(turn, 2.0)
    assert not map_ok(np.array([[-1.0, 0, 50], [0, 1, 0]]), 2.0)  # mirrors: left to keypoints and hashing
    assert not map_ok(np.array([[1.0, 0.3, 0], [0, 1, 0]]), 2.0)  # shear
    assert not map_ok(np.array([[1.0, 0, 0], [0, 0.7, 0]]), 2.0)  # uneven scale
    assert not map_ok(np.array([[3.0, 0, 0], [0, 3.0, 0]]), 2.0)  # beyond the scale limit


def smooth_copy() -> tuple[np.ndarray, list]:
    """A disk of smooth, noisy background copied elsewhere with its brightness raised by 6."""
    image, truth = paste(smooth_field(360, 480, 1), (300, 110), 34, (380, 260), gain=6.0)
    return np.repeat(image[:, :, None], 3, axis=2), truth


@pytest.mark.parametrize("config", [FIELD, PANELS], ids=["dense_field", "small_panels"])
def test_copy_in_a_smooth_area_carried_by_sensor_noise(config):
    image, truth = smooth_copy()
    assert best_f1(image, truth, config) >= 0.7


def test_dense_field_finds_the_shift_of_a_smooth_copy():
    image, _ = smooth_copy()
    gray = image[:, :, 0]
    hyps = densefield_hypotheses(gray, np.zeros_like(gray), 10.0)
    assert hyps, "no dense-field candidate"
    m = hyps[0].matrix
    shift = m[:, 2] if m[0, 2] > 0 else -m[:, 2]  # found from either side
    assert np.allclose(m[:, :2], np.eye(2), atol=0.05) and np.allclose(shift, [80, 150], atol=2)


def test_rescaled_copy():
    image, truth = paste(cells(400, 520, 2), (130, 120), 45, (380, 280), scale=0.85)
    image = jpeg(np.repeat(image[:, :, None], 3, axis=2), 90)
    assert best_f1(image, truth) >= 0.7


def test_rotated_copy():
    """g2NN keeps 7 of the copy's pairs among look-alike cells (8 needed); guided matching finds the rest."""
    image, truth = paste(cells(400, 520, 2), (130, 120), 45, (380, 280), angle=15.0)
    image = jpeg(np.repeat(image[:, :, None], 3, axis=2), 90)
    assert best_f1(image, truth) >= 0.7


def test_rotated_smooth_copy_after_jpeg_is_verified_in_the_coarse_band():
    """JPEG at quality 75 removes a smooth area's fine detail, so the fine band does not verify the
    keypoints' map of this rotated copy (hard style, seed 21); the coarse band does."""
    from preprocessing import synth
    from preprocessing.matching import params as P
    from preprocessing.synth import hard

    _, out, truth, ops, _ = hard.hard_case(np.random.default_rng(21), True, 96, 1000)
    assert (ops[0]["transform"], ops[0]["placement"]) == ("rotation", "smooth")
    image = synth.post_process(out, {"jpeg_quality": 75})
    assert best_f1(image, truth, MatcherConfig()) >= 0.5
    fine_only = P.COARSE_BAND_SIGMAS
    try:  # the same image with the coarse band equal to the fine one: nothing verifies
        P.COARSE_BAND_SIGMAS = P.BAND_SIGMAS
        assert best_f1(image, truth, MatcherConfig()) == 0.0
    finally:
        P.COARSE_BAND_SIGMAS = fine_only


@pytest.mark.xfail(strict=True, reason="issue 22 target not met: a 0.3% copy among look-alike cells after JPEG 80 "
                                       "gives no keypoint candidate and too few consistent dense-field points")
def test_small_copy_after_jpeg():
    h, w = 420, 560
    r = np.sqrt(0.003 * h * w / np.pi)  # a disk of 0.3% of the image
    image, truth = paste(cells(h, w, 3), (150, 140), r, (420, 300))
    image = jpeg(np.repeat(image[:, :, None], 3, axis=2), 80)
    assert best_f1(image, truth) >= 0.7


def test_small_or_flat_panels_get_denser_keypoints():
    gray = cv2.cvtColor(cells(300, 400, 5), cv2.COLOR_GRAY2BGR)[:, :, 0]
    band = bandpass(gray)
    small = (40, 60, 150, 120)
    assert needs_dense_keypoints(small, band) and not needs_dense_keypoints((0, 0, 400, 300), band)
    assert needs_dense_keypoints((0, 0, 400, 300), bandpass(smooth_field(300, 400, 5)))
    mask = np.full(gray.shape, 255, np.uint8)
    x, y, w, h = small
    dense = panel_features(gray, mask, small)
    plain = sift_features(gray[y:y + h, x:x + w], mask[y:y + h, x:x + w])
    assert len(dense) > len(plain)
    assert (dense.xy[:, 0] >= x - 1).all() and (dense.xy[:, 0] <= x + w).all()
    assert (dense.xy[:, 1] >= y - 1).all() and (dense.xy[:, 1] <= y + h).all()


def grid_of_cells(h: int, w: int, seed: int) -> np.ndarray:
    """Identical round cells on a regular lattice (a well plate, a calibration grid) with noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 200.0)
    for y in range(20, h - 10, 36):
        for x in range(20, w - 10, 36):
            cv2.circle(img, (x, y), 11, 80.0, -1)
            cv2.circle(img, (x + 3, y - 3), 4, 140.0, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2) + rng.normal(0, 2.0, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def grating(h: int, w: int, seed: int) -> np.ndarray:
    """A periodic grating (period 19 px, tilted) with noise: it matches itself at every period."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 128 + 60 * np.sin(2 * np.pi * (xx * 0.9 + yy * 0.3) / 19.0) * np.sin(2 * np.pi * yy / 23.0)
    return np.clip(img + rng.normal(0, 2.0, (h, w)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("make", [grid_of_cells, grating])
def test_periodic_authentic_images_stay_authentic(make):
    image = jpeg(np.repeat(make(360, 480, 4)[:, :, None], 3, axis=2), 90)
    det = detect(image, ON)
    assert instances_of(decide(det, DecisionParams()), det.shape) == []


def test_field_on_a_flat_image_proposes_nothing():
    flat = np.full((200, 260), 128, np.uint8)
    assert densefield_hypotheses(flat, np.zeros_like(flat), 10.0) == []


def test_field_planes_light_both_regions_of_a_rotated_copy_and_change_no_verdict():
    """The dense field's evidence planes (schema 4): the network reads the field before any
    verification, at both ends of each match; computing them changes nothing the matcher decides."""
    from preprocessing.constants import EVIDENCE_CHANNELS
    from preprocessing.matching.evidence import EVIDENCE_CONFIG, evidence_map

    gray = cells(300, 400, 7)
    image, truth = paste(np.repeat(gray[:, :, None], 3, axis=2), (90, 80), 36, (290, 200), angle=15)
    plain, with_field = detect(image, MatcherConfig()), detect(image, EVIDENCE_CONFIG)
    assert plain.field_planes is None
    assert [p.to_dict() for p in plain.candidates] == [p.to_dict() for p in with_field.candidates]
    ev = evidence_map(with_field)
    assert ev.shape == (300, 400, len(EVIDENCE_CHANNELS))
    copied = (truth[0] | truth[1]) > 0
    # Look-alike cells match each other everywhere, but only a copy moves its neighbourhood along
    # with it: consistency tells the copy apart far better than clarity alone.
    for name, factor in (("field_clarity", 1.5), ("field_consistency", 3.0)):
        plane = ev[..., EVIDENCE_CHANNELS.index(name)].astype(float)
        for region in truth:  # both the source and the copy, each above the rest of the image
            assert plane[region > 0].mean() > factor * plane[~copied].mean(), name
    with pytest.raises(ValueError, match="EVIDENCE_CONFIG"):
        evidence_map(plain)  # an empty field would read as "no copy": refused, not drawn


def test_field_planes_of_a_flat_or_tiny_image_are_computed_and_empty():
    from preprocessing.constants import EVIDENCE_CHANNELS
    from preprocessing.matching.evidence import evidence_of

    for shape in ((200, 260, 3), (6, 6, 3)):
        ev = evidence_of(np.full(shape, 128, np.uint8))
        assert ev.shape == shape[:2] + (len(EVIDENCE_CHANNELS),)
        assert not ev[..., EVIDENCE_CHANNELS.index("field_consistency")].any()
        assert (ev[..., EVIDENCE_CHANNELS.index("present")] == 255).all()
