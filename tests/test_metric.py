"""oF1 per image against hand-computed values (tiny 4x4 masks; expected numbers worked out in comments)."""
from __future__ import annotations

import numpy as np
import pytest

from serving.metric import f1_matrix, image_score, instance_of1, pair_f1


def box(r0, r1, c0, c1, shape=(4, 4)):
    m = np.zeros(shape, np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


A = box(0, 2, 0, 2)   # top-left 2x2 = 4 px
B = box(2, 4, 2, 4)   # bottom-right 2x2 = 4 px, disjoint from A
A_SHIFT = box(0, 2, 1, 3)  # A moved one column right: overlaps A in column 1 only (2 px)


def test_perfect_prediction_scores_one():
    # F1(A,A)=F1(B,B)=1, cross terms 0 -> matched mean 1, penalty 2/2 -> 1.0
    assert image_score([A, B], [A, B]) == pytest.approx(1.0)
    # order of predictions does not matter: Hungarian matching pairs them
    assert image_score([B, A], [A, B]) == pytest.approx(1.0)


def test_authentic_truth_scores_by_label():
    assert image_score([], []) == 1.0      # authentic predicted authentic
    assert image_score([A], []) == 0.0     # authentic predicted forged


def test_forged_predicted_authentic_scores_zero():
    assert image_score([], [A, B]) == 0.0


def test_one_extra_instance():
    # pred [A, B], truth [A]: matrix rows A:[1], B:[0]; best match 1.0;
    # penalty len(gt)/max(len(pred), len(gt)) = 1/2 -> 0.5
    assert image_score([A, B], [A]) == pytest.approx(0.5)


def test_one_missed_instance():
    # pred [A], truth [A, B]: matrix [[1, 0]] padded with a zero row -> [[1, 0], [0, 0]];
    # matched F1 = 1 and 0 -> mean 0.5; penalty 2/2 -> 0.5
    assert image_score([A], [A, B]) == pytest.approx(0.5)


def test_shifted_mask():
    # |A| = |A_SHIFT| = 4, overlap = 2 px (column 1, rows 0-1)
    # F1 = 2*TP / (|pred| + |gt|) = 2*2 / (4+4) = 0.5; one-to-one -> 0.5
    assert image_score([A_SHIFT], [A]) == pytest.approx(0.5)


def test_shifted_plus_missed():
    # pred [A_SHIFT], truth [A, B]: rows [0.5, 0] + zero row -> matched 0.5 and 0 -> mean 0.25, penalty 1 -> 0.25
    assert image_score([A_SHIFT], [A, B]) == pytest.approx(0.25)


def test_hungarian_beats_greedy():
    # 1x6 strip. G1 = px 0-3 (4 px), G2 = px 4-5 (2 px); P1 = px 0-5 (6 px), P2 = px 0-1 (2 px).
    # F1(P1,G1) = 2*4/(6+4) = 0.8     F1(P1,G2) = 2*2/(6+2) = 0.5
    # F1(P2,G1) = 2*2/(2+4) = 2/3     F1(P2,G2) = 0
    # Greedy takes 0.8 then 0 -> 0.4; the optimal assignment is 0.5 + 2/3 -> mean 7/12 ~ 0.5833.
    strip = lambda idx: np.isin(np.arange(6), idx).astype(np.uint8)[None, :]
    g1, g2 = strip([0, 1, 2, 3]), strip([4, 5])
    p1, p2 = strip([0, 1, 2, 3, 4, 5]), strip([0, 1])
    np.testing.assert_allclose(f1_matrix([p1, p2], [g1, g2]), [[0.8, 0.5], [2 / 3, 0.0]])
    assert instance_of1([p1, p2], [g1, g2]) == pytest.approx(7 / 12)


def test_pair_f1_is_the_weaker_instance_in_the_better_pairing():
    # 1x8 strip. Truth pair: source px 0-3, copy px 4-7. Predicted pair, listed copy first:
    # px 4-7 (exact, F1 1) and px 0-1 (F1 with the source 2*2/(2+4) = 2/3).
    # Listed order: F1(pred0, source) = 0 -> 0; swapped: min(1, 2/3) = 2/3.
    strip = lambda idx: np.isin(np.arange(8), idx).astype(np.uint8)[None, :]
    source, copy = strip([0, 1, 2, 3]), strip([4, 5, 6, 7])
    assert pair_f1([copy, strip([0, 1])], [source, copy]) == pytest.approx(2 / 3)
    assert pair_f1([source, strip([0, 1])], [source, copy]) == 0.0  # both on the source


def test_f1_matrix_shapes_and_padding():
    # more predictions than truths: (P, G), no padding
    assert f1_matrix([A, B, A_SHIFT], [A]).shape == (3, 1)
    # fewer predictions than truths: padded to (G, G) with zero rows
    m = f1_matrix([A], [A, B, A_SHIFT])
    assert m.shape == (3, 3)
    np.testing.assert_allclose(m[0], [1.0, 0.0, 0.5])
    assert not m[1:].any()
    # no predictions at all: all zero
    assert not f1_matrix([], [A]).any()


def test_empty_instances_score_zero_not_nan():
    empty = np.zeros((4, 4), np.uint8)
    # F1(empty, A) = 0/(0+4) = 0 ; F1(empty, empty) has no pixels at all -> 0 (not NaN)
    assert f1_matrix([empty], [A])[0, 0] == 0.0
    assert f1_matrix([empty], [empty])[0, 0] == 0.0


def test_instance_of1_needs_truth():
    with pytest.raises(ValueError):
        instance_of1([A], [])
