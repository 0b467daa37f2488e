"""Loading an exported model: the SavedModel signature plus its metadata.json.

Only TensorFlow is needed: a SavedModel written by ``trainer.export`` must be
enough to score images (this module never imports ``trainer``).
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
    return meta


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
    return ExportedModel(export_dir, meta, loaded.signatures["serving_default"])
