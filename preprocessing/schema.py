"""The TFRecord schema: the only contract between the Beam job and the trainer.

Each record is a ``tf.train.Example`` with exactly the features in
``FEATURES``. Images are stored RGB uint8 as lossless PNG or raw bytes (never
JPEG: lossy storage destroys the forensic signal); the mask is the union of
instances, one channel, values 0/1, same size and format as the image.

Sizes (schema version 2): with the manifest's ``image_size`` S, an image is
stored at its own size when both its sides are at most S
(``preprocessing.images.fits``), else resized to S x S. Version 1 records (all
S x S) are a special case, so this code reads both.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: every record resized to S x S, which version 2 still allows
MANIFEST_FILE = "manifest.json"  # written by preprocessing.main next to the shards
ENCODINGS = ("png", "raw")
SPLITS = ("train", "val")
LABEL_AUTHENTIC, LABEL_FORGED = 0, 1

FEATURES = {
    "case_id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "source": tf.io.FixedLenFeature([], tf.string),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/channels": tf.io.FixedLenFeature([], tf.int64),
    "mask/encoded": tf.io.FixedLenFeature([], tf.string),
    "mask/num_instances": tf.io.FixedLenFeature([], tf.int64),
    "orig/height": tf.io.FixedLenFeature([], tf.int64),
    "orig/width": tf.io.FixedLenFeature([], tf.int64),
}


def shard_pattern(split: str, compression: str) -> str:
    """Glob of one split's shards inside an output directory."""
    return f"{split}-*-of-*.tfrecord" + (".gz" if compression == "gzip" else "")


def read_manifest(data_dir: str) -> dict:
    """The Beam job's manifest.json in ``data_dir``, with its schema version checked."""
    path = os.path.join(data_dir, MANIFEST_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no {MANIFEST_FILE}; run `python -m preprocessing.main` first")
    with tf.io.gfile.GFile(path) as f:
        manifest = json.load(f)
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: schema_version {version}, but this code reads {READABLE_VERSIONS}")
    return manifest


def _encode_plane(pixels: np.ndarray, encoding: str) -> bytes:
    if encoding == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    if encoding == "png":
        bgr = pixels[:, :, ::-1] if pixels.ndim == 3 else pixels
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def make_example(case_id: str, label: int, source: str, image: np.ndarray, mask: np.ndarray,
                 num_instances: int, orig_hw: tuple[int, int], encoding: str) -> bytes:
    """Serialized Example for an RGB uint8 image (H, W, 3) and its union mask (H, W) of 0/1."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    h, w = image.shape[:2]
    feats = {
        "case_id": _bytes(case_id.encode()),
        "label": _int(label),
        "source": _bytes(source.encode()),
        "image/encoded": _bytes(_encode_plane(image, encoding)),
        "image/format": _bytes(encoding.encode()),
        "image/height": _int(h),
        "image/width": _int(w),
        "image/channels": _int(3),
        "mask/encoded": _bytes(_encode_plane((mask > 0).astype(np.uint8), encoding)),
        "mask/num_instances": _int(num_instances),
        "orig/height": _int(orig_hw[0]),
        "orig/width": _int(orig_hw[1]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def decode_plane(data: tf.Tensor, fmt: tf.Tensor, h: tf.Tensor, w: tf.Tensor, channels: int) -> tf.Tensor:
    def raw():
        return tf.reshape(tf.io.decode_raw(data, tf.uint8), tf.stack([h, w, channels]))

    def png():
        return tf.ensure_shape(tf.io.decode_png(data, channels=channels), [None, None, channels])

    return tf.cond(tf.equal(fmt, "raw"), raw, png)


def parse_example(serialized: tf.Tensor) -> dict:
    """Parse one serialized record: ``image`` (H, W, 3) uint8, ``mask`` (H, W, 1) uint8 0/1, plus scalars."""
    f = tf.io.parse_single_example(serialized, FEATURES)
    h = tf.cast(f["image/height"], tf.int32)
    w = tf.cast(f["image/width"], tf.int32)
    fmt = f["image/format"]
    out = {k: f[k] for k in ("case_id", "label", "source", "mask/num_instances", "orig/height", "orig/width")}
    out["image"] = decode_plane(f["image/encoded"], fmt, h, w, 3)
    out["mask"] = decode_plane(f["mask/encoded"], fmt, h, w, 1)
    return out
