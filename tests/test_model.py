"""The networks: self-correlation against numpy, output contract, the seed's exact network."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.config import ModelConfig
from trainer.model import SelfCorrelation, build_model


def np_self_correlation(f: np.ndarray, k: int, radius: int) -> np.ndarray:
    """Brute force: cosine similarity with every position farther than ``radius``, top k."""
    b, h, w, _ = f.shape
    out = np.zeros((b, h, w, k), np.float32)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                a = f[n, y, x] / np.linalg.norm(f[n, y, x])
                sims = [float(a @ (f[n, v, u] / np.linalg.norm(f[n, v, u])))
                        for v in range(h) for u in range(w) if max(abs(v - y), abs(u - x)) > radius]
                sims += [-1.0] * max(0, k - len(sims))
                out[n, y, x] = sorted(sims, reverse=True)[:k]
    return out


def test_self_correlation_matches_numpy():
    f = np.random.default_rng(1).normal(size=(2, 4, 5, 6)).astype(np.float32)
    got = SelfCorrelation(top_k=3, exclude_radius=1)(f)
    np.testing.assert_allclose(np.asarray(got), np_self_correlation(f, 3, 1), atol=1e-5)


def test_self_correlation_finds_a_duplicate_and_ignores_itself():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(1, 6, 6, 8)).astype(np.float32)
    f[0, 4, 5] = f[0, 0, 0] * 3.0  # same direction far away: a "copy"
    corr = np.asarray(SelfCorrelation(top_k=2, exclude_radius=1)(f))
    assert corr[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)
    assert corr[0, 4, 5, 0] == pytest.approx(1.0, abs=1e-5)
    # Everyone else's best match is a random direction, never itself (which would be 1).
    others = np.delete(corr[0, :, :, 0].reshape(-1), [0, 4 * 6 + 5])
    assert others.max() < 0.99
    # Neighbours within the radius do not count: a copy right next to the original is not a match.
    g = rng.normal(size=(1, 6, 6, 8)).astype(np.float32)
    g[0, 1, 1] = g[0, 0, 0]
    near = np.asarray(SelfCorrelation(top_k=1, exclude_radius=1)(g))
    assert near[0, 0, 0, 0] < 0.99 and near[0, 1, 1, 0] < 0.99
    wide = np.asarray(SelfCorrelation(top_k=1, exclude_radius=0)(g))
    assert wide[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("self_correlation,image_head,match_field", [(True, True, False), (False, False, False),
                                                                   (True, True, True)])
def test_unet_contract_under_mixed_bfloat16(self_correlation, image_head, match_field):
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(image_size=32, width=4, depth=2, self_correlation=self_correlation,
                                        image_head=image_head, match_field=match_field, evidence=False))
    finally:
        keras.config.set_dtype_policy(saved)
    assert model.inputs[0].dtype == "uint8" and model.inputs[0].name == "images"
    names = [layer.name for layer in model.layers]
    assert ("self_correlation" in names) == self_correlation
    assert ("match_field" in names) == match_field and ("skip0_field" in names) == match_field
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = model(images, training=False)
    assert set(out) == ({"mask", "image"} if image_head else {"mask"})
    assert out["mask"].shape == (2, 32, 32, 1) and out["mask"].dtype == "float32"
    m = np.asarray(out["mask"])
    assert np.all((m >= 0) & (m <= 1))
    if image_head:
        assert out["image"].shape == (2, 1) and out["image"].dtype == "float32"
    # The convolutions really run in bfloat16.
    assert model.get_layer("rgb0_conv1").compute_dtype == "bfloat16"


def test_depth_must_divide_size():
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelConfig(image_size=36, width=4, depth=3))


def test_seed_arch_is_the_notebooks_network():
    cfg = ModelConfig(image_size=32, arch="seed")
    assert not cfg.evidence  # the notebook's network has no evidence stream, whatever the unet's default
    model = build_model(cfg)
    # build_dual_stream_unet: per stream conv3x3(3->32) + conv3x3(32->64); conv3x3(128->128); conv1x1(128->1).
    per_stream = (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64)
    assert model.count_params() == 2 * per_stream + (128 * 9 * 128 + 128) + (128 + 1)
    for stream in ("rgb_stream", "feature_stream"):
        kinds = [(type(layer).__name__, getattr(layer, "filters", None)) for layer in model.get_layer(stream).layers]
        assert kinds == [("Conv2D", 32), ("MaxPooling2D", None), ("Conv2D", 64)]
    top = [(type(layer).__name__, getattr(layer, "filters", None)) for layer in model.layers[-4:]]
    assert top == [("Concatenate", None), ("UpSampling2D", None), ("Conv2D", 128), ("Conv2D", 1)]
    out = model(np.zeros((1, 32, 32, 3), np.uint8))
    assert set(out) == {"mask"} and out["mask"].shape == (1, 32, 32, 1) and out["mask"].dtype == "float32"


def test_centred_self_correlation_is_pearson_and_matches_numpy():
    f = np.random.default_rng(4).normal(loc=2.0, size=(2, 4, 5, 6)).astype(np.float32)
    got = SelfCorrelation(top_k=3, exclude_radius=1, center=True)(f)
    centred = f - f.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got), np_self_correlation(centred, 3, 1), atol=1e-5)
    # All-positive features look alike under plain cosine similarity, not once centred.
    plain = np.asarray(SelfCorrelation(top_k=1, exclude_radius=1)(np.abs(f)))
    assert plain.min() > 0.5 and np.asarray(got)[..., 0].min() < 0.5


def test_shallow_correlation_levels_feed_the_decoder():
    model = build_model(ModelConfig(image_size=32, width=4, depth=3, correlation_levels=(1, 2)))
    names = [layer.name for layer in model.layers]
    assert {"self_correlation1", "self_correlation2", "self_correlation"} <= set(names)
    assert "self_correlation0" not in names
    # Level 1 is stride 2: 16x16 positions, top_k channels, concatenated to that level's skip.
    assert model.get_layer("self_correlation1").output.shape == (None, 16, 16, 8)
    assert model.get_layer("corr1_concat").output.shape == (None, 16, 16, 8 + 8)
    none = build_model(ModelConfig(image_size=32, width=4, depth=3, correlation_levels=()))
    assert not any(n.startswith("self_correlation") and n != "self_correlation" for n in
                   (layer.name for layer in none.layers))
    with pytest.raises(ValueError, match="correlation_levels"):
        build_model(ModelConfig(image_size=32, width=4, depth=3, correlation_levels=(-1,)))


def test_batchnorm_statistics_catch_up_within_a_short_run():
    """After 150 training-mode passes (weights fixed: only BatchNorm's moving statistics move), the
    inference-mode output must match the training-mode one. With Keras' default momentum 0.99 the
    moving variance still carries ~22% of its initial 1.0 while true variances are ~0.01, and a
    short CPU run then predicts nothing in inference mode although its training Dice is high."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)

    def gap(momentum: float) -> float:
        keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(image_size=32, width=4, depth=2, image_head=False, match_field=False,
                                        bn_momentum=momentum, evidence=False))
        step = tf.function(lambda: model(x, training=True))  # traced once: 150 eager passes take ~35 s
        for _ in range(150):
            step()
        return float(np.abs(model(x, training=True)["mask"] - model(x, training=False)["mask"]).max())

    assert ModelConfig().bn_momentum == 0.9
    fast, slow = gap(0.9), gap(0.99)
    assert fast < 1e-3, fast  # measured ~1e-5
    assert slow > 0.1, slow  # measured ~0.35
