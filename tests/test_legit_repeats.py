"""Legitimate repeats stay authentic under the default matcher (preprocessing.matching.repeats,
the decoration finder), and the rules do not hide a real copy."""
from __future__ import annotations

import numpy as np
import pytest

from preprocessing import synth
from preprocessing.matching import MatcherConfig, decide, detect
from preprocessing.matching.repeats import channel_of_merge
from preprocessing.synth import lookalikes


def flagged(image: np.ndarray, config: MatcherConfig = MatcherConfig()) -> list:
    return decide(detect(image, config))


@pytest.mark.parametrize("seed", [0, 3])
def test_channel_split_figure_with_its_merge_stays_authentic(seed):
    image, record = lookalikes.channel_merge(np.random.default_rng(seed))
    assert record["rows"] >= 1
    assert flagged(image) == []


@pytest.mark.parametrize("seed", [2, 84])
def test_noisy_channel_figures_of_the_hard_style_stay_authentic(seed):
    """The merge rule reads the channel's own colour under the region (its surroundings hold the
    neighbouring panel's dye) and never reads labels or page: these two, with sensor noise, were
    flagged before (as were two of 30 authentic images of a tuning set, docs/matcher_recall.md)."""
    from preprocessing.synth import hard

    image, _, _, _, kind = hard.hard_case(np.random.default_rng(seed), False, 96, 1000)
    assert kind == "lookalike:channel_merge"
    assert flagged(synth.post_process(image, {"noise_sigma": 2.2, "noise_seed": seed})) == []


@pytest.mark.parametrize("seed,case_id,flagged_without", [(8118, "105039", True), (8338, "37096", False),
                                                        (8338, "64433", True)])
def test_blurred_or_jpeg_channel_figures_of_dev_sets_stay_authentic(seed, case_id, flagged_without, monkeypatch):
    """Three authentic channel figures of the development sets (hard style, unseen sources) that
    were flagged: one merge whose second dye lights a corner only (3% of the pixels read), and two
    whose verified region grew across gutters, so that the pixels read mixed a channel -> merge
    part with a channel -> channel part, or with a row whose second dye is empty (its merge is its
    channel). Before the rule read each panel's part of the source and needed 2% (not 5%) of dye
    excess, all three were flagged. 37096 is not flagged without the rule on every machine: on an
    AMD EPYC without AVX-512 (2026-12-06, same package versions as far as known) it has no
    candidate at all, most likely because OpenCV picks its SIMD code by CPU and the pair was
    borderline; so only its verdict is asserted."""
    from preprocessing.matching import detector, repeats

    image, case = synth.replay_case(case_id, 0, 150, seed, max_size=1000, style="hard", sources="unseen")
    assert case.kind == "lookalike:channel_merge" and not case.forged
    assert flagged(image) == []
    if not flagged_without:
        return
    rule = repeats.legitimate_repeat
    monkeypatch.setattr(repeats, "MERGE_MIN_EXTRA_SHARE", 0.05)
    monkeypatch.setattr(detector, "legitimate_repeat", lambda *a: rule(*a[:9]))  # the whole source read
    assert flagged(image) != []


def test_merge_rule_is_what_keeps_the_channel_figure_authentic(monkeypatch):
    """Without the colour-composition rule the channel panel and its merge match (grey levels
    agree): the test above is not passing by accident."""
    from preprocessing.matching import detector

    image, _ = lookalikes.channel_merge(np.random.default_rng(0))
    monkeypatch.setattr(detector, "legitimate_repeat", lambda *a, **k: None)
    assert flagged(image) != []


def test_field_of_200_lookalike_cells_stays_authentic():
    image, record = lookalikes.cell_field(np.random.default_rng(1))
    assert record["cells"] == 200
    assert flagged(image) == []


@pytest.mark.parametrize("seed", [0, 8])
def test_figure_with_identical_coloured_labels_stays_authentic(seed):
    """Seed 0: a dark-green "DAPI" label; seed 8: an anti-aliased blue "RFP" on black panels."""
    image, record = lookalikes.coloured_labels(np.random.default_rng(seed))
    assert record["panels"] >= 3
    assert flagged(image) == []


@pytest.mark.parametrize("kind", ["inset", "grid"])
def test_insets_and_lattices_stay_authentic(kind):
    for seed in range(2):
        image, _ = lookalikes.lookalike(np.random.default_rng(seed), kind)
        assert flagged(image) == [], (kind, seed)


def _two_panels(change) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, left mask, right mask, map left -> right): a green fluorescence channel (mostly
    dark) on the left and, on the right, ``change`` applied to it."""
    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 1, (60, 60, 1)) ** 3
    left = grey * np.array([40, 230, 60])
    right = change(left, rng)
    image = np.clip(np.rint(np.concatenate([left, np.full((60, 10, 3), 255.0), right], axis=1)), 0, 255)
    src = np.zeros((60, 130), np.uint8)
    src[10:50, 10:50] = 1
    dst = np.roll(src, 70, axis=1)
    return image.astype(np.uint8), src, dst, np.array([[1.0, 0, 70], [0, 1.0, 0]])


def _plus_blue_dye(c, rng):
    return c + rng.uniform(0, 1, (60, 60, 1)) ** 3 * np.array([60, 110, 255])


@pytest.mark.parametrize("change,merge", [
    (_plus_blue_dye, True),  # + a blue dye
    (lambda c, rng: c, False),  # an exact copy
    (lambda c, rng: c * 1.1, False),  # a gain change: the same hue
    (lambda c, rng: c + 30, False),  # a brightness offset: grey, not a dye
])
def test_channel_of_merge_reads_colour_composition(change, merge):
    image, src, dst, m = _two_panels(change)
    assert channel_of_merge(image, src, dst, m) is merge
    assert channel_of_merge(image, dst, src, np.array([[1.0, 0, -70], [0, 1.0, 0]])) is merge


@pytest.mark.parametrize("change,merge", [
    (_plus_blue_dye, True),
    (lambda c, rng: c, False),  # an exact copy
    (lambda c, rng: c * 1.1, False),  # a gain change
])
def test_channel_of_merge_holds_when_the_map_is_a_pixel_off(change, merge, monkeypatch):
    """A dense-field or few-point map lands a pixel or two off: on speckled fluorescence the merge
    then looks darker than its channel at every other pixel unless the brighter side is read
    around each pixel (``MERGE_NEAR_PX``). Dev figures after JPEG 87 and noise were flagged so."""
    from preprocessing.matching import repeats

    image, src, dst, m = _two_panels(change)
    off = m + np.array([[0, 0, 1.0], [0, 0, 0]])
    assert channel_of_merge(image, src, dst, off) is merge
    monkeypatch.setattr(repeats, "MERGE_NEAR_PX", 1)  # the pixel itself only: the rule before
    assert channel_of_merge(image, src, dst, off) is False


def test_copy_between_two_merge_panels_is_still_found():
    """The merge rule needs one single-dye side: a region copied from one merge panel to another
    (two dyes on both sides) is reported."""
    image, _ = lookalikes.channel_merge(np.random.default_rng(0))
    out = image.copy()
    # merge panels are the last column: rows at y 6 and 176, x 334..494
    out[200:270, 350:420] = image[30:100, 350:420]
    pairs = flagged(synth.post_process(out, {}))
    assert any(p.source.mask()[65, 385] or p.copy.mask()[65, 385] for p in pairs)


def _gel_strip(rng: np.random.Generator, h: int = 160, w: int = 40) -> np.ndarray:
    """Fine detail of a gel lane: bands symmetric about the lane's centre line, with noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    strip = np.zeros((h, w))
    for y in rng.uniform(10, h - 10, 6):
        strip += 40 * np.exp(-((yy - y) / 2.5) ** 2) * np.exp(-((xx - w / 2 + 0.5) / (w / 3)) ** 4)
    return strip + rng.normal(0, 1.0, (h, w))


def test_a_mirror_pair_of_objects_symmetric_in_themselves_is_no_mirrored_copy():
    """Gel bands are their own mirror images, so neighbouring lanes with like bands match under a
    mirror between them; a mirrored copy of asymmetric detail stays a copy, and so does a plain map."""
    from preprocessing.matching.repeats import self_mirrored

    rng = np.random.default_rng(0)
    band = np.zeros((200, 200), np.float32)
    band[20:180, 40:80] = _gel_strip(rng)
    band[20:180, 120:160] = rng.normal(0, 10, (160, 40))  # asymmetric texture
    lane = np.zeros((200, 200), np.uint8)
    lane[20:180, 40:80] = 1
    texture = np.zeros_like(lane)
    texture[20:180, 120:160] = 1
    mirror_right = np.array([[-1.0, 0, 139.0], [0, 1.0, 0]])  # lane x -> 139 - x: its neighbour
    assert self_mirrored(band, lane, mirror_right)
    assert not self_mirrored(band, texture, np.array([[-1.0, 0, 299.0], [0, 1.0, 0]]))
    assert not self_mirrored(band, lane, np.array([[1.0, 0, 60.0], [0, 1.0, 0]]))  # not a mirror


def test_the_two_halves_of_a_symmetric_gel_band_are_no_mirrored_copy(monkeypatch):
    """A gel re-saved as JPEG 75: its smooth, symmetric bands pair up with themselves mirrored,
    left half with right half, stopping just short of the axis (verification ignores partners
    closer than the minimum shift). ``repeats.mirror_halves`` is what keeps the gel authentic."""
    from preprocessing.matching import repeats

    rng = np.random.default_rng(0)
    synth.western_blot(rng, 300, 480, False)  # the gel below is the seed's second image
    gel = synth.post_process(np.repeat(synth.gel(rng, 300, 480, False)[:, :, None], 3, axis=2), {"jpeg_quality": 75})
    assert flagged(gel) == []
    monkeypatch.setattr(repeats, "HALVES_MAX_GAP", 0.0)
    halves = flagged(gel)
    assert halves and all(p.transform.flip for p in halves)


def test_mirror_halves_wants_a_mirror_whose_regions_meet_at_its_axis():
    from preprocessing.matching.repeats import mirror_halves

    source = np.zeros((100, 200), np.uint8)
    source[20:80, 40:95] = 1  # its right edge (x = 94) 6 px left of x = 100
    about_100 = np.array([[-1.0, 0, 200.0], [0, 1.0, 0]])  # x -> 200 - x
    assert mirror_halves(source, about_100, 10.0)  # the nearest pixel lands 12 px away: halves
    assert not mirror_halves(source, np.array([[-1.0, 0, 220.0], [0, 1.0, 0]]), 10.0)  # 32 px: a copy beside it
    assert not mirror_halves(source, np.array([[1.0, 0, 12.0], [0, 1.0, 0]]), 10.0)  # a plain shift
    assert not mirror_halves(np.zeros_like(source), about_100, 10.0)


def _dark_panels_with_tiny_labels(seed: int, font: int) -> np.ndarray:
    """Three fluorescence panels (different sparse green structure on black), each labelled "GFP"
    in green at its top-right corner, ``font`` px tall: anti-aliased into fragments the decoration
    finder cannot keep, on the same black background, so exact hashing sees the label twice."""
    import cv2

    from preprocessing.synth.figure_page import Page

    rng = np.random.default_rng(seed)
    side, margin, gutter = 110, 6, 4
    page = Page.blank(side + 2 * margin, 3 * side + 2 * gutter + 2 * margin, True, font)
    for c in range(3):
        field = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 3.0)
        grey = np.clip((field - np.quantile(field, 0.8)) * 4000, 0, 255)  # irregular blobs on black
        grey[:25] = 0  # the label's corner is background
        panel = np.clip(grey[:, :, None] * np.array([40, 230, 60]) / 255.0, 0, 255).astype(np.uint8)
        x = margin + c * (side + gutter)
        page.place(panel, (margin, x, side, side), "fluorescence", c)
        page.text("GFP", margin + 3, x + side - 3, "rt", "channel", rgb=(40, 230, 60))
    return page.canvas


def test_tiny_coloured_labels_at_the_same_place_in_every_panel_stay_authentic(monkeypatch):
    """The demo's last false flag: a 6 px "GFP" in two panels, paired by exact hashing. The layout
    rule (``repeats.panel_aligned``) is what keeps it authentic; a copy between the panels is found."""
    from preprocessing.matching import repeats

    image = _dark_panels_with_tiny_labels(0, 7)
    forged = image.copy()
    forged[60:100, 140:180] = image[60:100, 20:60]  # structure of panel 1 pasted into panel 2
    assert flagged(image) == [] and flagged(forged) != []
    monkeypatch.setattr(repeats, "panel_aligned", lambda *a, **k: False)
    assert flagged(image) != []


def test_panel_aligned_wants_the_same_corner_offset_and_a_small_region():
    from preprocessing.matching.repeats import panel_aligned

    a, b = (0, 0, 100, 100), (120, 0, 100, 80)
    assert panel_aligned((80, 3, 15, 8), (200, 3, 15, 8), a, b)  # top-right corner, 3 px down
    assert panel_aligned((5, 88, 30, 4), (125, 68, 30, 4), a, b)  # bottom-left: the scale bar
    assert not panel_aligned((80, 3, 15, 8), (190, 20, 15, 8), a, b)  # elsewhere: a copy
    assert not panel_aligned((0, 0, 100, 100), (120, 0, 100, 80), a, b)  # a whole duplicated panel
    # a scale bar and a mark at the top of the panel make one region: its box is large, its pixels few
    assert not panel_aligned((5, 3, 60, 70), (125, 3, 60, 70), a, b)
    assert panel_aligned((5, 3, 60, 70), (125, 3, 60, 70), a, b, areas=(400, 400))
    assert not panel_aligned((5, 3, 60, 70), (125, 3, 60, 70), a, b, areas=(3000, 3000))


def test_a_blurred_lattice_of_a_dev_set_stays_authentic(monkeypatch):
    """An authentic blurred grid of dots (development set 8118, unseen sources) whose verified
    region is scattered over its box (its dots agree, 9% of the box): read alone, the dots overlap
    their shifted selves too little to show the lattice; read with its box they do. Flagged when
    such regions were read by their own pixels."""
    from preprocessing.matching import repeats

    image, case = synth.replay_case("39379", 0, 150, 8118, max_size=1000, style="hard", sources="unseen")
    assert case.kind == "lookalike:grid" and not case.forged
    assert flagged(image) == []
    monkeypatch.setattr(repeats, "LATTICE_SPARSE_FILL", 0.0)
    assert flagged(image) != []
