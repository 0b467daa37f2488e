"""Validation oF1 during training, with serving's post-processing and metric (never a second copy)."""
from __future__ import annotations

import numpy as np

from serving import metric, postprocess
from trainer.model import model_images

IMAGE_HEAD_THRESHOLD = 0.5  # post-processing gate for models with an image-level head, until calibration


def gt_instances(union_mask: np.ndarray) -> list[np.ndarray]:
    """Ground-truth instances from a stored union mask: its 4-connected components.

    Records keep only the union of the instances, so this is an approximation of the
    competition's instances: a source and its copy that touch become one instance, and an
    instance that the resize split in two becomes two. It is scored at the model size (the
    stored mask enlarged with its image, as in training).
    """
    return postprocess.union_instances(np.asarray(union_mask).squeeze(-1))


def postprocess_config(image_head: bool) -> postprocess.PostprocessConfig:
    """The seed's defaults (threshold 0.45, min area 32); with an image head, an image is called
    forged only when the head says so (>= 0.5), until calibration picks better values."""
    return postprocess.PostprocessConfig(image_threshold=IMAGE_HEAD_THRESHOLD if image_head else 0.0)


def score_dataset(predict, dataset, cfg: postprocess.PostprocessConfig) -> dict:
    """oF1 over a ``with_ids`` dataset with serving's post-processing and metric."""
    scores, forged_truth, forged_pred = [], [], []
    for inputs, targets, _ in dataset:
        images, masks = model_images(inputs, targets["mask"])
        out = predict(images)
        probs = out["mask"].numpy()[..., 0]
        heads = out["image"].numpy()[:, 0] if "image" in out else [None] * len(probs)
        for prob, mask, head in zip(probs, masks.numpy(), heads):
            gt = gt_instances(mask)
            pred = postprocess.instances(prob, prob.shape, cfg, image_score=head)
            scores.append(metric.image_score(pred, gt))
            forged_truth.append(bool(gt))
            forged_pred.append(bool(pred))
    s, t, p = np.array(scores), np.array(forged_truth, bool), np.array(forged_pred, bool)
    return {"of1": float(s.mean()) if len(s) else 0.0,
            "of1_forged": float(s[t].mean()) if t.any() else 0.0,
            "of1_authentic": float(s[~t].mean()) if (~t).any() else 0.0,
            "pred_forged_fraction": float(p.mean()) if len(p) else 0.0}
