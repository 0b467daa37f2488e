"""The TFRecord schema: the only contract between the Beam job and the trainer.

Each record is a ``tf.train.Example`` with exactly the features in
``FEATURES``. Images are stored RGB uint8 as lossless PNG or raw bytes (never
JPEG: lossy storage destroys the forensic signal); the mask is the union of
instances, one channel, values 0/1, same size and format as the image.

Sizes: with the manifest's ``image_size`` S, an image is stored at its own size
when both its sides are at most S (``preprocessing.images.fits``), else resized
to S x S. Schema version 4 adds the dense field's planes to the evidence map;
older records are refused with the command that rewrites them.
"""
from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf

from preprocessing.constants import AUTHENTIC, ENCODINGS, EVIDENCE_CHANNELS, FORGED

SCHEMA_VERSION = 4
# Versions 1-3 are refused, naming the fix (``records.read_manifest``): their evidence maps have
# fewer planes (3: no dense field; 1-2: none), which a network trained on version 4 cannot read.
READABLE_VERSIONS = (4,)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

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
    # The matcher's evidence map, same size and format as the image, planes stacked (see
    # ``planar``); "" when the job ran without it.
    "evidence/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def shard_pattern(split: str, compression: str) -> str:
    """Glob of one split's shards inside an output directory."""
    return f"{split}-*-of-*.tfrecord" + (".gz" if compression == "gzip" else "")


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
                 num_instances: int, orig_hw: tuple[int, int], encoding: str,
                 evidence: np.ndarray | None = None) -> bytes:
    """Serialized Example for an RGB uint8 image (H, W, 3), its union mask (H, W) of 0/1 and,
    optionally, its evidence map (H, W, len(EVIDENCE_CHANNELS)) uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    if evidence is not None and (evidence.shape != image.shape[:2] + (len(EVIDENCE_CHANNELS),)
                                 or evidence.dtype != np.uint8):
        raise ValueError(f"evidence must be {image.shape[:2] + (len(EVIDENCE_CHANNELS),)} uint8, got "
                         f"{evidence.shape} {evidence.dtype}")
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
    if evidence is not None:
        feats["evidence/encoded"] = _bytes(_encode_plane(planar(evidence), encoding))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def planar(evidence: np.ndarray) -> np.ndarray:
    """(H, W, E) -> (E * H, W): the evidence planes one under the other, as stored (a PNG holds
    at most 4 channels; one grey image of stacked planes holds any number, raw or PNG alike)."""
    h, w, e = evidence.shape
    return np.ascontiguousarray(evidence.transpose(2, 0, 1)).reshape(e * h, w)


def decode_plane(data: tf.Tensor, fmt: tf.Tensor, h: tf.Tensor, w: tf.Tensor, channels: int) -> tf.Tensor:
    def raw():
        return tf.reshape(tf.io.decode_raw(data, tf.uint8), tf.stack([h, w, channels]))

    def png():
        return tf.ensure_shape(tf.io.decode_png(data, channels=channels), [None, None, channels])

    return tf.cond(tf.equal(fmt, "raw"), raw, png)


def _assert_all(checks: list[tuple[tf.Tensor, str]], filename: tf.Tensor, case_id: tf.Tensor, *values) -> tf.Operation:
    """One assertion for several conditions; the message lists the ones that failed, the file and
    the case id. (One op instead of one per check: this runs once per record on a busy host.)"""
    ok = tf.stack([c for c, _ in checks])
    failed = tf.strings.reduce_join(tf.boolean_mask([r for _, r in checks], tf.logical_not(ok)), separator="; ")
    return tf.debugging.Assert(tf.reduce_all(ok), ["corrupt record:", failed, "file:", filename, "case_id:", case_id,
                                                   *values], summarize=8)


def _bytes_ok(encoded: tf.Tensor, fmt: tf.Tensor, num_bytes: tf.Tensor) -> tf.Tensor:
    """Raw planes hold exactly H*W*C bytes; PNG planes start with the PNG signature."""
    raw_ok = tf.equal(tf.cast(tf.strings.length(encoded), tf.int64), num_bytes)
    png_ok = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    return tf.where(tf.equal(fmt, "raw"), raw_ok, png_ok)


_HIGH_BITS = -0x0101010101010102  # 0xFEFEFEFEFEFEFEFE: every bit of every byte except the lowest


def _is_binary(mask: tf.Tensor) -> tf.Tensor:
    """All uint8 values are 0 or 1, tested eight bytes at a time (an element-wise uint8 max over a
    256 px mask costs more than the rest of the record's parsing)."""
    flat = tf.reshape(mask, [-1])
    flat = tf.pad(flat, [[0, tf.math.floormod(-tf.size(flat), 8)]])
    words = tf.bitcast(tf.reshape(flat, [-1, 8]), tf.int64)
    return tf.reduce_all(tf.equal(tf.bitwise.bitwise_and(words, tf.constant(_HIGH_BITS, tf.int64)), 0))


def parse_record(filename: tf.Tensor, serialized: tf.Tensor, max_size: int = 0, encoding: str | None = None,
                 evidence: bool = False) -> dict:
    """The one reader of a record: ``image`` (h, w, 3) uint8, ``mask`` (h, w, 1) uint8 0/1, their
    ``size`` [2], ``file`` and the scalar features; with ``evidence``, also ``evidence`` (h, w, E)
    uint8 (zeros for a record without one: its "present" channel says so). Checks turn corruption
    into an error naming the check, the file and the case id instead of a bare decoder message or a
    silent skip; with ``max_size`` (the manifest's image_size S) a record larger than S x S is
    refused too."""
    f = tf.io.parse_single_example(serialized, FEATURES)
    case_id, fmt = f["case_id"], f["image/format"]
    h, w = f["image/height"], f["image/width"]
    allowed = [encoding] if encoding else list(ENCODINGS)
    checks = [
        (tf.reduce_any(tf.equal(fmt, allowed)), f"image/format is not {' or '.join(allowed)}"),
        (tf.reduce_any(tf.equal(f["label"], [AUTHENTIC, FORGED])), "label is not 0/1"),
        (_bytes_ok(f["image/encoded"], fmt, h * w * 3), "image bytes do not match image/format and size"),
        (_bytes_ok(f["mask/encoded"], fmt, h * w), "mask bytes do not match image/format and size"),
    ]
    if max_size:
        checks.append((tf.reduce_all(tf.logical_and(tf.stack([h, w]) >= 1, tf.stack([h, w]) <= max_size)),
                       f"size does not fit the manifest image_size {max_size}x{max_size}"))
    with tf.control_dependencies([_assert_all(checks, filename, case_id, "format", fmt, "label", f["label"],
                                              "height", h, "width", w)]):
        h32, w32 = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
        image = decode_plane(f["image/encoded"], fmt, h32, w32, 3)
        mask = decode_plane(f["mask/encoded"], fmt, h32, w32, 1)
    decoded_checks = [(_is_binary(mask), "mask values are not 0/1")]
    if encoding != "raw":  # a PNG's own header may disagree with image/height,width
        decoded_hw = tf.stack([tf.shape(image)[:2], tf.shape(mask)[:2]])
        decoded_checks.append((tf.reduce_all(tf.equal(decoded_hw, tf.stack([h32, w32]))),
                               "decoded size differs from image/height,width"))
    with tf.control_dependencies([_assert_all(decoded_checks, filename, case_id, tf.shape(mask))]):
        image, mask = tf.identity(image), tf.identity(mask)
    out = {k: f[k] for k in ("case_id", "label", "source", "mask/num_instances", "orig/height", "orig/width")}
    out.update(image=image, mask=mask, size=tf.stack([h32, w32]), file=filename)
    if evidence:
        out["evidence"] = _evidence(f["evidence/encoded"], fmt, h, w, filename, case_id)
    return out


def _evidence(encoded: tf.Tensor, fmt: tf.Tensor, h: tf.Tensor, w: tf.Tensor, filename, case_id) -> tf.Tensor:
    """The record's evidence map (h, w, E) uint8 (stored ``planar``), zeros when it has none."""
    channels = len(EVIDENCE_CHANNELS)
    present = tf.strings.length(encoded) > 0
    ok = tf.logical_or(tf.logical_not(present), _bytes_ok(encoded, fmt, h * w * channels))
    check = _assert_all([(ok, "evidence bytes do not match image/format and size")], filename, case_id)
    h32, w32 = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
    with tf.control_dependencies([check]):
        def stored():
            stacked = decode_plane(encoded, fmt, channels * h32, w32, 1)
            return tf.transpose(tf.reshape(stacked, tf.stack([channels, h32, w32])), [1, 2, 0])

        return tf.cond(present, stored, lambda: tf.zeros(tf.stack([h32, w32, channels]), tf.uint8))
