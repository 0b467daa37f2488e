"""The searches behind ``serving.calibrate``: each detector's decision tuned on labelled data, and
the choice of the default detector, all by one pessimistic rule.

One rule. A candidate (a set of parameters, or a more complex detector) replaces the reference (the
current values, or the simpler detector) only when the per-image paired difference of their scores
has a mean above ``margin_se`` standard errors (default ``DEFAULT_MARGIN_SE``). With a few dozen
images, one lucky image would otherwise move a bar, and that loses on test images more often than
it wins. Every search reports that difference and its standard error (``Difference``), for the
chosen values and for the highest-scoring candidate, so a user sees how sure the choice is.

Which images. The network was trained on the train split, so its post-processing and everything
that uses its output (the fused decision, the choice of detector) is judged on the validation split
only. The matcher was never trained: every labelled image is fair for its decision parameters, so it
is tuned on every split of the records (train and val), found again at native resolution through
the records' case ids and the corpus the manifest names (``cases_by_split``). From a labelled folder
(``--input_dir``) every case is used for all of them.

What each search varies:
- the network (``search_network``): the pixel threshold, the minimum area and the image-level bar
  (``image_threshold``, every distinct evidence value), re-post-processing the model's saved outputs
  with ``serving.postprocess``'s own steps; reference: the export's current values;
- the matcher (``search_matcher``): ``preprocessing.matching.DecisionParams`` on cached detections;
  reference: the defaults;
- the fused decision (``search_fused``): ``serving.fused.FusedParams``; reference: the defaults
  (the matcher alone);
- the detector (``choose_detector``): simplest first (``simplest_first``: a plain network, the
  matcher, the fused verdict; a network that reads the matcher's evidence ranks above the matcher),
  each against the current choice.

Ground truth: from records, the 4-connected components of the stored union mask (records keep only
the union), at the records' resolution; from a labelled folder or for the matcher, the real instance
masks at the original size, with the rule of ``preprocessing.masks.forged_instances`` (a forged
image without a usable mask is skipped and listed, never used as authentic).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

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
# Standard errors of the per-image paired difference a gain must exceed before anything moves: one
# SE keeps a move that one image of a few dozen makes out, yet lets a gain most images share through.
DEFAULT_MARGIN_SE = 1.0
TIE = 1e-12  # score differences below this are ties, which the reference wins
# The detectors from simplest to most complex (issue 24): the fused verdict needs both others; a
# plain network is ranked below the matcher. ``choose_detector`` moves along it only on evidence.
SIMPLEST_FIRST = ("network", "matcher", "fused")
# A network that reads the matcher's evidence map is the matcher plus a trained model, so it ranks
# above the matcher: it must beat the matcher it is built on by the margin to be chosen.
SIMPLEST_FIRST_WITH_EVIDENCE = ("matcher", "network", "fused")


def simplest_first(network_reads_evidence: bool) -> tuple[str, ...]:
    """The detectors from simplest to most complex, for a network with or without the evidence input."""
    return SIMPLEST_FIRST_WITH_EVIDENCE if network_reads_evidence else SIMPLEST_FIRST


# ----------------------------------------------------------------------------- the rule

@dataclass(frozen=True)
class Difference:
    """A candidate's per-image scores minus the reference's on the same images: how sure a gain is."""

    images: int
    mean: float  # the mean per-image difference, which is the difference of the two oF1s
    se: float  # its standard error: sample standard deviation / sqrt(images)

    def beats(self, margin_se: float) -> bool:
        """Whether the gain exceeds ``margin_se`` standard errors (the rule)."""
        return self.mean - margin_se * self.se > TIE

    def to_dict(self) -> dict:
        return {"images": self.images, "mean_difference": self.mean, "se": self.se,
                "in_se": self.mean / self.se if self.se > 0 else None}


def paired_difference(scores: np.ndarray, reference: np.ndarray) -> Difference:
    """Per-image ``scores - reference`` summarised: paired, because both score the same images, so
    what every image shares cancels and only the disagreement counts."""
    diff = np.asarray(scores, float) - np.asarray(reference, float)
    n = len(diff)
    se = float(np.std(diff, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return Difference(n, float(diff.mean()) if n else 0.0, se)


def pessimistic(scores: np.ndarray, reference: np.ndarray, margin_se: float) -> float:
    """Mean score minus ``margin_se`` standard errors of its paired per-image difference from
    ``reference`` (the current settings' scores): a gain that one or two images make is discounted."""
    if len(scores) == 0:
        return 0.0
    return float(np.mean(scores)) - margin_se * paired_difference(scores, reference).se


class Tuned(NamedTuple):
    """What a search found: the chosen parameters (the reference unless beaten by the margin), the
    oF1 before and after, the chosen values' paired difference from the reference (zero when the
    reference stays) and the highest-scoring candidate with its difference, chosen or not."""

    params: object
    before: float
    after: float
    difference: Difference
    highest: object
    highest_difference: Difference

    def to_dict(self) -> dict:
        return {"oF1_before": self.before, "oF1_after": self.after, "after": self.params.to_dict(),
                "difference": self.difference.to_dict(),
                "highest": {"params": self.highest.to_dict(), "oF1": self.before + self.highest_difference.mean,
                            "difference": self.highest_difference.to_dict()}}


class Pick:
    """Candidates offered one by one against ``base`` and its per-image ``reference`` scores: keeps the
    one with the best ``pessimistic`` score (``base`` unless beaten by the margin; earlier candidates
    win ties) and the one with the best mean."""

    def __init__(self, base, reference: np.ndarray, margin_se: float):
        if margin_se < 0:
            raise ValueError(f"margin_se must be >= 0, got {margin_se}")
        self.reference, self.margin_se = np.asarray(reference, float), margin_se
        self.before = float(self.reference.mean()) if len(self.reference) else 0.0
        self.chosen = self.highest = (base, self.reference)
        self._chosen_lb = self._highest_mean = self.before

    def offer(self, candidate, scores: np.ndarray) -> None:
        lb = pessimistic(scores, self.reference, self.margin_se)
        if lb > self._chosen_lb + TIE:
            self.chosen, self._chosen_lb = (candidate, scores), lb
        mean = float(np.mean(scores)) if len(scores) else 0.0
        if mean > self._highest_mean + TIE:
            self.highest, self._highest_mean = (candidate, scores), mean

    def result(self) -> Tuned:
        (params, scores), (top, top_scores) = self.chosen, self.highest
        after = float(np.mean(scores)) if len(scores) else 0.0
        return Tuned(params, self.before, after, paired_difference(scores, self.reference),
                     top, paired_difference(top_scores, self.reference))


def walk_grid(grid: Sequence, score, base, margin_se: float, desc: str, progress: bool) -> Tuned:
    """``Pick`` over ``grid``, each candidate scored per image by ``score(candidate)``: the rule
    every detector's search uses."""
    pick = Pick(base, score(base), margin_se)
    for candidate in tqdm(grid, desc=desc, unit="cfg", disable=not progress, file=sys.stderr):
        pick.offer(candidate, score(candidate))
    return pick.result()


# ----------------------------------------------------------------------------- the network's post-processing

@dataclass
class NetworkSample:
    """One validation image: the model's output and the true instances at the evaluation size."""

    pred: Prediction  # pred.orig_hw is the evaluation (H, W)
    gt: list  # (H, W) uint8 masks; [] for authentic


def samples_from_records(model: ExportedModel, data_dir: str, batch_size: int = 32,
                         split: str = "val", progress: bool = True) -> list[NetworkSample]:
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
    samples: list[NetworkSample] = []
    bar = tqdm(desc=f"predict {split}", unit="img", disable=not progress, file=sys.stderr)
    keys, images, maps, masks = [], [], [], []

    def flush():
        probs, scores = model.predict(np.stack(images), np.stack(maps) if evidence else None)
        for k, (key, mask) in enumerate(zip(keys, masks)):
            pred = Prediction(key, mask.shape[:2], probs[k], None if scores is None else float(scores[k]))
            samples.append(NetworkSample(pred, postprocess.union_instances(mask)))
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
                        allow_pickle_masks: bool = False) -> tuple[list[NetworkSample], list[dict]]:
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
            samples.append(NetworkSample(pred, []))
            continue
        try:
            mask = forged_instances(case.image_path, case.mask_path, pred.orig_hw, allow_pickle_masks)
        except BadInput as exc:
            errors.append({"case_id": case.key, "path": exc.path, "reason": exc.reason})
            continue
        samples.append(NetworkSample(pred, list(mask.instances)))
    return samples, sorted(errors, key=lambda e: e["case_id"])


# ----------------------------------------------------------------------------- the network's search

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

    def bars(self, prefer: float) -> list[float]:
        """Candidate image-level bars: ``prefer`` first (it wins ties), 0, never, and the midpoints
        between consecutive evidence values."""
        ev = np.unique(self.evidence[self.has_components])
        return [prefer, 0.0, NEVER] + [float(v) for v in (ev[:-1] + ev[1:]) / 2]


class NetworkEvaluator:
    """Re-post-processes saved model outputs with ``serving.postprocess``; the components of the
    last threshold asked for are cached (the grid runs threshold by threshold)."""

    def __init__(self, samples: Sequence[NetworkSample]):
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

    def scores(self, cfg: PostprocessConfig) -> np.ndarray:
        return self.outcome(cfg.threshold, cfg.min_area, cfg.max_instances).scores(cfg.image_threshold)

    def of1(self, cfg: PostprocessConfig) -> float:
        return float(self.scores(cfg).mean()) if self.samples else 0.0


def search_network(samples: Sequence[NetworkSample], base: PostprocessConfig,
                   thresholds: Sequence[float] = DEFAULT_THRESHOLDS, min_areas: Sequence[int] = DEFAULT_MIN_AREAS,
                   progress: bool = True, margin_se: float = DEFAULT_MARGIN_SE) -> Tuned:
    """The network's post-processing by the rule: ``base`` stays unless a (threshold, min_area,
    image bar) beats it by more than ``margin_se`` standard errors."""
    ev = NetworkEvaluator(samples)
    pick = Pick(base, ev.scores(base), margin_se)
    thresholds = sorted(set(float(t) for t in thresholds) | {base.threshold})
    min_areas = sorted(set(int(a) for a in min_areas) | {base.min_area})
    grid = [(t, a) for t in thresholds for a in min_areas]
    for t, a in tqdm(grid, desc="search network", unit="cfg", disable=not progress, file=sys.stderr):
        outcome = ev.outcome(t, a, base.max_instances)
        for bar in outcome.bars(base.image_threshold):
            pick.offer(replace(base, threshold=t, min_area=a, image_threshold=bar), outcome.scores(bar))
    return pick.result()


# ----------------------------------------------------------------------------- the matcher's decision

# The grid of the matcher's decision parameters (preprocessing.matching.DecisionParams); the
# image-level bar (min_strength) is searched over every distinct strength, as the network's bar is.
MATCHER_MIN_INLIERS = (4, 6, 8, 12, 16, 24)
MATCHER_MIN_CORRELATIONS = (0.55, 0.6, 0.65, 0.7, 0.8, 0.9)
MATCHER_MIN_AREAS = (0.0005, 0.001, 0.002, 0.005, 0.01)
MATCHER_BARS = 8  # candidate image-level bars on a pair's strength (quantiles of the strengths seen)


@dataclass
class MatcherSample:
    """One labelled image: the matcher's Detection (at native resolution) and the true instances."""

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


def cases_by_split(data_dir: str) -> dict[str, list]:
    """The original cases behind each split of the Beam job's records (split -> cases): the matcher
    needs native resolution, which the records (resized to the model size) no longer hold. The
    records name the cases (label and case id); the manifest names the corpus they came from
    (``options.input_dir``), which is read again with ``discover_training_cases``."""
    import tensorflow as tf

    from preprocessing import records, schema
    from preprocessing.constants import LABEL_NAMES

    manifest = records.read_manifest(data_dir)
    corpus = manifest.get("options", {}).get("input_dir")
    if not corpus:
        raise UsageError(f"{data_dir}: the manifest does not name the corpus the records came from")
    cases, _ = discover_training_cases(corpus)
    keys = {k: schema.FEATURES[k] for k in ("case_id", "label")}
    out = {}
    for split in sorted(manifest["files"]):
        src = records.resolve_source(data_dir, split)
        wanted = {f"{LABEL_NAMES[int(r['label'])]}/{r['case_id'].decode()}" for r in tf.data.TFRecordDataset(
            list(src.files), src.compression).map(lambda s: tf.io.parse_single_example(s, keys)).as_numpy_iterator()}
        out[split] = [c for c in cases if c.key in wanted]
        if len(out[split]) < len(wanted):
            raise UsageError(f"{corpus}: {len(wanted) - len(out[split])} of the {split} split's {len(wanted)} cases "
                             "are no longer there")
    return out


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


def search_matcher(samples: Sequence[MatcherSample], base=None, progress: bool = True,
                   margin_se: float = DEFAULT_MARGIN_SE, min_inliers=MATCHER_MIN_INLIERS,
                   min_correlations=MATCHER_MIN_CORRELATIONS, min_areas=MATCHER_MIN_AREAS) -> Tuned:
    """The matcher's decision by the rule: ``base`` (default: ``DecisionParams()``, the defaults)
    stays unless beaten by more than ``margin_se`` standard errors."""
    from preprocessing.matching import DecisionParams

    base = base or DecisionParams()
    ev = MatcherEvaluator(samples)
    grid = [replace(base, min_inliers=i, min_correlation=c, min_area=a, use_dense=d, min_strength=b)
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
                 margin_se: float = DEFAULT_MARGIN_SE) -> Tuned:
    """The fused decision by the rule: ``base`` (default: ``FusedParams()``, the matcher alone)
    stays unless beaten by more than ``margin_se`` standard errors."""
    from serving.fused import FusedParams

    base = base or FusedParams()
    ev = FusedEvaluator(samples, net_cfg)
    confirm = sorted({0.0, base.confirm_bar, *ev.candidate_bars(ev.has_pairs)})
    alone = sorted({NEVER, base.network_only_bar, *ev.candidate_bars(~ev.has_pairs & ev.has_own)})
    grid = [FusedParams(c, s, r, b) for c in confirm for s in sorted({NEVER, base.matcher_sure, *FUSED_MATCHER_SURE})
            for r in sorted({0.0, base.refine_threshold, *FUSED_REFINE}) for b in alone]
    return walk_grid(grid, ev.scores, base, margin_se, "search fused", progress)


# ----------------------------------------------------------------------------- the detectors

def tuning_cases(data_dir: str | None, input_dir: str | None, split: str) -> tuple[dict[str, list], list]:
    """(split -> the cases the matcher is tuned on, the validation cases the detectors are compared
    on), at native resolution. From records: every split for the matcher (never trained, so every
    labelled image is fair), ``split`` for the rest; from a labelled folder: every case, for both."""
    if data_dir:
        by_split = cases_by_split(data_dir)
        if split not in by_split:
            raise UsageError(f"split {split!r} not in {data_dir}'s records (has {sorted(by_split)})")
        return by_split, by_split[split]
    cases, _ = discover_training_cases(input_dir)
    return {"folder": cases}, cases


def choose_detector(scores: dict[str, np.ndarray], margin_se: float = DEFAULT_MARGIN_SE,
                    order: Sequence[str] = SIMPLEST_FIRST) -> tuple[str, list[dict]]:
    """The default detector from each detector's per-image scores on the same validation images:
    ``order`` (simplest first, ``simplest_first``); each more complex one replaces the
    current choice only when it beats it by more than ``margin_se`` standard errors of the paired
    difference. Returns the choice and every comparison made."""
    chosen, steps = order[0], []
    for candidate in order[1:]:
        diff = paired_difference(scores[candidate], scores[chosen])
        won = diff.beats(margin_se)
        steps.append({"candidate": candidate, "against": chosen, "chosen": won, **diff.to_dict()})
        chosen = candidate if won else chosen
    return chosen, steps


def calibrate_detectors(model: ExportedModel, meta: dict, data_dir: str | None, input_dir: str | None,
                        split: str = "val", batch_size: int = 32, progress: bool = True,
                        margin_se: float = DEFAULT_MARGIN_SE, allow_pickle_masks: bool = False,
                        workers: int = 1) -> dict:
    """Tune the matcher's decision (every labelled split), then the fused decision (validation
    images, with the network's output), then choose the default detector on those validation images
    (``choose_detector``). Updates ``meta`` in place (``matcher``, ``fused``, ``detector`` and
    ``calibration.detectors``) and returns the full report."""
    from preprocessing.matching import decide, instances_of
    from serving.matcher import config_for
    from serving.network import predict_items

    by_split, validation = tuning_cases(data_dir, input_dir, split)
    split_of = {c.key: s for s, cases in by_split.items() for c in cases}
    # One detection per image serves the matcher's tuning and, on the validation images of a network
    # that reads the evidence map, that map: only those pay for the dense field's planes.
    field_keys = {c.key for c in validation} if model.uses_evidence else set()
    samples, errors = [], []
    for with_field in (False, True):
        part = [c for cases in by_split.values() for c in cases if (c.key in field_keys) == with_field]
        if part:
            found, bad = matcher_samples(part, config_for(with_field), workers, progress, allow_pickle_masks)
            samples, errors = samples + found, errors + bad
    errors.sort(key=lambda e: e["case_id"])
    if not samples:
        raise UsageError(f"no usable labelled image for the matcher ({len(errors)} skipped)")
    matcher = search_matcher(samples, progress=progress, margin_se=margin_se)
    by_id = {s.case_id: s for s in samples}
    val = [c for c in validation if c.key in by_id]
    preds, pred_errors = predict_items(model, [(c.key, c.image_path) for c in val], batch_size, progress,
                                       {c.key: by_id[c.key].detection for c in val}, workers)
    net_cfg = PostprocessConfig.from_dict(meta.get("postprocess"))
    fused_samples = []
    for pred in preds:
        s = by_id[pred.case_id]
        pairs = decide(s.detection, matcher.params)
        fused_samples.append(FusedSample(pred.case_id, pred, pairs, instances_of(pairs, s.detection.shape), s.gt))
    fused = search_fused(fused_samples, net_cfg, progress=progress, margin_se=margin_se)
    per_image = {
        "network": np.array([image_score(postprocess.instances(f.pred.prob, f.pred.orig_hw, net_cfg,
                                                               f.pred.image_score), f.gt) for f in fused_samples]),
        "matcher": np.array([image_score(f.matcher_instances, f.gt) if f.pairs else float(not f.gt)
                             for f in fused_samples]),
        "fused": FusedEvaluator(fused_samples, net_cfg).scores(fused.params),
    }
    chosen, steps = choose_detector(per_image, margin_se, simplest_first(model.uses_evidence))
    val_errors = [e for e in errors if e["case_id"] in {c.key for c in validation}]
    report = {
        "images": len(fused_samples),
        "skipped": len(val_errors) + len(pred_errors),
        "skipped_cases": sorted(val_errors + pred_errors, key=lambda e: e["case_id"]),
        "margin_se": margin_se,
        "matcher": {"images": len(samples), "skipped": len(errors),
                    "by_split": {s: sum(split_of[m.case_id] == s for m in samples) for s in by_split},
                    **matcher.to_dict()},
        "fused": {"images": len(fused_samples), **fused.to_dict()},
        "validation_oF1": {d: float(v.mean()) if len(v) else 0.0 for d, v in per_image.items()},
        "choice": steps,
        "detector": chosen,
    }
    meta.update(matcher=matcher.params.to_dict(), fused=fused.params.to_dict(), detector=chosen)
    meta.setdefault("calibration", {})["detectors"] = {k: v for k, v in report.items() if k != "skipped_cases"}
    return report
