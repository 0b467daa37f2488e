"""Loading an exported model: the SavedModel signature plus its metadata.json.

Only TensorFlow is needed: a SavedModel written by ``trainer.export`` must be
enough to score images (this module never imports ``trainer``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from serving.postprocess import PostprocessConfig

EXPORT_SUBDIR = "export"
METADATA_FILE = "metadata.json"


def export_dir_of(model_dir: str) -> str:
    """Accept either MODEL_DIR or MODEL_DIR/export."""
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    return os.path.join(model_dir, EXPORT_SUBDIR)


def read_metadata(export_dir: str) -> dict:
    path = os.path.join(export_dir, METADATA_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: export the model with trainer.main first") from None


def write_metadata(export_dir: str, meta: dict) -> None:
    with open(os.path.join(export_dir, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


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

    def predict(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 [B, S, S, 3] -> (probabilities [B, S, S], image scores [B] or None)."""
        out = self.signature(images=tf.convert_to_tensor(images, tf.uint8))
        probs = out["probabilities"].numpy()[..., 0]
        score = out["image_score"].numpy() if "image_score" in out else None
        return probs, score


def load(model_dir: str) -> ExportedModel:
    export_dir = export_dir_of(model_dir)
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no SavedModel in {export_dir} (expected {EXPORT_SUBDIR}/saved_model.pb)")
    meta = read_metadata(export_dir)
    loaded = tf.saved_model.load(export_dir)
    return ExportedModel(export_dir, meta, loaded.signatures["serving_default"])
