"""Loading an exported model: the SavedModel signature plus its metadata.json.

Only TensorFlow is needed: a SavedModel written by ``trainer.export`` must be
enough to score images (this module never imports ``trainer``).

The signature (``serving_default``), as metadata.json's ``inputs`` records it (``signature_contract``):
- ``images``: uint8 [N, S, S, 3], S = metadata.json's ``image_size``: each image decoded to RGB
  uint8 at its own size (``preprocessing.images.read_rgb8``), then brought to S x S by
  ``serving.decode.resize_to_model`` (what training saw);
- ``evidence`` (only for a model trained with the matcher's evidence stream): uint8 [N, S, S, E],
  the planes ``preprocessing.constants.EVIDENCE_CHANNELS`` (a model trained on others is refused
  at loading: ``check_evidence_planes``), computed by
  ``preprocessing.matching.evidence.evidence_of(rgb)`` on that same RGB image at its own size (the
  matcher's ``EVIDENCE_CONFIG``; never on the S x S image), then brought to S x S by
  ``serving.decode.resize_to_model`` exactly as the image;
- outputs ``probabilities`` float32 [N, S, S, 1] and, with an image-level head, ``image_score``
  float32 [N].
A plain TensorFlow user therefore needs ``tf.saved_model.load`` and, for the evidence, the project's
``preprocessing`` and ``serving.decode`` (not ``trainer``); docs/calibration.md shows the lines.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from preprocessing import fileio, outputs
from preprocessing.errors import UsageError
from serving.postprocess import PostprocessConfig

EXPORT_SUBDIR = "export"
METADATA_FILE = "metadata.json"


def export_dir_of(model_dir: str) -> str:
    """Accept either MODEL_DIR or MODEL_DIR/export."""
    if fileio.exists(fileio.join(model_dir, "saved_model.pb")):
        return model_dir
    return fileio.join(model_dir, EXPORT_SUBDIR)


def read_metadata(export_dir: str) -> dict:
    path = fileio.join(export_dir, METADATA_FILE)
    try:
        text = fileio.read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: export the model with trainer.main first") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or "image_size" not in meta:
        raise UsageError(f"{path}: not an export's metadata (no image_size)")
    try:
        check_metadata(meta)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return meta


def check_metadata(meta: dict) -> None:
    """``ValueError`` naming the field when a value metadata.json gives would be refused as a flag:
    every value read from it goes through the same bounds and choices as the flag that sets it."""
    from preprocessing.hyperparams import checked_record
    from preprocessing.matching import DecisionParams
    from serving.detectors import DETECTORS
    from serving.fused import FusedParams

    size = meta["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size: {size!r} is not a positive integer")
    if "detector" in meta and meta["detector"] not in DETECTORS:
        raise ValueError(f"detector: {meta['detector']!r} is not one of {', '.join(map(repr, DETECTORS))}")
    for key, cls in (("postprocess", PostprocessConfig), ("matcher", DecisionParams), ("fused", FusedParams)):
        checked_record(cls, meta.get(key), key)


# How a caller computes each input of the signature (recorded in metadata.json's ``inputs``).
IMAGES_RECIPE = ("RGB uint8 at the image's own size (preprocessing.images.read_rgb8), then "
                 "serving.decode.resize_to_model(image, image_size)")
EVIDENCE_RECIPE = ("preprocessing.matching.evidence.evidence_of(rgb) on the same RGB uint8 image at its own size "
                   "(never on the resized one), then serving.decode.resize_to_model(evidence, image_size), exactly "
                   "as the image")


def signature_contract(image_size: int, evidence_channels: tuple | None, image_score: bool) -> dict:
    """metadata.json's ``inputs`` and ``outputs``: the signature's tensors and, for each input, the
    functions that compute it (``evidence_channels``: the evidence planes' names, None without that input)."""
    square = [None, int(image_size), int(image_size)]
    inputs = {"images": {"dtype": "uint8", "shape": square + [3], "computed_by": IMAGES_RECIPE}}
    if evidence_channels is not None:
        inputs["evidence"] = {"dtype": "uint8", "shape": square + [len(evidence_channels)],
                              "channels": list(evidence_channels), "computed_by": EVIDENCE_RECIPE}
    outputs = {"probabilities": {"dtype": "float32", "shape": square + [1]}}
    if image_score:
        outputs["image_score"] = {"dtype": "float32", "shape": [None]}
    return {"inputs": inputs, "outputs": outputs}


def write_metadata(export_dir: str, meta: dict) -> None:
    """Replace metadata.json in one rename, so a kill never leaves a torn file behind."""
    outputs.write_text(fileio.join(export_dir, METADATA_FILE), json.dumps(meta, indent=2, sort_keys=True))


@dataclass
class ExportedModel:
    """The serving signature and what metadata.json says about it."""

    export_dir: str
    metadata: dict
    signature: object

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    @property
    def postprocess(self) -> PostprocessConfig:
        return PostprocessConfig.from_dict(self.metadata.get("postprocess"))

    @property
    def uses_evidence(self) -> bool:
        """Whether the signature also takes the matcher's ``evidence`` map (the model's third stream)."""
        return "evidence" in self.signature.structured_input_signature[1]

    def predict(self, images, evidence=None) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 images [B, S, S, 3] (and evidence [B, S, S, E] for a model that takes it) ->
        (probabilities [B, S, S], image scores [B] or None)."""
        import tensorflow as tf

        inputs = {"images": tf.convert_to_tensor(images, tf.uint8)}
        if self.uses_evidence:
            if evidence is None:
                raise UsageError(f"{self.export_dir}: this model takes the matcher's evidence map as input")
            inputs["evidence"] = tf.convert_to_tensor(evidence, tf.uint8)
        out = self.signature(**inputs)
        probs = out["probabilities"].numpy()[..., 0]
        score = out["image_score"].numpy() if "image_score" in out else None
        return probs, score


def load(model_dir: str) -> ExportedModel:
    export_dir = export_dir_of(model_dir)
    if not fileio.exists(fileio.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no SavedModel in {export_dir} (expected {EXPORT_SUBDIR}/saved_model.pb)")
    meta = read_metadata(export_dir)
    import tensorflow as tf  # here, not at import: commands set TensorFlow's log level first

    loaded = tf.saved_model.load(export_dir)
    signature = loaded.signatures["serving_default"]
    check_evidence_planes(export_dir, meta, signature.structured_input_signature[1].get("evidence"))
    return ExportedModel(export_dir, meta, signature)


def check_evidence_planes(export_dir: str, meta: dict, spec) -> None:
    """``UsageError`` for a model trained on other evidence planes than this code computes (an
    export from before the dense field's planes): fed today's map it would fail, or worse, read
    planes as others."""
    if spec is None:
        return
    from preprocessing.constants import EVIDENCE_CHANNELS
    from preprocessing.records import VERSION_CHANGE

    recorded = ((meta.get("inputs") or {}).get("evidence") or {}).get("channels")
    if recorded == list(EVIDENCE_CHANNELS) and spec.shape[-1] == len(EVIDENCE_CHANNELS):
        return
    raise UsageError(f"{export_dir}: this model reads the evidence planes {recorded or spec.shape[-1]}, but this "
                     f"code computes {list(EVIDENCE_CHANNELS)} ({VERSION_CHANGE}); retrain it with "
                     "`python -m trainer.main` on records rewritten by `python -m preprocessing.main`")
