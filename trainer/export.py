"""SavedModel export: a signature that takes uint8 images and needs no project code to load.

``MODEL_DIR/export/`` holds the SavedModel and ``metadata.json`` (image size, post-processing
defaults, model flags, and under ``inputs`` / ``outputs`` the signature's tensors with the
functions that compute each input: ``serving.saved_model.signature_contract``). ``serving_default``:
- ``images`` uint8 [None, S, S, 3] -> ``probabilities`` float32 [None, S, S, 1], plus
  ``image_score`` float32 [None] when the model has an image-level head;
- a model trained with the matcher's evidence stream takes ``(images, evidence)``: ``evidence``
  uint8 [None, S, S, E] (the planes EVIDENCE_CHANNELS) is
  ``preprocessing.matching.evidence.evidence_of(rgb)`` on the RGB image at its own size, brought
  to S x S by ``serving.decode.resize_to_model`` exactly as the image
  (``serving.saved_model`` says it in full).
Written with Keras 3's ExportArchive: ``tf.saved_model.save`` on a Keras 3
model loses input names and dtypes.
"""
from __future__ import annotations

import os
import subprocess

import keras
import tensorflow as tf

from preprocessing import fileio, outputs
from preprocessing.constants import EVIDENCE_CHANNELS
from preprocessing.version import __version__
from serving.postprocess import PostprocessConfig
from serving.saved_model import signature_contract, write_metadata


def git_commit() -> str:
    """The repo's commit (``unknown`` outside a checkout), recorded for provenance."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_model(model: keras.Model, export_dir: str, image_size: int, metadata: dict) -> str:
    """Write the SavedModel and metadata.json; returns ``export_dir``.

    ``model`` takes uint8 images (and, if it has that input, the uint8 ``evidence`` map) and returns
    either the mask probabilities or a dict with ``mask`` and optionally ``image`` (the image-level
    forged score).
    Everything is written to a temporary folder beside ``export_dir`` and renamed when complete,
    so a kill never leaves half an export; an existing ``export_dir`` is never replaced.
    """
    if fileio.exists(export_dir):
        raise FileExistsError(f"{export_dir} exists; an export is never replaced (use a new model directory)")
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")

    def outputs_of(out):
        if isinstance(out, dict):
            result = {"probabilities": tf.cast(out["mask"], tf.float32)}
            if "image" in out:
                result["image_score"] = tf.reshape(tf.cast(out["image"], tf.float32), [-1])
            return result
        return {"probabilities": tf.cast(out, tf.float32)}

    takes_evidence = isinstance(model.input, dict) and "evidence" in model.input
    if takes_evidence:  # the matcher's map as a second input
        channels = model.input["evidence"].shape[-1]
        evidence_spec = tf.TensorSpec([None, image_size, image_size, channels], tf.uint8, name="evidence")

        def serve_with_evidence(images, evidence):
            return outputs_of(model({"images": images, "evidence": evidence}, training=False))

        archive.add_endpoint("serving_default", serve_with_evidence, input_signature=[spec, evidence_spec])
    else:
        archive.add_endpoint("serving_default", lambda images: outputs_of(model(images, training=False)),
                             input_signature=[spec])
    staging = outputs.temp_name(export_dir.rstrip("/"))
    archive.write_out(staging, verbose=False)
    meta = {
        "image_size": int(image_size),
        "postprocess": PostprocessConfig().to_dict(),
        "git_commit": git_commit(),
        **signature_contract(image_size, EVIDENCE_CHANNELS if takes_evidence else None,
                             isinstance(model.output, dict) and "image" in model.output),
        "copymove_version": __version__,
        **metadata,
    }
    write_metadata(staging, meta)
    fileio.rename_dir(staging, export_dir)
    return export_dir

