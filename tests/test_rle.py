"""Competition RLE: hand-encoded masks, round trips, and every kind of malformed annotation."""
from __future__ import annotations

import numpy as np
import pytest

from preprocessing import rle

# A 3x4 (H=3, W=4) mask, deliberately not square so a row-major mix-up shows.
#   row0: 1 1 0 0
#   row1: 1 0 0 0
#   row2: 0 0 0 1
# Column-major (mask.T.flatten()), 1-based:
#   col0 -> px 1,2,3 = 1 1 0 ; col1 -> px 4,5,6 = 1 0 0 ; col2 -> px 7,8,9 = 0 0 0 ; col3 -> px 10,11,12 = 0 0 1
#   runs: start 1 len 2, start 4 len 1, start 12 len 1
MASK_3x4 = np.array([[1, 1, 0, 0],
                     [1, 0, 0, 0],
                     [0, 0, 0, 1]], np.uint8)
RUNS_3x4 = [1, 2, 4, 1, 12, 1]


def test_encode_instance_hand_computed():
    assert rle.encode_instance(MASK_3x4) == RUNS_3x4


def test_encode_formats_instances_as_json_lists_joined_by_semicolon():
    second = np.zeros((3, 4), np.uint8)
    second[:, 2] = 1  # whole column 2 -> px 7,8,9 -> start 7 len 3
    assert rle.encode([MASK_3x4, second]) == "[1, 2, 4, 1, 12, 1];[7, 3]"


def test_encode_authentic_for_no_or_empty_instances():
    assert rle.encode([]) == "authentic"
    assert rle.encode([np.zeros((3, 4), np.uint8)]) == "authentic"
    # an empty instance next to a real one is dropped, not written as "[]"
    assert rle.encode([np.zeros((3, 4), np.uint8), MASK_3x4]) == "[1, 2, 4, 1, 12, 1]"


def test_encode_full_mask_and_bool_input():
    assert rle.encode([np.ones((3, 4), bool)]) == "[1, 12]"


def test_decode_hand_computed():
    (mask,) = rle.decode("[1, 2, 4, 1, 12, 1]", 3, 4)
    assert mask.dtype == np.uint8 and mask.shape == (3, 4)
    np.testing.assert_array_equal(mask, MASK_3x4)


def test_decode_is_column_major():
    # px 1 and 2 are (row0,col0) and (row1,col0): down the first column, not along the first row.
    (mask,) = rle.decode("[1, 2]", 3, 4)
    assert mask[0, 0] == 1 and mask[1, 0] == 1 and mask[0, 1] == 0
    assert mask.sum() == 2


def test_decode_authentic_and_spacing_variants():
    assert rle.decode("authentic", 3, 4) == []
    assert rle.decode("  Authentic ", 3, 4) == []
    masks = rle.decode("[1,2,4,1,12,1] ; [7, 3]", 3, 4)
    assert len(masks) == 2
    np.testing.assert_array_equal(masks[0], MASK_3x4)
    np.testing.assert_array_equal(masks[1][:, 2], [1, 1, 1])


def test_touching_runs_are_accepted():
    # [1,2] covers px 1-2; [3,1] starts right after: adjacent, not overlapping.
    (mask,) = rle.decode("[1, 2, 3, 1]", 3, 4)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 1])
    assert mask.sum() == 3


def test_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (5, 7), (16, 9), (33, 20)]:
        insts = [(rng.random((h, w)) < p).astype(np.uint8) for p in (0.1, 0.5, 0.9)]
        insts = [m for m in insts if m.any()]
        decoded = rle.decode(rle.encode(insts), h, w)
        assert len(decoded) == len(insts)
        for got, want in zip(decoded, insts):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("annotation, fragment", [
    ("[1, 2, 3]", "odd number"),
    ("[0, 2]", ">= 1"),            # starts are 1-based
    ("[1, 0]", ">= 1"),            # zero length
    ("[5, -1]", ">= 1"),
    ("[12, 2]", "beyond"),         # px 12-13 of a 12-pixel image
    ("[13, 1]", "beyond"),
    ("[1, 3, 2, 1]", "overlaps"),  # px 1-3 then px 2
    ("[7, 1, 2, 1]", "precedes"),  # unsorted
    ("[1.0, 2]", "integers"),
    ("[true, 2]", "integers"),
    ('["1", 2]', "integers"),
    ("{\"a\": 1}", "integers"),
    ("[1 2]", "not a JSON list"),  # the seed notebook's space-separated format
    ("[1, 2];", "not a JSON list"),  # trailing separator
    ("forged", "not a JSON list"),
    ("", "empty annotation"),
    ("   ", "empty annotation"),
])
def test_decode_rejects_malformed(annotation, fragment):
    with pytest.raises(rle.RLEError, match=fragment):
        rle.decode(annotation, 3, 4)


def test_parse_rejects_non_string():
    with pytest.raises(rle.RLEError, match="string"):
        rle.parse(None)
    assert issubclass(rle.RLEError, ValueError)


def test_parse_names_the_bad_instance():
    with pytest.raises(rle.RLEError, match="instance 1"):
        rle.parse("[1, 2];[3]")
