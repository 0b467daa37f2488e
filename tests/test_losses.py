"""Losses and metrics against small numpy computations."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import losses


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    y = (rng.random((3, 8, 8, 1)) < 0.2).astype(np.float32)
    y[1] = 0.0  # an authentic image in the batch
    p = rng.random((3, 8, 8, 1)).astype(np.float32)
    return y, p


def np_counts(y, p):
    return (y * p).sum(), ((1 - y) * p).sum(), (y * (1 - p)).sum()


def test_tversky_matches_numpy_with_seed_defaults(batch):
    y, p = batch
    tp, fp, fn = np_counts(y, p)
    expected = 1 - (tp + 1e-7) / (tp + 0.1 * fp + 0.9 * fn + 1e-7)
    assert float(losses.tversky_loss(y, p)) == pytest.approx(expected, rel=1e-5)


def test_dice_over_the_batch_matches_numpy(batch):
    y, p = batch
    expected = 1 - (2 * (y * p).sum() + 1) / (y.sum() + p.sum() + 1)
    assert float(losses.dice_loss(y, p)) == pytest.approx(expected, rel=1e-5)
    # Over the batch, not per image: an authentic image with no prediction adds nothing.
    y2, p2 = y.copy(), p.copy()
    p2[1] = 0.0
    no_authentic = 1 - (2 * (y2[[0, 2]] * p2[[0, 2]]).sum() + 1) / (y2[[0, 2]].sum() + p2[[0, 2]].sum() + 1)
    assert float(losses.dice_loss(y2, p2)) == pytest.approx(no_authentic, rel=1e-5)


def test_bce_dice_is_bce_plus_dice(batch):
    y, p = batch
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    dice = 1 - (2 * (y * p).sum() + 1) / (y.sum() + p.sum() + 1)
    assert float(losses.bce(y, p)) == pytest.approx(bce, rel=1e-5)
    assert float(losses.bce_dice_loss(y, p)) == pytest.approx(bce + dice, rel=1e-5)


def test_focal_matches_numpy(batch):
    y, p = batch
    p_t = np.where(y == 1, p, 1 - p)
    a_t = np.where(y == 1, 0.25, 0.75)
    expected = np.mean(-a_t * (1 - p_t) ** 2 * np.log(p_t))
    assert float(losses.focal_loss(y, p)) == pytest.approx(expected, rel=1e-5)


def test_tversky_rewards_marking_everything_and_bce_dice_does_not():
    """Why the default is not the seed's loss: 6% forged pixels, 'all forged' vs 'nothing forged'."""
    y = np.zeros((4, 16, 16, 1), np.float32)
    y[0, 4:12, 4:12] = 1.0
    everything, nothing = np.full_like(y, 0.99), np.full_like(y, 0.01)
    assert float(losses.tversky_loss(y, everything)) < 0.8 * float(losses.tversky_loss(y, nothing))
    assert float(losses.bce_dice_loss(y, everything)) > 2 * float(losses.bce_dice_loss(y, nothing))


def test_get_loss_names_and_unknown():
    for name in losses.LOSSES:
        assert callable(losses.get_loss(name))
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get_loss("iou")


def test_metrics_accumulate_over_batches(batch):
    y, p = batch
    dice, f1 = losses.DiceCoef(), losses.PixelF1(threshold=0.5)
    for i in range(3):  # one image per update: the result must be dataset-level, not a batch mean
        dice.update_state(tf.constant(y[i:i + 1]), tf.constant(p[i:i + 1]))
        f1.update_state(tf.constant(y[i:i + 1]), tf.constant(p[i:i + 1]))
    tp, fp, fn = np_counts(y, p)
    assert float(dice.result()) == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-5)
    h = (p > 0.5).astype(np.float32)
    htp, hfp, hfn = np_counts(y, h)
    assert float(f1.result()) == pytest.approx(2 * htp / (2 * htp + hfp + hfn), rel=1e-5)
    f1.reset_state()
    assert float(f1.result()) == 0.0
