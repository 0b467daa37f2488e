"""Segmentation losses and metrics.

Region losses (Tversky, Dice) are computed over the whole (per-replica) batch,
not per image: an authentic image has an empty mask, and a per-image Dice on it
is either undefined or pushes towards nothing useful. Keras divides every loss
by the number of replicas and sums the gradients, so each replica's batch counts
equally.

Why the default is not the seed's Tversky(alpha 0.1, beta 0.9): a false positive
costs a ninth of a false negative, so predicting "forged" everywhere is a cheap
minimum; the competition scores any detection on an authentic image as 0.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from preprocessing.errors import UsageError
from trainer.config import LOSSES

EPS = 1e-7


def _flat(y_true, y_pred):
    y_true = tf.reshape(tf.cast(y_true, tf.float32), [-1])
    y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
    return y_true, y_pred


def tversky_loss(y_true, y_pred, alpha: float = 0.1, beta: float = 0.9, smooth: float = EPS):
    """1 - TP / (TP + alpha FP + beta FN), soft counts over the batch (the seed's loss and defaults)."""
    t, p = _flat(y_true, y_pred)
    tp = tf.reduce_sum(t * p)
    fp = tf.reduce_sum((1.0 - t) * p)
    fn = tf.reduce_sum(t * (1.0 - p))
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - soft Dice over the batch; ``smooth`` keeps an all-authentic batch from dividing by ~0."""
    t, p = _flat(y_true, y_pred)
    inter = tf.reduce_sum(t * p)
    return 1.0 - (2.0 * inter + smooth) / (tf.reduce_sum(t) + tf.reduce_sum(p) + smooth)


def bce(y_true, y_pred):
    """Mean pixel binary cross-entropy (float32, clipped like Keras')."""
    t, p = _flat(y_true, y_pred)
    p = tf.clip_by_value(p, EPS, 1.0 - EPS)
    return -tf.reduce_mean(t * tf.math.log(p) + (1.0 - t) * tf.math.log(1.0 - p))


def bce_dice_loss(y_true, y_pred):
    """Pixel BCE (keeps authentic pixels at 0) plus batch Dice (fights the class imbalance)."""
    return bce(y_true, y_pred) + dice_loss(y_true, y_pred)


def focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float = 0.25):
    """Mean binary focal loss (Lin et al. 2017): down-weights the many easy background pixels."""
    t, p = _flat(y_true, y_pred)
    p = tf.clip_by_value(p, EPS, 1.0 - EPS)
    p_t = t * p + (1.0 - t) * (1.0 - p)
    alpha_t = t * alpha + (1.0 - t) * (1.0 - alpha)
    return tf.reduce_mean(-alpha_t * (1.0 - p_t) ** gamma * tf.math.log(p_t))


def get_loss(name: str):
    table = {"bce_dice": bce_dice_loss, "tversky": tversky_loss, "dice": dice_loss,
             "focal": focal_loss, "bce": bce}
    if name not in table:
        raise UsageError(f"unknown loss {name!r}; expected one of {LOSSES}")
    return table[name]


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates soft or hard TP/FP/FN over an epoch, so the value is dataset-level, not a batch mean."""

    hard = False

    def __init__(self, name: str, threshold: float = 0.5, **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.threshold = threshold
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t, p = _flat(y_true, y_pred)
        if self.hard:
            p = tf.cast(p > self.threshold, tf.float32)
        self.tp.assign_add(tf.reduce_sum(t * p))
        self.fp.assign_add(tf.reduce_sum((1.0 - t) * p))
        self.fn.assign_add(tf.reduce_sum(t * (1.0 - p)))

    def result(self):
        return 2.0 * self.tp / (2.0 * self.tp + self.fp + self.fn + EPS)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


class DiceCoef(_ConfusionMetric):
    """Soft Dice of the probabilities over all pixels seen this epoch."""

    def __init__(self, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)


class PixelF1(_ConfusionMetric):
    """F1 of pixels thresholded at ``threshold`` over all pixels seen this epoch."""

    hard = True

    def __init__(self, name: str = "pixel_f1", threshold: float = 0.5, **kwargs):
        super().__init__(name=name, threshold=threshold, **kwargs)
