"""The dual-stream U-Net (and the seed notebook's tiny network, one flag away).

Both take uint8 RGB [B, S, S, 3] (input ``images``): ``ScaleRGB`` and
``NoiseResidual`` are the first layers, so the exported model needs no
preprocessing. Both return a dict: ``mask`` [B, S, S, 1] float32 sigmoid, and
``image`` [B, 1] float32 sigmoid when the image-level head is on. Outputs are
float32 whatever the mixed-precision policy.

Why a self-correlation block: a copy-move duplicate carries the image's own
noise, so the noise stream alone cannot see it; what gives it away is that the
same content appears twice. ``SelfCorrelation`` compares every deep-feature
position with every other one (outside its own neighbourhood) and hands the
strongest matches to the decoder, as BusterNet's similarity branch does.

The match field (``trainer.layers.MatchField``, on by default) gives the decoder the same
cue without learning: where neighbouring patches of the image agree on the displacement to
their best twin. It is resized into every skip and the bottleneck.

Optionally also at shallow levels (``correlation_levels``, e.g. (2,) = stride 4):
an exact copy gives near-identical early features at the source and the target,
a cue that needs no deep features. Off by default: in benchmarks/quality.py
(a few CPU minutes at 96 px) it did not beat the bottleneck-only model, and it
slows every step (the [h*w, h*w] matrix at stride 4 or 2 instead of 16 or 8).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from preprocessing import model_input
from preprocessing.constants import EVIDENCE_CHANNELS
from preprocessing.errors import UsageError
from trainer.augment import random_flips
from trainer.config import ARCHS, ModelConfig
from trainer.distribute import is_multi_worker
from trainer.layers import MatchField, NoiseResidual, ScaleRGB

EVIDENCE_MIN_FILTERS = 4  # the evidence stream's narrowest layer


@keras.saving.register_keras_serializable(package="copymove")
class SelfCorrelation(keras.layers.Layer):
    """Top-k cosine similarities of each position with all others, excluding its own neighbourhood.

    [B, h, w, C] -> [B, h, w, top_k] sorted high to low. Positions within
    Chebyshev distance ``exclude_radius`` (the position itself included) are
    excluded: neighbouring features are trivially similar. Runs in float32.
    ``center``: subtract each feature vector's mean over channels first (Pearson
    correlation), so that all-positive ReLU features do not all look alike.
    """

    def __init__(self, top_k: int = 8, exclude_radius: int = 1, center: bool = False, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.top_k = int(top_k)
        self.exclude_radius = int(exclude_radius)
        self.center = bool(center)

    def exclusion_mask(self, h: int, w: int) -> np.ndarray:
        """(h*w, h*w) bool, True where a pair is too close to count as a match."""
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        yy, xx = yy.reshape(-1), xx.reshape(-1)
        dist = np.maximum(np.abs(yy[:, None] - yy[None, :]), np.abs(xx[:, None] - xx[None, :]))
        return dist <= self.exclude_radius

    def call(self, features):
        _, h, w, c = features.shape
        f = tf.reshape(tf.cast(features, tf.float32), [-1, h * w, c])
        if self.center:
            f = f - tf.reduce_mean(f, axis=-1, keepdims=True)
        f = tf.math.l2_normalize(f, axis=-1)
        corr = tf.matmul(f, f, transpose_b=True)  # [B, N, N] cosine similarity
        excluded = tf.constant(self.exclusion_mask(h, w))
        corr = tf.where(excluded[None], tf.constant(-1.0, tf.float32), corr)
        k = min(self.top_k, h * w)
        best = tf.math.top_k(corr, k=k, sorted=True).values
        return tf.reshape(best, [-1, h, w, k])

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        k = self.top_k if h is None or w is None else min(self.top_k, h * w)
        return (input_shape[0], h, w, k)

    def get_config(self):
        return {**super().get_config(), "top_k": self.top_k, "exclude_radius": self.exclude_radius,
                "center": self.center}


def model_images(x, mask=None):
    """The input pipeline's ``{"images", "sizes"[, "evidence"]}`` (planes as stored, padded to S x S)
    -> the network's input: uint8 images [B, S, S, 3], or ``{"images", "evidence"}`` when the batch
    carries evidence, enlarged by ``preprocessing.model_input.upscale`` (the evidence with its image,
    by the same bilinear map; the uint8 ``mask`` with them by nearest neighbour, if given). Model
    inputs without ``sizes`` pass through."""
    if not isinstance(x, dict) or "sizes" not in x:
        return x if mask is None else (x, mask)
    up = model_input.upscale(_stacked(x), x["sizes"], mask)
    planes, mask = up if mask is not None else (up, None)
    out = _unstacked(planes, x)
    return out if mask is None else (out, mask)


def _stacked(x):
    """A model input as one tensor of planes (images, then evidence), so that a geometric step
    (enlarging, flipping) moves the evidence exactly as its image."""
    if not isinstance(x, dict):
        return x
    return x["images"] if "evidence" not in x else tf.concat([x["images"], x["evidence"]], axis=-1)


def _unstacked(planes, like):
    """``_stacked`` undone, in the form of ``like``."""
    if not isinstance(like, dict) or "evidence" not in like:
        return planes
    return {"images": planes[..., :3], "evidence": planes[..., 3:]}


def flip(x, mask):
    """``random_flips`` of a model input (images, or images and evidence together) with its mask."""
    planes, mask = random_flips(_stacked(x), mask)
    return _unstacked(planes, x), mask


def device_batch(data):
    """(x, y[, sw]) as the network trains on it, computed on the device: images enlarged to S x S
    (``model_images``) and ``y["mask"]`` with them, as float32. The input pipeline ships stored
    sizes and uint8 masks: fewer bytes to move, and no resize on the busy host."""
    x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
    if isinstance(y, dict) and "mask" in y:
        x, mask = model_images(x, y["mask"])
        y = dict(y, mask=tf.cast(mask, tf.float32))
    else:
        x = model_images(x)
    return x, y, sw


class ForgeryModel(keras.Model):
    """Functional model whose train/test/predict steps take the input pipeline's batches: on the
    device they enlarge images stored below the model size (``device_batch``) and, in training,
    flip image and mask together. Calling the model directly takes uint8 [B, S, S, 3].

    Targets must have exactly the model's output keys (``select_targets``); masks may be uint8.
    """

    def train_step(self, data):
        x, y, sw = device_batch(data)
        x, mask = flip(x, y["mask"])
        return self._reducible(super().train_step((x, dict(y, mask=mask), sw)))

    def test_step(self, data):
        return self._reducible(super().test_step(device_batch(data)))

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return super().predict_step(model_images(x))

    def _reducible(self, logs):
        """Under several workers Keras 3 reduces each log with ``strategy.reduce(MEAN, v, axis=0)``,
        which fails on scalars (keras-team/keras#20585): give them a length-1 axis there."""
        if not is_multi_worker(self.distribute_strategy):
            return logs
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build the loss and metrics from one replica's batch.

        Keras 3 (TF backend) first averages a whole distributed batch across replicas
        just to learn its shapes; under MultiWorkerMirroredStrategy that reduce fails
        ("Attempt to convert a value (PerReplica..."), see keras-team/keras#20585.
        One replica's batch has the same shapes.
        """
        if iterator is not None and data_batch is None and self.distribute_strategy is not None:
            for _, _, it in iterator:
                batch = next(it)
                break
            strategy = self.distribute_strategy
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
            iterator = None
        if data_batch is not None:
            data_batch = device_batch(data_batch)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def select_targets(dataset, output_names):
    """Drop the targets a model has no output for (the data always has ``image`` labels; the head
    is optional). Keras matches a one-output model's single target by position, not by name."""
    names = tuple(output_names)
    return dataset.map(lambda x, y, *rest: (x, {k: y[k] for k in names}, *rest))


def conv_block(x, filters: int, name: str, bn_momentum: float):
    """Two conv-BN-ReLU layers: the unit every encoder and decoder level is made of."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def fuse(streams: list, filters: int, name: str, bn_momentum: float):
    """The streams' features at one scale (RGB, noise, evidence) -> one tensor (1x1 conv over the
    concatenation)."""
    x = layers.Concatenate(name=f"{name}_concat")(streams)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def model_inputs(cfg: ModelConfig):
    """The network's inputs: uint8 ``images`` [B, S, S, 3] and, with ``cfg.evidence``, the matcher's
    uint8 ``evidence`` map [B, S, S, E] (a dict of both then)."""
    images = keras.Input((cfg.image_size, cfg.image_size, 3), dtype="uint8", name="images")
    if not cfg.evidence:
        return images, images, None
    evidence = keras.Input((cfg.image_size, cfg.image_size, len(EVIDENCE_CHANNELS)), dtype="uint8",
                           name="evidence")
    return {"images": images, "evidence": evidence}, images, evidence


def build_unet(cfg: ModelConfig) -> ForgeryModel:
    """Dual-stream U-Net: RGB and noise-residual encoders (and, with ``cfg.evidence``, a third for the
    matcher's evidence map) fused at every scale, a skip-connected decoder."""
    if cfg.image_size % (2 ** cfg.depth):
        raise UsageError(f"image_size {cfg.image_size} must be divisible by 2**depth = {2 ** cfg.depth}")
    if any(lv < 0 for lv in cfg.correlation_levels):
        raise UsageError(f"correlation_levels {cfg.correlation_levels} must be >= 0")
    inputs, images, evidence = model_inputs(cfg)
    rgb = ScaleRGB(name="scale_rgb")(images)
    noise = NoiseResidual(name="noise_residual")(images)
    ev = ScaleRGB(name="scale_evidence")(evidence) if evidence is not None else None
    field = MatchField(work_size=cfg.match_size, name="match_field")(images) if cfg.match_field else None

    def with_field(x, name):
        """``x`` with the match field resized to its resolution appended (when the field is on)."""
        if field is None:
            return x
        side = x.shape[1]
        return layers.Concatenate(name=f"{name}_field")(
            [x, layers.Resizing(side, side, interpolation="bilinear", name=f"{name}_field_resize")(field)])

    def evidence_block(x, filters, name):
        # The evidence map is simple (where matches and decorations are): half the filters suffice.
        return conv_block(x, max(EVIDENCE_MIN_FILTERS, filters // 2), name, cfg.bn_momentum)

    skips = []
    for level in range(cfg.depth):
        filters = cfg.width * 2 ** level
        rgb = conv_block(rgb, filters, f"rgb{level}", cfg.bn_momentum)
        noise = conv_block(noise, filters, f"noise{level}", cfg.bn_momentum)
        streams = [rgb, noise]
        if ev is not None:
            ev = evidence_block(ev, filters, f"evidence{level}")
            streams.append(ev)
        skip = fuse(streams, filters, f"fuse{level}", cfg.bn_momentum)
        if level in cfg.correlation_levels:
            corr = SelfCorrelation(cfg.top_k, cfg.exclude_radius, center=True,
                                   name=f"self_correlation{level}")(skip)
            skip = layers.Concatenate(name=f"corr{level}_concat")([skip, corr])
        skips.append(with_field(skip, f"skip{level}"))
        rgb = layers.MaxPooling2D(name=f"rgb{level}_pool")(rgb)
        noise = layers.MaxPooling2D(name=f"noise{level}_pool")(noise)
        if ev is not None:
            ev = layers.MaxPooling2D(name=f"evidence{level}_pool")(ev)

    filters = cfg.width * 2 ** cfg.depth
    rgb = conv_block(rgb, filters, "rgb_bottom", cfg.bn_momentum)
    noise = conv_block(noise, filters, "noise_bottom", cfg.bn_momentum)
    streams = [rgb, noise] + ([evidence_block(ev, filters, "evidence_bottom")] if ev is not None else [])
    x = with_field(fuse(streams, filters, "fuse_bottom", cfg.bn_momentum), "bottom")
    if cfg.self_correlation:
        corr = SelfCorrelation(cfg.top_k, cfg.exclude_radius, name="self_correlation")(x)
        x = layers.Concatenate(name="bottom_corr_concat")([x, corr])
        x = conv_block(x, filters, "bottom_corr", cfg.bn_momentum)

    outputs = {}
    if cfg.image_head:
        pooled = layers.Concatenate(name="head_pool")(
            [layers.GlobalAveragePooling2D(name="head_gap")(x), layers.GlobalMaxPooling2D(name="head_gmp")(x)])
        outputs["image"] = layers.Dense(1, activation="sigmoid", dtype="float32", name="image")(pooled)

    for level in reversed(range(cfg.depth)):
        x = layers.UpSampling2D(name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, cfg.width * 2 ** level, f"dec{level}", cfg.bn_momentum)
    logits = layers.Conv2D(1, 1, name="mask_logits")(x)
    outputs["mask"] = layers.Activation("sigmoid", dtype="float32", name="mask")(logits)
    return ForgeryModel(inputs=inputs, outputs=outputs, name="dual_stream_unet")


def build_seed(cfg: ModelConfig) -> ForgeryModel:
    """The seed notebook's build_dual_stream_unet, layer for layer, wrapped to take uint8 images.

    Two streams of Conv(32)-MaxPool-Conv(64), concatenated, upsampled, Conv(128),
    1x1 Conv sigmoid. The seed fed [0, 1] RGB and the noise residual as two
    inputs; here the input layers compute them. Width, depth and the optional
    blocks do not apply.
    """
    images = keras.Input((cfg.image_size, cfg.image_size, 3), dtype="uint8", name="images")
    rgb = ScaleRGB(name="scale_rgb")(images)
    noise = NoiseResidual(name="noise_residual")(images)

    def stream(name):
        return keras.Sequential([
            layers.Conv2D(32, 3, activation="relu", padding="same"), layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu", padding="same")], name=name)

    merged = layers.Concatenate()([stream("rgb_stream")(rgb), stream("feature_stream")(noise)])
    x = layers.UpSampling2D(size=(2, 2))(merged)
    x = layers.Conv2D(128, 3, activation="relu", padding="same")(x)
    mask = layers.Conv2D(1, 1, activation="sigmoid", padding="same", dtype="float32", name="mask")(x)
    return ForgeryModel(inputs=images, outputs={"mask": mask}, name="seed_dual_stream")


def build_model(cfg: ModelConfig) -> ForgeryModel:
    """The network ``cfg`` describes, built under the current dtype policy."""
    if cfg.arch == "unet":
        return build_unet(cfg)
    if cfg.arch == "seed":
        return build_seed(cfg)  # never with evidence (ModelConfig turns it off for this arch)
    raise UsageError(f"unknown arch {cfg.arch!r}; expected one of {ARCHS}")


def has_image_head(cfg: ModelConfig) -> bool:
    return cfg.arch == "unet" and cfg.image_head
