"""Case discovery in the competition layout: pairs, problems, supplemental data, test images."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from preprocessing.cases import Case, discover_test_images, discover_training_cases, split_key
from preprocessing.constants import AUTHENTIC, FORGED


def image(path, ext=".png"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, buf = cv2.imencode(ext, np.full((8, 8, 3), 100, np.uint8))
    assert ok
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def mask(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    m = np.zeros((1, 8, 8), np.uint8)
    m[0, :2, :2] = 1
    np.save(path, m)


def text(path, content="notes"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)


@pytest.fixture
def layout(tmp_path):
    """train: authentic 10, 11; forged 10 (pair with authentic 10), 12 (mask), 13 (no mask); orphan mask 99."""
    root = str(tmp_path)
    j = lambda *p: os.path.join(root, *p)
    image(j("train_images", "authentic", "10.png"))
    image(j("train_images", "authentic", "11.jpg"), ".jpg")
    image(j("train_images", "forged", "10.png"))
    image(j("train_images", "forged", "12.tif"), ".tiff")
    image(j("train_images", "forged", "13.png"))
    mask(j("train_masks", "10.npy"))
    mask(j("train_masks", "12.npy"))
    mask(j("train_masks", "99.npy"))
    # noise that must be ignored
    text(j("train_images", "authentic", "readme.txt"))
    text(j("train_images", "forged", ".DS_Store"))
    text(j("train_masks", "notes.md"))
    os.makedirs(j("train_images", "forged", "subdir.png"))  # a directory with an image-like name
    return root


def test_pairs_are_distinct_cases_keyed_by_label(layout):
    cases, _ = discover_training_cases(layout)
    keys = [c.key for c in cases]
    assert keys == ["authentic/10", "authentic/11", "forged/10", "forged/12", "forged/13"]
    by_key = {c.key: c for c in cases}
    a, f = by_key["authentic/10"], by_key["forged/10"]
    assert (a.label, a.mask_path) == (AUTHENTIC, None)
    assert f.label == FORGED and f.mask_path == os.path.join(layout, "train_masks", "10.npy")
    assert a.image_path.endswith(os.path.join("authentic", "10.png"))
    assert f.image_path.endswith(os.path.join("forged", "10.png"))
    assert by_key["forged/12"].image_path.endswith("12.tif")
    assert all(c.source == "train" for c in cases)
    # a pair shares its split key, so it never straddles train/val
    assert split_key(a) == split_key(f) == "10"


def test_missing_and_orphan_masks_are_reported_not_fatal(layout):
    cases, problems = discover_training_cases(layout)
    by_key = {c.key: c for c in cases}
    assert by_key["forged/13"].mask_path is None  # still a case: the consumer records it as an error
    reasons = {(p.case_id, p.reason.split(":")[0]) for p in problems}
    assert reasons == {("13", "missing_mask"), ("99", "orphan_mask")}
    orphan = next(p for p in problems if p.case_id == "99")
    assert orphan.path.endswith("99.npy") and orphan.label is None
    missing = next(p for p in problems if p.case_id == "13")
    assert missing.label == FORGED and missing.path.endswith("13.png")
    assert set(missing.to_dict()) == {"case_id", "label", "path", "reason"}


def test_non_image_files_are_ignored(layout):
    cases, problems = discover_training_cases(layout)
    paths = [c.image_path for c in cases] + [p.path for p in problems]
    assert not any(x.endswith((".txt", ".md", ".DS_Store", "subdir.png")) for x in paths)


def test_duplicate_case_id_in_one_folder_is_reported(layout):
    image(os.path.join(layout, "train_images", "forged", "12.png"))  # 12.png next to 12.tif
    cases, problems = discover_training_cases(layout)
    assert not [c for c in cases if c.key == "forged/12"]  # which file is meant is not guessed
    dup = [p for p in problems if p.reason.startswith("duplicate_image:")]
    assert sorted(os.path.basename(p.path) for p in dup) == ["12.png", "12.tif"]
    assert all(p.label == FORGED for p in dup)
    assert not [p for p in problems if p.case_id == "12" and p.reason.startswith("orphan_mask")]


def test_supplemental_flat_folder(layout):
    j = lambda *p: os.path.join(layout, *p)
    image(j("supplemental_images", "s1.png"))
    image(j("supplemental_images", "s2.png"))  # no mask
    mask(j("supplemental_masks", "s1.npy"))
    mask(j("supplemental_masks", "s9.npy"))    # orphan
    text(j("supplemental_images", "LICENSE"))
    cases, problems = discover_training_cases(layout)
    supp = [c for c in cases if c.source == "supplemental"]
    assert [(c.case_id, c.label) for c in supp] == [("s1", FORGED), ("s2", FORGED)]
    assert supp[0].mask_path == j("supplemental_masks", "s1.npy") and supp[1].mask_path is None
    reasons = {(p.case_id, p.reason.split(":")[0]) for p in problems}
    assert {("s2", "missing_mask"), ("s9", "orphan_mask")} <= reasons
    assert "supplemental_masks/s2.npy" in next(p.reason for p in problems if p.case_id == "s2")
    # ordering: by (source, label, case_id) -> supplemental after train
    assert [c.source for c in cases] == sorted(c.source for c in cases)


def test_supplemental_with_label_folders_and_no_train(tmp_path):
    root = str(tmp_path)
    image(os.path.join(root, "supplemental_images", "authentic", "7.png"))
    image(os.path.join(root, "supplemental_images", "forged", "7.png"))
    mask(os.path.join(root, "supplemental_masks", "7.npy"))
    cases, problems = discover_training_cases(root)
    assert [(c.key, c.source) for c in cases] == [("authentic/7", "supplemental"), ("forged/7", "supplemental")]
    assert problems == []


def test_missing_input_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        discover_training_cases(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train_images"):
        discover_training_cases(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        discover_test_images(str(tmp_path / "nowhere"))


def test_discover_test_images(tmp_path):
    root = str(tmp_path)
    image(os.path.join(root, "test_images", "b.png"))
    image(os.path.join(root, "test_images", "a.jpg"), ".jpg")
    text(os.path.join(root, "test_images", "sample_submission.csv"))
    found, _ = discover_test_images(root)
    assert [cid for cid, _ in found] == ["a", "b"]
    assert found[0][1] == os.path.join(root, "test_images", "a.jpg")
    # a plain folder of images works too
    assert [cid for cid, _ in discover_test_images(os.path.join(root, "test_images"))[0]] == ["a", "b"]


def test_case_is_hashable_and_serialisable():
    c = Case("1", FORGED, "train", "/x/1.png", "/x/1.npy")
    assert {c: 1}[Case("1", FORGED, "train", "/x/1.png", "/x/1.npy")] == 1
    assert c.to_dict() == {"case_id": "1", "label": 1, "source": "train", "image_path": "/x/1.png",
                           "mask_path": "/x/1.npy"}
