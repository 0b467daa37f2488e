"""The ``hard`` synthetic style: every case says what it holds (placement, transform,
post-processing, look-alike kind), its masks are its copy-move, and ``unseen`` sources are
disjoint from the other styles' photographs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from preprocessing import synth
from preprocessing.errors import UsageError
from preprocessing.synth import base, hard, lookalikes


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hard") / "set")
    synth.generate(out, num_train=4, num_test=12, seed=5, style="hard", show_progress=False)
    return out


def test_every_case_is_recorded_for_a_breakdown(hard_set):
    meta = json.load(open(os.path.join(hard_set, synth.META_FILE)))
    assert meta["style"] == "hard" and meta["sources"] == "seen"
    for case in meta["cases"]:
        assert case["post"]["kind"] in hard.POSTS
        if case["forged"]:
            (op,) = case["ops"]
            assert op["placement"] in hard.PLACEMENTS and op["transform"] in hard.TRANSFORMS
            assert (op["placement"] == "lane") == (case["kind"] == "blot")
        else:
            assert case["ops"] == [] and (case["kind"].startswith("photo:")
                                          or case["kind"].split(":")[1] in lookalikes.LOOKALIKES)


def test_masks_are_the_copy_move(hard_set):
    meta = json.load(open(os.path.join(hard_set, synth.META_FILE)))
    forged = [c for c in meta["cases"] if c["split"] == "train" and c["forged"]]
    assert forged
    for case in forged:
        masks = np.load(os.path.join(hard_set, "train_masks", case["case_id"] + ".npy"))
        (op,) = case["ops"]
        assert masks.shape[0] == 2
        for mask, key in zip(masks, ("src_box", "dst_box")):
            y, x, h, w = op[key]
            assert mask.sum() > 0 and mask[y:y + h, x:x + w].sum() == mask.sum()


def test_small_copies_are_small_and_smooth_ones_smooth():
    rng = np.random.default_rng(0)
    for placement in ("small", "smooth"):
        image = base.photo_crop(rng, 600, 700, gray=True)[0]
        op = hard._place(rng, image, placement, {})
        assert op is not None
        y, x, h, w = op.src_box
        if placement == "small":
            assert h * w <= 0.006 * image.size
        else:
            assert hard.SMOOTH_MIN_STD <= image[y:y + h, x:x + w].std() <= hard.SMOOTH_MAX_STD


def test_blur_post_processing_is_applied_and_replayable():
    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    post = {"kind": "blur", "blur_sigma": 1.0}
    out = synth.post_process(image, post)
    assert out.std() < image.std()
    assert np.array_equal(out, synth.post_process(image, post))


def test_unseen_sources_use_only_images_the_other_styles_never_crop(tmp_path):
    meta = synth.generate(str(tmp_path / "u"), 0, 12, seed=6, style="hard", sources="unseen", show_progress=False)
    photos = [c["kind"].split(":")[1] for c in meta["cases"] if c["kind"].startswith("photo:")]
    assert photos and set(photos) <= set(hard.UNSEEN_IMAGES)
    assert not set(hard.UNSEEN_IMAGES) & set(base.SCIENCE_IMAGES)


def test_unknown_sources_are_refused(tmp_path):
    with pytest.raises(UsageError, match="sources"):
        synth.generate(str(tmp_path / "x"), 0, 2, seed=0, style="hard", sources="elsewhere")
