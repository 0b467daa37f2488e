"""Choose the post-processing that maximises oF1 on validation data (what ``serving.calibrate`` runs).

The metric gives an authentic image predicted forged a 0, so the image-level bar
(``image_threshold``) matters as much as the pixel threshold. The model runs once; the search then
re-post-processes its saved outputs over a grid of (threshold, min_area) and, for each, the best bar
over every distinct evidence value. It calls ``serving.postprocess``'s own steps (one
implementation), caching the components of one threshold at a time.

A candidate replaces the current values only when its validation gain is larger than ``margin_se``
standard errors of the per-image paired difference (default 1): with a few dozen validation images,
one lucky image would otherwise move the bar, and that loses on test images more often than it wins.
So calibration never lowers the validation oF1, and moves only on evidence.

Ground truth: from records, the 4-connected components of the stored union mask (records keep only
the union), at the records' resolution; from a labelled folder, the real instance masks at the
original size, with the rule of ``preprocessing.masks.forged_instances`` (a forged image without a
usable mask is skipped and listed, never used as authentic).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from preprocessing.cases import discover_training_cases
from preprocessing.constants import AUTHENTIC
from preprocessing.errors import BadInput
from preprocessing.masks import forged_instances
from serving import postprocess
from serving.metric import image_score
from serving.postprocess import NEVER, PostprocessConfig, Prediction
from serving.saved_model import ExportedModel

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.20, 0.951, 0.05))
DEFAULT_MIN_AREAS = (0, 4, 8, 16, 32, 64, 128, 256, 512)
DEFAULT_MARGIN_SE = 1.0  # standard errors a gain must exceed before calibration moves (see above)
TIE = 1e-12  # score differences below this are ties, which the current values win


@dataclass
class Sample:
    """One validation image: the model's output and the true instances at the evaluation size."""

    pred: Prediction  # pred.orig_hw is the evaluation (H, W)
    gt: list  # (H, W) uint8 masks; [] for authentic


# ----------------------------------------------------------------------------- validation data

def samples_from_records(model: ExportedModel, data_dir: str, batch_size: int = 32,
                         split: str = "val", progress: bool = True) -> list[Sample]:
    """Run the model over the records of one split, each image brought to the model size as in
    training (serving.decode.resize_to_model) and scored against its mask at the stored size."""
    import tensorflow as tf

    from preprocessing import records, schema
    from serving.decode import resize_to_model

    src = records.resolve_source(data_dir, split)
    size = model.image_size

    def prepare(filename, serialized):
        ex = schema.parse_record(filename, serialized)
        model_image = resize_to_model(ex["image"], size)  # S x S records pass through unchanged
        key = tf.strings.join([tf.strings.as_string(ex["label"]), ex["case_id"]], "/")
        return key, model_image, ex["mask"][:, :, 0]

    files = tf.data.Dataset.from_tensor_slices(list(src.files))
    ds = files.interleave(lambda f: tf.data.TFRecordDataset(f, src.compression).map(lambda r: (f, r)),
                          cycle_length=1)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Masks differ in size when images are stored at their own size: batch images only.
    samples: list[Sample] = []
    bar = tqdm(desc=f"predict {split}", unit="img", disable=not progress, file=sys.stderr)
    keys, images, masks = [], [], []

    def flush():
        probs, scores = model.predict(np.stack(images))
        for k, (key, mask) in enumerate(zip(keys, masks)):
            pred = Prediction(key, mask.shape[:2], probs[k], None if scores is None else float(scores[k]))
            samples.append(Sample(pred, postprocess.union_instances(mask)))
        bar.update(len(keys))
        keys.clear(), images.clear(), masks.clear()

    try:
        for key, image, mask in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            keys.append(key.decode()), images.append(image), masks.append(mask)
            if len(keys) == batch_size:
                flush()
    except tf.errors.DataLossError as exc:
        raise records.damaged_records_error([src], exc) from exc
    if keys:
        flush()
    bar.close()
    return samples


def samples_from_folder(model: ExportedModel, input_dir: str, batch_size: int = 16, progress: bool = True,
                        allow_pickle_masks: bool = False) -> tuple[list[Sample], list[dict]]:
    """Labelled images + instance masks in the competition layout; unusable cases are returned as
    error records (case id, path, reason), not scored."""
    from serving.network import predict_items

    cases, _ = discover_training_cases(input_dir)
    by_key = {c.key: c for c in cases}
    preds, errors = predict_items(model, [(c.key, c.image_path) for c in cases], batch_size, progress)
    samples = []
    for pred in preds:
        case = by_key[pred.case_id]
        if case.label == AUTHENTIC:
            samples.append(Sample(pred, []))
            continue
        try:
            mask = forged_instances(case.image_path, case.mask_path, pred.orig_hw, allow_pickle_masks)
        except BadInput as exc:
            errors.append({"case_id": case.key, "path": exc.path, "reason": exc.reason})
            continue
        samples.append(Sample(pred, list(mask.instances)))
    return samples, sorted(errors, key=lambda e: e["case_id"])


# ----------------------------------------------------------------------------- search

@dataclass
class Outcome:
    """Per-image consequences of one post-processing (without its image bar): what calling each image
    forged or authentic would score. Detector-agnostic: any candidate decision fills one."""

    has_components: np.ndarray  # bool [N]
    evidence: np.ndarray  # float [N]
    score_if_forged: np.ndarray  # float [N]
    score_if_authentic: np.ndarray  # float [N]

    def scores(self, image_threshold: float) -> np.ndarray:
        forged = self.has_components & (self.evidence >= image_threshold)
        return np.where(forged, self.score_if_forged, self.score_if_authentic)

    def best_bar(self, prefer: float, reference: np.ndarray, margin_se: float) -> tuple[float, float, float]:
        """(bar, mean score, pessimistic score) of the bar with the best pessimistic score among
        bars between consecutive evidence values; ``prefer`` wins ties."""
        ev = np.unique(self.evidence[self.has_components])
        bars = [prefer, 0.0, NEVER] + [float(v) for v in (ev[:-1] + ev[1:]) / 2]
        best = (prefer, 0.0, -np.inf)
        for b in bars:
            scores = self.scores(b)
            lb = pessimistic(scores, reference, margin_se)
            if lb > best[2] + TIE:
                best = (b, float(scores.mean()), lb)
        return best


def pessimistic(scores: np.ndarray, reference: np.ndarray, margin_se: float) -> float:
    """Mean score minus ``margin_se`` standard errors of its paired per-image difference from
    ``reference`` (the current settings' scores): a gain that one or two images make is discounted."""
    n = len(scores)
    if n == 0:
        return 0.0
    se = float(np.std(scores - reference, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return float(scores.mean()) - margin_se * se


class Evaluator:
    """Re-post-processes saved model outputs with ``serving.postprocess``; the components of the
    last threshold asked for are cached (the grid runs threshold by threshold)."""

    def __init__(self, samples: Sequence[Sample]):
        self.samples = list(samples)
        self._cache: tuple[float, list] = (float("nan"), [])

    def _components(self, threshold: float) -> list[postprocess.Components]:
        if self._cache[0] != threshold:
            self._cache = (threshold, [postprocess.find_components(s.pred.prob, threshold) for s in self.samples])
        return self._cache[1]

    def outcome(self, threshold: float, min_area: int, max_instances: int = 0) -> Outcome:
        n = len(self.samples)
        has, ev = np.zeros(n, bool), np.zeros(n)
        s_forged, s_auth = np.zeros(n), np.zeros(n)
        for i, (s, comps) in enumerate(zip(self.samples, self._components(threshold))):
            s_auth[i] = 1.0 if not s.gt else 0.0
            keep = postprocess.kept_labels(comps, min_area, max_instances)
            if not keep:
                s_forged[i] = s_auth[i]
                continue
            has[i] = True
            ev[i] = postprocess.evidence(s.pred.prob, comps, keep, s.pred.image_score)
            s_forged[i] = image_score(postprocess.masks_at(comps, keep, s.pred.orig_hw), s.gt)
        return Outcome(has, ev, s_forged, s_auth)

    def of1(self, cfg: PostprocessConfig) -> float:
        if not self.samples:
            return 0.0
        return float(self.outcome(cfg.threshold, cfg.min_area, cfg.max_instances).scores(cfg.image_threshold).mean())


def search(samples: Sequence[Sample], base: PostprocessConfig,
           thresholds: Sequence[float] = DEFAULT_THRESHOLDS, min_areas: Sequence[int] = DEFAULT_MIN_AREAS,
           progress: bool = True, margin_se: float = DEFAULT_MARGIN_SE) -> tuple[PostprocessConfig, float, float]:
    """(best config, oF1 of ``base``, oF1 of the best): the config with the best ``pessimistic``
    score; ``base`` is kept unless something beats it by more than ``margin_se`` standard errors."""
    if margin_se < 0:
        raise ValueError(f"margin_se must be >= 0, got {margin_se}")
    ev = Evaluator(samples)
    reference = ev.outcome(base.threshold, base.min_area, base.max_instances).scores(base.image_threshold)
    before = float(reference.mean()) if len(reference) else 0.0
    best_cfg, best, best_lb = base, before, before
    thresholds = sorted(set(float(t) for t in thresholds) | {base.threshold})
    min_areas = sorted(set(int(a) for a in min_areas) | {base.min_area})
    grid = [(t, a) for t in thresholds for a in min_areas]
    for t, a in tqdm(grid, desc="search", unit="cfg", disable=not progress, file=sys.stderr):
        bar, score, lb = ev.outcome(t, a, base.max_instances).best_bar(base.image_threshold, reference, margin_se)
        if lb > best_lb + TIE:
            best_cfg, best, best_lb = replace(base, threshold=t, min_area=a, image_threshold=bar), score, lb
    return best_cfg, before, best
