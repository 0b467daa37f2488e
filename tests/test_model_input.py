"""Images stored below the model size, enlarged by preprocessing.model_input: against TF's and
OpenCV's bilinear resize, masks aligned with their images, and the same pixels in training (the
input pipeline + the device step) as in serving (decoding the original file)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from preprocessing import cases as cases_lib
from preprocessing.images import fits, read_rgb8
from preprocessing.model_input import pad_to, upscale, upscale_one
from serving.decode import decode_file_eager
from trainer import data
from trainer.model import device_batch

S = 64
SIZES = [(40, 50), (64, 30), (17, 64), (64, 64), (1, 5), (63, 63)]


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    padded = tf.stack([pad_to(tf.constant(im), S) for im in images])
    return images, padded, tf.constant(SIZES, tf.int32)


def test_upscale_is_tf_bilinear_rounded_and_within_one_level_of_opencv(batch):
    images, padded, sizes = batch
    out = upscale(padded, sizes).numpy()
    assert out.shape == (len(SIZES), S, S, 3) and out.dtype == np.uint8
    for im, got in zip(images, out):
        reference = np.round(tf.image.resize(im, [S, S], "bilinear").numpy())
        np.testing.assert_array_equal(got, reference)
        opencv = cv2.resize(im, (S, S), interpolation=cv2.INTER_LINEAR)  # fixed-point rounding
        assert np.abs(got.astype(int) - opencv).max() <= 1
    np.testing.assert_array_equal(out[3], images[3])  # already S x S: unchanged


def test_upscale_of_one_image_equals_the_batch(batch):
    images, padded, sizes = batch
    out = upscale(padded, sizes).numpy()
    for im, got in zip(images, out):
        np.testing.assert_array_equal(upscale_one(tf.constant(im), S).numpy(), got)


def test_masks_follow_their_images(batch):
    _, padded, sizes = batch
    gray = tf.reduce_mean(tf.cast(padded, tf.float32), axis=-1, keepdims=True)
    masks = tf.cast(gray > 127, tf.uint8)  # drawn from the images' own pixels
    images, up_masks = upscale(padded, sizes, masks)
    for k, (h, w) in enumerate(SIZES):
        reference = tf.image.resize(masks[k, :h, :w], [S, S], "nearest").numpy()
        np.testing.assert_array_equal(up_masks[k].numpy(), reference)
    # Nearest on the mask and bilinear on the image agree away from the mask's edges.
    up_gray = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1, keepdims=True).numpy()
    far = np.abs(up_gray - 127) > 60
    np.testing.assert_array_equal((up_gray > 127)[far], up_masks.numpy()[far].astype(bool))
    only_full = upscale(padded[3:4], sizes[3:4], masks[3:4])
    np.testing.assert_array_equal(only_full[1].numpy(), masks[3:4].numpy())


def test_training_and_serving_see_the_same_pixels(small_records_dir, small_synth_dir):
    """Record -> input pipeline -> device step == original file -> serving's decode + resize."""
    found, _ = cases_lib.discover_training_cases(small_synth_dir)
    paths = {(c.case_id, int(c.label)): c.image_path for c in found}
    kinds = set()
    for split in ("train", "val"):
        ds = data.make_dataset(small_records_dir, split, 4, training=False, with_ids=True)
        for inputs, targets, ids in ds:
            x, y, _ = device_batch((inputs, targets))
            assert x.shape[1:] == (S, S, 3) and y["mask"].dtype == tf.float32
            labels = targets["image"].numpy()[:, 0].astype(int)
            for k, (case_id, label) in enumerate(zip(ids["case_id"].numpy(), labels)):
                path = paths[(case_id.decode(), label)]
                h, w = read_rgb8(path).shape[:2]
                kinds.add(fits(h, w, S))
                np.testing.assert_array_equal(x[k].numpy(), decode_file_eager(path, S), err_msg=path)
                if label == 0:
                    assert not y["mask"][k].numpy().any()
    assert kinds == {True, False}  # both paths: stored at own size, and resized by the Beam job


def test_keras_predict_and_evaluate_take_pipeline_batches(small_records_dir):
    """model.predict / model.evaluate on make_dataset's batches enlarge them as the train step does."""
    from trainer.config import ModelConfig
    from trainer.model import build_model, model_images, select_targets

    model = build_model(ModelConfig(image_size=S, width=4, depth=2, match_field=False, evidence=False))
    model.compile(loss={"mask": "binary_crossentropy", "image": "binary_crossentropy"})
    ds = data.make_dataset(small_records_dir, "val", 4, training=False)
    predicted = model.predict(ds, verbose=0)
    expected = [model(model_images(x), training=False) for x, _ in ds]
    np.testing.assert_allclose(predicted["mask"], np.concatenate([e["mask"] for e in expected]), atol=1e-5)
    np.testing.assert_allclose(predicted["image"], np.concatenate([e["image"] for e in expected]), atol=1e-5)
    logs = model.evaluate(select_targets(ds, model.output_names), verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])
