"""Safe mask loading: accepted layouts, pickles refused unless trusted, resizing, and bad files."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from preprocessing.errors import BadInput
from preprocessing.masks import Mask, load_mask


def save(path, array, allow_pickle=False):
    np.save(path, array, allow_pickle=allow_pickle)
    return str(path)


def two_instances(h=6, w=8):
    m = np.zeros((2, h, w), np.uint8)
    m[0, 0:2, 0:3] = 1   # 6 px
    m[1, 3:6, 5:8] = 1   # 9 px
    return m


def expect_bad(path, tag, **kwargs):
    with pytest.raises(BadInput) as info:
        load_mask(path, **kwargs)
    err = info.value
    assert err.reason.startswith(tag + ":"), err.reason
    assert err.path == str(path) and str(path) in str(err)
    return err


def test_n_h_w_uint8(tmp_path):
    m = two_instances()
    mask = load_mask(save(tmp_path / "a.npy", m), image_shape=(6, 8, 3))
    assert isinstance(mask, Mask)
    assert mask.instances.dtype == np.uint8 and mask.instances.shape == (2, 6, 8)
    np.testing.assert_array_equal(mask.instances, m)
    assert mask.union.sum() == 15 and mask.union.dtype == np.uint8
    assert mask.notes == [] and not mask.resized and not mask.empty
    assert mask.original_shape == (6, 8)


def test_h_w_mask_and_values_other_than_0_and_1_are_refused_naming_them(tmp_path):
    m = np.zeros((5, 7), np.uint8)
    m[1:3, 2:4] = 1
    mask = load_mask(save(tmp_path / "b.npy", m))
    assert mask.instances.shape == (1, 5, 7)
    assert set(np.unique(mask.instances)) == {0, 1} and mask.instances.sum() == 4
    m[1:3, 2:4] = 255  # a 0/255 mask: the label is not guessed
    err = expect_bad(save(tmp_path / "b255.npy", m), "bad_mask")
    assert "0, 255" in err.reason


def test_bool_and_other_numeric_dtypes(tmp_path):
    m = two_instances().astype(bool)
    np.testing.assert_array_equal(load_mask(save(tmp_path / "c.npy", m)).instances, m.astype(np.uint8))
    for dtype in (np.float32, np.float64, np.int64, np.uint16):  # exactly 0 and 1 in any numeric type
        exact = two_instances().astype(dtype)
        np.testing.assert_array_equal(load_mask(save(tmp_path / "f.npy", exact)).instances, two_instances())


@pytest.mark.parametrize("name,values,shown", [
    ("all_half", np.full((2, 6, 8), 0.5, np.float32), "0.5"),
    ("soft", np.where(two_instances() > 0, 0.9, 0.02).astype(np.float32), "0.02, 0.9"),
    ("nan", np.where(two_instances() > 0, np.nan, 0.0), "NaN"),
    ("scaled", two_instances().astype(np.float32) * 0.7, "0, 0.7"),
])
def test_soft_half_and_nan_float_masks_are_bad_not_forged(tmp_path, name, values, shown):
    """Before: every such mask became 100% (or silently) forged with exit 0."""
    err = expect_bad(save(tmp_path / f"{name}.npy", values), "bad_mask")
    assert shown in err.reason and "values must be 0 and 1" in err.reason


def test_trailing_channel_is_a_channel_not_instances(tmp_path):
    m = two_instances()
    hw1 = load_mask(save(tmp_path / "hw1.npy", m.max(axis=0)[:, :, None]), image_shape=(6, 8))
    assert hw1.instances.shape == (1, 6, 8) and not hw1.resized  # not 6 instances of (8, 1)
    np.testing.assert_array_equal(hw1.instances[0], m.max(axis=0))
    nhw1 = load_mask(save(tmp_path / "nhw1.npy", m[..., None]), image_shape=(6, 8))
    np.testing.assert_array_equal(nhw1.instances, m)


def test_transposed_or_cropped_mask_is_refused_naming_both_shapes(tmp_path):
    m = two_instances()  # (2, 6, 8)
    err = expect_bad(save(tmp_path / "t.npy", m.transpose(0, 2, 1)), "bad_mask", image_shape=(6, 8))
    assert "8x6" in err.reason and "6x8" in err.reason
    expect_bad(save(tmp_path / "crop.npy", m[:, :, :5]), "bad_mask", image_shape=(6, 8))


def test_mask_at_another_scale_is_resized(tmp_path):
    half = two_instances(6, 8)[:, ::2, ::2]  # (2, 3, 4): the image at half size
    mask = load_mask(save(tmp_path / "h.npy", half), image_shape=(6, 8))
    assert mask.resized and mask.instances.shape == (2, 6, 8)
    odd = np.ones((1, 33, 50), np.uint8)  # 100 x 151 at a third: rounding of a pixel is accepted
    assert load_mask(save(tmp_path / "o.npy", odd), image_shape=(100, 151)).resized


def test_trusted_pickle_of_an_object_array_names_the_item(tmp_path):
    items = np.empty(2, dtype=object)
    items[0], items[1] = two_instances()[0], {"not": "a mask"}
    err = expect_bad(save(tmp_path / "o.npy", items, allow_pickle=True), "bad_mask", allow_pickle=True)
    assert "item 1 is a dict" in err.reason and "shape ()" not in err.reason


def test_pickled_object_array_refused_then_accepted_when_trusted(tmp_path):
    planes = np.empty(2, dtype=object)
    planes[0], planes[1] = two_instances()[0], two_instances()[1]
    path = save(tmp_path / "p.npy", planes, allow_pickle=True)
    err = expect_bad(path, "pickled_mask")
    assert "allow_pickle" in err.reason
    mask = load_mask(path, allow_pickle=True)
    np.testing.assert_array_equal(mask.instances, two_instances())


def test_plain_pickle_file_refused_then_accepted_when_trusted(tmp_path):
    path = tmp_path / "q.npy"
    path.write_bytes(pickle.dumps([two_instances()[0], two_instances()[1]]))
    expect_bad(str(path), "pickled_mask")
    np.testing.assert_array_equal(load_mask(str(path), allow_pickle=True).instances, two_instances())


def test_trusted_pickle_of_mismatched_planes_is_bad(tmp_path):
    path = tmp_path / "r.npy"
    path.write_bytes(pickle.dumps([np.ones((2, 2), np.uint8), np.ones((3, 3), np.uint8)]))
    expect_bad(str(path), "bad_mask", allow_pickle=True)


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.npy").write_bytes(b"")
    expect_bad(str(tmp_path / "z.npy"), "empty_file")


def test_missing_file(tmp_path):
    expect_bad(str(tmp_path / "none.npy"), "missing_mask")


def test_wrong_shape_is_resized_nearest_and_noted(tmp_path):
    m = np.zeros((1, 2, 2), np.uint8)
    m[0, 0, 0] = 1
    mask = load_mask(save(tmp_path / "s.npy", m), image_shape=(4, 4))
    # nearest upscale by 2: the top-left source pixel becomes the top-left 2x2 block, values stay 0/1
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :2] = 1
    np.testing.assert_array_equal(mask.instances[0], expected)
    assert mask.resized and mask.original_shape == (2, 2)
    assert any(n.startswith("shape_mismatch") and "2x2" in n and "4x4" in n for n in mask.notes)


def test_resize_is_nearest_not_interpolated(tmp_path):
    # 3x3 with only the centre set, resized to 7x7. OpenCV's INTER_NEAREST maps output index x to input
    # floor(x * 3 / 7): x = 0..6 -> 0, 0, 0, 1, 1, 2, 2, so only rows/cols 3 and 4 come from the centre.
    m = np.zeros((3, 3), np.uint8)
    m[1, 1] = 1
    mask = load_mask(save(tmp_path / "n.npy", m), image_shape=(7, 7))
    expected = np.zeros((7, 7), np.uint8)
    expected[3:5, 3:5] = 1
    np.testing.assert_array_equal(mask.instances[0], expected)


def test_wrong_shape_non_square_uses_h_w_order(tmp_path):
    m = np.zeros((2, 3), np.uint8)
    m[:, 0] = 1  # first column
    mask = load_mask(save(tmp_path / "t.npy", m), image_shape=(4, 6, 3))
    assert mask.instances.shape == (1, 4, 6)
    np.testing.assert_array_equal(mask.instances[0][:, :2], 1)   # first column doubled
    assert mask.instances[0][:, 2:].sum() == 0


def test_empty_mask_is_noted(tmp_path):
    mask = load_mask(save(tmp_path / "e.npy", np.zeros((2, 5, 5), np.uint8)), image_shape=(5, 5))
    assert mask.empty and "empty_mask" in mask.notes
    assert mask.instances.shape == (0, 5, 5)
    assert mask.union.shape == (5, 5) and mask.union.sum() == 0


def test_empty_mask_with_resize_keeps_image_size(tmp_path):
    mask = load_mask(save(tmp_path / "e2.npy", np.zeros((3, 2), np.uint8)), image_shape=(6, 4))
    assert mask.empty and mask.resized and mask.union.shape == (6, 4)


def test_empty_planes_among_real_ones_are_dropped(tmp_path):
    m = np.concatenate([two_instances(), np.zeros((1, 6, 8), np.uint8)])
    mask = load_mask(save(tmp_path / "d.npy", m))
    assert len(mask.instances) == 2 and not mask.empty


def test_garbage_bytes_are_bad_not_pickled(tmp_path):
    (tmp_path / "g.npy").write_bytes(b"definitely not numpy \x00\x01\x02" * 5)
    err = expect_bad(str(tmp_path / "g.npy"), "bad_mask")
    assert "not a .npy" in err.reason
    # trusting pickles does not make garbage loadable
    expect_bad(str(tmp_path / "g.npy"), "bad_mask", allow_pickle=True)


def test_truncated_npy(tmp_path):
    data = open(save(tmp_path / "full.npy", two_instances()), "rb").read()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 20])
    expect_bad(str(tmp_path / "cut.npy"), "bad_mask")


@pytest.mark.parametrize("shape", [(7,), (1, 2, 3, 4), ()])
def test_wrong_rank_arrays(tmp_path, shape):
    expect_bad(save(tmp_path / "w.npy", np.ones(shape, np.uint8)), "bad_mask")


def test_zero_sized_plane_and_string_dtype(tmp_path):
    expect_bad(save(tmp_path / "z.npy", np.zeros((1, 0, 4), np.uint8)), "bad_mask")
    expect_bad(save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]])), "bad_mask")


def test_npz_archive_refused(tmp_path):
    np.savez(tmp_path / "m.npz", mask=two_instances())
    (tmp_path / "m.npz").rename(tmp_path / "m.npy")
    expect_bad(str(tmp_path / "m.npy"), "bad_mask")


def test_bytes_given_directly(tmp_path):
    path = save(tmp_path / "b.npy", two_instances())
    data = open(path, "rb").read()
    mask = load_mask("in-memory/b.npy", data=data)
    np.testing.assert_array_equal(mask.instances, two_instances())
    with pytest.raises(BadInput, match="in-memory/x.npy"):
        load_mask("in-memory/x.npy", data=b"")


def test_trusted_pickle_of_nested_lists_and_of_junk(tmp_path):
    path = tmp_path / "l.npy"
    path.write_bytes(pickle.dumps([[0, 1, 1], [0, 0, 1]]))  # a plain (H, W) nested list
    mask = load_mask(str(path), allow_pickle=True)
    np.testing.assert_array_equal(mask.instances, [[[0, 1, 1], [0, 0, 1]]])
    path.write_bytes(pickle.dumps({"mask": 1}))  # a trusted pickle of something that is not a mask
    expect_bad(str(path), "bad_mask", allow_pickle=True)
