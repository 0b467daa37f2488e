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
from preprocessing.errors import BadInput, UsageError
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
    size, evidence = model.image_size, model.uses_evidence

    def prepare(filename, serialized):
        ex = schema.parse_record(filename, serialized, evidence=evidence)
        model_image = resize_to_model(ex["image"], size)  # S x S records pass through unchanged
        # The stored evidence map went through the same resizing as the image: bring it to S x S alike.
        model_evidence = resize_to_model(ex["evidence"], size) if evidence else tf.zeros([0], tf.uint8)
        key = tf.strings.join([tf.strings.as_string(ex["label"]), ex["case_id"]], "/")
        return key, model_image, model_evidence, ex["mask"][:, :, 0]

    files = tf.data.Dataset.from_tensor_slices(list(src.files))
    ds = files.interleave(lambda f: tf.data.TFRecordDataset(f, src.compression).map(lambda r: (f, r)),
                          cycle_length=1)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Masks differ in size when images are stored at their own size: batch images only.
    samples: list[Sample] = []
    bar = tqdm(desc=f"predict {split}", unit="img", disable=not progress, file=sys.stderr)
    keys, images, maps, masks = [], [], [], []

    def flush():
        probs, scores = model.predict(np.stack(images), np.stack(maps) if evidence else None)
        for k, (key, mask) in enumerate(zip(keys, masks)):
            pred = Prediction(key, mask.shape[:2], probs[k], None if scores is None else float(scores[k]))
            samples.append(Sample(pred, postprocess.union_instances(mask)))
        bar.update(len(keys))
        keys.clear(), images.clear(), maps.clear(), masks.clear()

    try:
        for key, image, evidence_map, mask in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            keys.append(key.decode()), images.append(image), maps.append(evidence_map), masks.append(mask)
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


def walk_grid(grid: Sequence, score, base, margin_se: float, desc: str, progress: bool) -> tuple[object, float, float]:
    """(best candidate, oF1 of ``base``, oF1 of the best) over ``grid``, each scored per image by
    ``score(candidate)``: ``base`` stays unless a candidate beats it by more than ``margin_se``
    standard errors (the rule every detector's search uses)."""
    reference = score(base)
    before = float(reference.mean()) if len(reference) else 0.0
    best_params, best, best_lb = base, before, before
    for candidate in tqdm(grid, desc=desc, unit="cfg", disable=not progress, file=sys.stderr):
        scores = score(candidate)
        lb = pessimistic(scores, reference, margin_se)
        if lb > best_lb + TIE:
            best_params, best, best_lb = candidate, float(scores.mean()), lb
    return best_params, before, best


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


# ----------------------------------------------------------------------------- the matcher's decision

# The grid of the matcher's decision parameters (preprocessing.matching.DecisionParams); the
# image-level bar (min_strength) is searched over every distinct strength, as the network's bar is.
MATCHER_MIN_INLIERS = (4, 6, 8, 12, 16, 24)
MATCHER_MIN_CORRELATIONS = (0.55, 0.6, 0.65, 0.7, 0.8, 0.9)
MATCHER_MIN_AREAS = (0.0005, 0.001, 0.002, 0.005, 0.01)
MATCHER_BARS = 8  # candidate image-level bars on a pair's strength (quantiles of the strengths seen)


@dataclass
class MatcherSample:
    """One validation image: the matcher's Detection (at native resolution) and the true instances."""

    case_id: str
    detection: object  # preprocessing.matching.Detection
    gt: list


def matcher_samples(cases, config=None, workers: int = 1, progress: bool = True,
                    allow_pickle_masks: bool = False) -> tuple[list[MatcherSample], list[dict]]:
    """Match every case's image once; forged cases take their mask by the one rule
    (``masks.forged_instances``); unusable cases are error records."""
    from preprocessing.matching import MatcherConfig
    from serving.matcher import iter_analysed

    by_key = {c.key: c for c in cases}
    samples, errors = [], []
    items = [(c.key, c.image_path) for c in cases]
    for a in iter_analysed(items, config or MatcherConfig(), workers, progress):
        if a.error:
            errors.append(a.error)
            continue
        case = by_key[a.case_id]
        if case.label == AUTHENTIC:
            samples.append(MatcherSample(a.case_id, a.detection, []))
            continue
        try:
            mask = forged_instances(case.image_path, case.mask_path, a.detection.shape, allow_pickle_masks)
        except BadInput as exc:
            errors.append({"case_id": case.key, "path": exc.path, "reason": exc.reason})
            continue
        samples.append(MatcherSample(a.case_id, a.detection, list(mask.instances)))
    return samples, sorted(errors, key=lambda e: e["case_id"])


def cases_of_split(data_dir: str, split: str = "val") -> list:
    """The original cases behind one split of the Beam job's records: the matcher needs native
    resolution, which the records (resized to the model size) no longer hold. The manifest names
    the corpus the records came from; the records name the cases."""
    import tensorflow as tf

    from preprocessing import records, schema
    from preprocessing.constants import LABEL_NAMES

    manifest = records.read_manifest(data_dir)
    src = records.resolve_source(data_dir, split)
    keys = {k: schema.FEATURES[k] for k in ("case_id", "label")}
    wanted = {f"{LABEL_NAMES[int(r['label'])]}/{r['case_id'].decode()}" for r in tf.data.TFRecordDataset(
        list(src.files), src.compression).map(lambda s: tf.io.parse_single_example(s, keys)).as_numpy_iterator()}
    corpus = manifest.get("options", {}).get("input_dir")
    if not corpus:
        raise UsageError(f"{data_dir}: the manifest does not name the corpus the records came from")
    cases, _ = discover_training_cases(corpus)
    found = [c for c in cases if c.key in wanted]
    if len(found) < len(wanted):
        raise UsageError(f"{corpus}: {len(wanted) - len(found)} of the {split} split's {len(wanted)} cases are no "
                         "longer there")
    return found


class MatcherEvaluator:
    """Per-image scores of decision parameters on cached detections (``preprocessing.matching.decide``
    itself); the score of a set of passing pairs is computed once."""

    def __init__(self, samples: Sequence[MatcherSample]):
        self.samples = list(samples)
        self._scores: dict = {}

    def _score(self, i: int, pairs: list) -> float:
        from preprocessing.matching import instances_of

        key = (i, tuple(id(p) for p in pairs))
        if key not in self._scores:
            s = self.samples[i]
            self._scores[key] = image_score(instances_of(pairs, s.detection.shape), s.gt)
        return self._scores[key]

    def scores(self, params) -> np.ndarray:
        from preprocessing.matching import decide

        out = np.zeros(len(self.samples))
        for i, s in enumerate(self.samples):
            pairs = decide(s.detection, params)
            out[i] = self._score(i, pairs) if pairs else (0.0 if s.gt else 1.0)
        return out

    def of1(self, params) -> float:
        return float(self.scores(params).mean()) if self.samples else 0.0

    def strength_bars(self) -> list[float]:
        """Candidate image-level bars: 0 and midpoints between distinct candidate strengths (quantiles)."""
        values = np.unique([p.strength for s in self.samples for p in s.detection.candidates])
        mids = (values[:-1] + values[1:]) / 2 if len(values) > 1 else np.array([])
        picked = np.quantile(mids, np.linspace(0, 1, min(MATCHER_BARS, len(mids)))) if len(mids) else []
        return sorted({0.0, *(float(v) for v in picked)})


def search_matcher(samples: Sequence[MatcherSample], base, progress: bool = True,
                   margin_se: float = DEFAULT_MARGIN_SE, min_inliers=MATCHER_MIN_INLIERS,
                   min_correlations=MATCHER_MIN_CORRELATIONS, min_areas=MATCHER_MIN_AREAS):
    """(best DecisionParams, oF1 of ``base``, oF1 of the best), by the same pessimistic rule as
    ``search``: ``base`` stays unless beaten by more than ``margin_se`` standard errors."""
    from dataclasses import replace as replace_

    ev = MatcherEvaluator(samples)
    grid = [replace_(base, min_inliers=i, min_correlation=c, min_area=a, use_dense=d, min_strength=b)
            for i in sorted(set(min_inliers) | {base.min_inliers})
            for c in sorted(set(min_correlations) | {base.min_correlation})
            for a in sorted(set(min_areas) | {base.min_area}) for d in (True, False)
            for b in sorted(set(ev.strength_bars()) | {base.min_strength})]
    return walk_grid(grid, ev.scores, base, margin_se, "search matcher", progress)


# ----------------------------------------------------------------------------- the fused decision

FUSED_MATCHER_SURE = (0.5, 0.7, 0.85)  # strengths that may stand without the network (besides never)
FUSED_REFINE = (0.3, 0.5, 0.7)  # probabilities that may move a matcher edge (besides not refining)
FUSED_BARS = 12  # candidate confirmation / network-only bars: quantiles of the network's evidence


@dataclass
class FusedSample:
    """One validation image as both detectors saw it, at its original size."""

    case_id: str
    pred: Prediction  # the network's output; pred.orig_hw is the image's size
    pairs: list  # the matcher's decided pairs
    matcher_instances: list
    gt: list


class FusedEvaluator:
    """Scores of fused decisions, vectorised: what each sample would score on every branch is
    computed once (refinements once per threshold), then every candidate is a few numpy ops."""

    def __init__(self, samples: Sequence[FusedSample], net_cfg: PostprocessConfig):
        from serving import fused

        self.samples, self.net_cfg = list(samples), net_cfg
        n = len(self.samples)
        self.s_auth = np.array([0.0 if s.gt else 1.0 for s in self.samples])
        self.has_pairs = np.array([bool(s.pairs) for s in self.samples])
        self.strength = np.array([max((p.strength for p in s.pairs), default=0.0) for s in self.samples])
        self.net_ev = np.array([fused.network_evidence(s.pred, net_cfg) for s in self.samples])
        own = [postprocess.instances(s.pred.prob, s.pred.orig_hw, net_cfg, s.pred.image_score)
               for s in self.samples]
        self.has_own = np.array([bool(o) for o in own])
        self.s_own = np.array([image_score(o, s.gt) if o else 0.0 for o, s in zip(own, self.samples)])
        self._matcher: dict[float, np.ndarray] = {}
        self._prob: dict[int, np.ndarray] = {}
        self.n = n

    def matcher_scores(self, refine_threshold: float) -> np.ndarray:
        """What each sample scores when its matcher pairs are kept, refined at ``refine_threshold``."""
        from serving import fused

        if refine_threshold not in self._matcher:
            out = np.zeros(self.n)
            for i, s in enumerate(self.samples):
                if not s.pairs:
                    continue
                masks = s.matcher_instances
                if refine_threshold > 0:
                    if i not in self._prob:
                        self._prob[i] = fused.probability_at(s.pred)
                    masks = [fused.refine(m, self._prob[i], refine_threshold) for m in masks]
                out[i] = image_score(masks, s.gt)
            self._matcher[refine_threshold] = out
        return self._matcher[refine_threshold]

    def scores(self, p) -> np.ndarray:
        confirmed = self.has_pairs & ((self.strength >= p.matcher_sure) | (self.net_ev >= p.confirm_bar))
        network = ~self.has_pairs & self.has_own & (self.net_ev >= p.network_only_bar)
        out = np.where(confirmed, self.matcher_scores(p.refine_threshold), self.s_auth)
        return np.where(network, self.s_own, out)

    def candidate_bars(self, flagged: np.ndarray) -> list[float]:
        values = np.unique(self.net_ev[flagged])
        if len(values) < 2:
            return []
        qs = np.quantile(values, np.linspace(0, 1, min(FUSED_BARS, len(values))))
        return sorted({float(v) for v in qs})


def search_fused(samples: Sequence[FusedSample], net_cfg: PostprocessConfig, base=None, progress: bool = True,
                 margin_se: float = DEFAULT_MARGIN_SE):
    """(best FusedParams, oF1 of ``base``, oF1 of the best) by the pessimistic rule; ``base``
    (default: the matcher alone) stays unless beaten by more than ``margin_se`` standard errors."""
    from serving.fused import FusedParams

    base = base or FusedParams()
    ev = FusedEvaluator(samples, net_cfg)
    confirm = sorted({0.0, base.confirm_bar, *ev.candidate_bars(ev.has_pairs)})
    alone = sorted({NEVER, base.network_only_bar, *ev.candidate_bars(~ev.has_pairs & ev.has_own)})
    grid = [FusedParams(c, s, r, b) for c in confirm for s in sorted({NEVER, base.matcher_sure, *FUSED_MATCHER_SURE})
            for r in sorted({0.0, base.refine_threshold, *FUSED_REFINE}) for b in alone]
    return walk_grid(grid, ev.scores, base, margin_se, "search fused", progress)
