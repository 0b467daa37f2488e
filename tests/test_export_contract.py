"""The export says what it needs: a model that takes the matcher's evidence serves ``(images, evidence)``,
metadata.json names the functions that compute each input, and a plain TensorFlow user who follows it in a
fresh process (no ``trainer``) gets the probabilities serving.score computes. Real SavedModel, real images."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from tiny_model import SIZE, export_tiny

from preprocessing.cases import discover_training_cases
from preprocessing.constants import EVIDENCE_CHANNELS
from serving import detectors, network
from serving.saved_model import load, read_metadata
from serving.submission import submission_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy_move_png(path: str) -> str:
    """A 160 x 200 textured image with one block pasted elsewhere: the matcher finds it."""
    import cv2

    rng = np.random.default_rng(4)
    img = cv2.GaussianBlur(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8), (3, 3), 0)
    img[100:140, 130:180] = img[10:50, 20:70]
    cv2.imwrite(path, img)
    return path

# What metadata.json tells a user, followed to the letter with TensorFlow and the named functions only.
PLAIN_TF = """
import json, sys
import numpy as np
import pytest
import tensorflow as tf
from preprocessing.images import read_rgb8
from preprocessing.matching.evidence import evidence_of
from serving.decode import resize_to_model

export_dir, paths, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
size = json.load(open(export_dir + "/metadata.json"))["image_size"]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
probs, scores, plain = [], [], []
for path in paths:
    rgb = read_rgb8(path)  # RGB uint8 at the image's own size
    images = resize_to_model(tf.constant(rgb), size)[None]
    evidence = resize_to_model(tf.constant(evidence_of(rgb)), size)[None]  # at the image's own size, then resized
    result = serve(images=images, evidence=evidence)
    probs.append(result["probabilities"].numpy()[0, ..., 0])
    scores.append(float(result["image_score"].numpy()[0]))
    plain.append(serve(images=images, evidence=tf.zeros_like(evidence))["probabilities"].numpy()[0, ..., 0])
assert "trainer" not in sys.modules, sorted(m for m in sys.modules if m.startswith("trainer"))
np.savez(out, probs=np.stack(probs), scores=np.array(scores), without_evidence=np.stack(plain))
"""


def test_a_plain_tensorflow_user_computes_the_evidence_input_as_metadata_says(small_synth_dir, tmp_path):
    model_dir = export_tiny(str(tmp_path / "model"), evidence=True)
    export_dir = os.path.join(model_dir, "export")
    meta = read_metadata(export_dir)
    model = load(model_dir)
    # The signature is (images, evidence), and metadata.json describes exactly those tensors.
    spec = model.signature.structured_input_signature[1]
    assert sorted(spec) == ["evidence", "images"]
    for name, tensor in spec.items():
        assert meta["inputs"][name]["shape"] == [None if d is None else int(d) for d in tensor.shape]
        assert meta["inputs"][name]["dtype"] == tensor.dtype.name == "uint8"
    assert meta["inputs"]["evidence"]["channels"] == list(EVIDENCE_CHANNELS)
    recipe = meta["inputs"]["evidence"]["computed_by"]
    assert "preprocessing.matching.evidence.evidence_of(rgb)" in recipe and "own size" in recipe
    assert "serving.decode.resize_to_model(evidence, image_size)" in recipe
    assert sorted(meta["outputs"]) == ["image_score", "probabilities"]

    # Images that fit in S x S (enlarged) and larger ones (resized), and one with a clear copy-move.
    cases, _ = discover_training_cases(small_synth_dir)
    items = [(c.key, c.image_path) for c in cases[:6]] + [("copied", _copy_move_png(str(tmp_path / "copied.png")))]
    out = str(tmp_path / "plain_tf.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", PLAIN_TF, export_dir, json.dumps([p for _, p in items]), out],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = np.load(out)

    # serving.score's network detector on the same files: the same probabilities and image scores...
    preds, errors = network.predict_items(model, items, batch_size=4, progress=False)
    assert not errors and [p.case_id for p in preds] == [k for k, _ in items]
    np.testing.assert_allclose(plain["probs"], np.stack([p.prob for p in preds]), atol=1e-6)
    np.testing.assert_allclose(plain["scores"], [p.image_score for p in preds], atol=1e-6)
    # ... so the same submission rows as the command's (serving.detectors is what serving.score runs).
    served, _ = detectors.score_items("network", items, model, detectors.Settings.from_metadata(meta),
                                      progress=False)
    mine = [replace(p, prob=plain["probs"][k], image_score=float(plain["scores"][k])) for k, p in enumerate(preds)]
    assert submission_rows(mine, [], model.postprocess) == served.rows
    # The evidence input mattered: without it some probabilities differ (the test can fail).
    assert np.abs(plain["probs"] - plain["without_evidence"]).max() > 0.1
    assert meta["image_size"] == SIZE


def test_a_model_trained_on_other_evidence_planes_is_refused_at_loading(tmp_path):
    """An export from before the dense field's planes (schema 3: match, decoration, present) would
    read today's map wrongly: loading it says so and names the fix."""
    from preprocessing.errors import UsageError
    from serving.saved_model import write_metadata

    model_dir = export_tiny(str(tmp_path / "model"), evidence=True)
    export_dir = os.path.join(model_dir, "export")
    load(model_dir)  # as exported: accepted
    meta = read_metadata(export_dir)
    meta["inputs"]["evidence"]["channels"] = ["match", "decoration", "present"]
    write_metadata(export_dir, meta)
    with pytest.raises(UsageError) as err:
        load(model_dir)
    assert export_dir in str(err.value) and "dense field" in str(err.value)
    assert "python -m trainer.main" in str(err.value) and "python -m preprocessing.main" in str(err.value)
