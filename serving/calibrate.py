"""Choose the post-processing that maximises oF1 on validation data, and store it in metadata.json.

    python -m serving.calibrate --model_dir MODEL_DIR --data_dir RECORDS_DIR    # the Beam job's val split
    python -m serving.calibrate --model_dir MODEL_DIR --input_dir DATA          # competition layout + masks

The search is ``serving.calibration``'s. The chosen values are printed before metadata.json is
replaced (in one rename); metadata.json must be writable before any work starts. serving.score then
uses them by default.
"""
from __future__ import annotations

import json
import sys

import numpy as np
from absl import flags

from preprocessing import cli, fileio, hyperparams, outputs
from preprocessing.errors import UsageError
from serving.metric import image_score

FLAGS = flags.FLAGS


def define_flags() -> None:
    from serving.calibration import DEFAULT_MARGIN_SE, DEFAULT_MIN_AREAS, DEFAULT_THRESHOLDS

    cli.define_model_dir()
    flags.DEFINE_string("data_dir", None, "The Beam job's output (manifest.json + TFRecords).")
    flags.DEFINE_string("input_dir", None, "Or: labelled images + masks in the competition layout.")
    flags.DEFINE_string("split", "val", "Which records split to calibrate on (with --data_dir).")
    flags.DEFINE_integer("batch_size", 32, hyperparams.HELP["batch_size"], lower_bound=1)
    flags.DEFINE_list("thresholds", [str(t) for t in DEFAULT_THRESHOLDS], "Pixel thresholds to try (0..1).")
    flags.DEFINE_list("min_areas", [str(a) for a in DEFAULT_MIN_AREAS], "Minimum areas (model px) to try (>= 0).")
    flags.DEFINE_float("margin_se", DEFAULT_MARGIN_SE, "Move off the current values only when the validation gain "
                       "exceeds this many standard errors of the per-image difference (0: any gain).",
                       lower_bound=0.0)
    cli.define_shared("allow_pickle_masks")
    flags.DEFINE_bool("dry_run", False, "Print the result without writing metadata.json.")
    flags.DEFINE_bool("detectors", True, "Also tune the matcher's decision and the fused decision on the same "
                      "validation images at native resolution, and record the detector that scores best there "
                      "(serving.score --detector auto uses it).")
    cli.define_workers()


def grid_from_flags() -> tuple[list[float], list[int]]:
    try:
        thresholds = [float(t) for t in FLAGS.thresholds]
        min_areas = [int(a) for a in FLAGS.min_areas]
    except ValueError as exc:
        raise UsageError(f"--thresholds / --min_areas: {exc}") from exc
    if not thresholds or any(not 0.0 <= t <= 1.0 for t in thresholds):
        raise UsageError(f"--thresholds must be values in [0, 1], got {FLAGS.thresholds}")
    if not min_areas or any(a < 0 for a in min_areas):
        raise UsageError(f"--min_areas must be integers >= 0, got {FLAGS.min_areas}")
    return thresholds, min_areas


def calibrate(model_dir: str, data_dir: str | None = None, input_dir: str | None = None, split: str = "val",
              batch_size: int = 32, thresholds=None, min_areas=None, write: bool = True, progress: bool = True,
              margin_se: float | None = None, allow_pickle_masks: bool = False, stream=sys.stdout,
              detectors: bool = False, workers: int = 1) -> dict:
    """Run the network's search, print the result, and (unless ``write`` is False) store it in
    metadata.json; with ``detectors``, then also the matcher's and the fused decision's
    (``calibrate_detectors``), recording the detector that scores best on this validation data."""
    from serving import calibration
    from serving.saved_model import METADATA_FILE, load, read_metadata, write_metadata

    if bool(data_dir) == bool(input_dir):
        raise UsageError("give exactly one of --data_dir (records) or --input_dir (images + masks)")
    thresholds = calibration.DEFAULT_THRESHOLDS if thresholds is None else thresholds
    min_areas = calibration.DEFAULT_MIN_AREAS if min_areas is None else min_areas
    margin_se = calibration.DEFAULT_MARGIN_SE if margin_se is None else margin_se
    model = load(model_dir)
    meta_path = fileio.join(model.export_dir, METADATA_FILE)
    if write:  # before the work: the result must not be lost at the last step
        outputs.check_file(meta_path, overwrite=True, what="metadata")
    errors: list[dict] = []
    if data_dir:
        samples = calibration.samples_from_records(model, data_dir, batch_size, split, progress)
    else:
        samples, errors = calibration.samples_from_folder(model, input_dir, batch_size, progress, allow_pickle_masks)
    if not samples:
        raise UsageError(f"no usable validation image in {data_dir or input_dir} ({len(errors)} skipped)")
    base = model.postprocess
    best, before, after = calibration.search(samples, base, thresholds, min_areas, progress, margin_se)
    report = {
        "images": len(samples),
        "forged": sum(bool(s.gt) for s in samples),
        "skipped": len(errors),
        "skipped_cases": errors,
        "data": fileio.absolute(data_dir or input_dir),
        "split": split if data_dir else "folder",
        "oF1_before": before,
        "oF1_after": after,
        "margin_se": margin_se,
        "before": base.to_dict(),
        "after": best.to_dict(),
    }
    print_report(report, stream)
    meta = read_metadata(model.export_dir)
    meta["postprocess"] = best.to_dict()
    meta["calibration"] = {k: v for k, v in report.items() if k not in ("before", "after", "skipped_cases")}
    if detectors:
        report["detectors"] = calibrate_detectors(model, meta, data_dir, input_dir, split, batch_size, progress,
                                                  margin_se, allow_pickle_masks, workers, stream)
    if write:
        write_metadata(model.export_dir, meta)
        print(f"  written to {meta_path}", file=stream)
    return report


def validation_cases(data_dir: str | None, input_dir: str | None, split: str):
    """The labelled cases the matcher and the fused decision are tuned on, at native resolution."""
    from preprocessing.cases import discover_training_cases
    from serving import calibration

    if data_dir:
        return calibration.cases_of_split(data_dir, split)
    return discover_training_cases(input_dir)[0]


def calibrate_detectors(model, meta: dict, data_dir, input_dir, split: str, batch_size: int, progress: bool,
                        margin_se: float, allow_pickle_masks: bool, workers: int, stream=sys.stdout) -> dict:
    """Tune the matcher's decision parameters, then the fused decision, on the same validation
    images at native resolution; score the three detectors there with the chosen values and record
    the best as ``meta["detector"]`` (ties go to the simpler one). Updates ``meta`` in place."""
    from preprocessing.matching import DecisionParams, decide, instances_of
    from serving import calibration, postprocess
    from serving.detectors import DETECTORS
    from serving.fused import FusedParams
    from serving.network import predict_items

    cases = validation_cases(data_dir, input_dir, split)
    samples, errors = calibration.matcher_samples(cases, workers=workers, progress=progress,
                                                  allow_pickle_masks=allow_pickle_masks)
    if not samples:
        raise UsageError(f"no usable validation image for the matcher ({len(errors)} skipped)")
    base = DecisionParams.from_dict(meta.get("matcher"))
    matcher_params, m_before, m_after = calibration.search_matcher(samples, base, progress, margin_se)
    by_id = {s.case_id: s for s in samples}
    detections = {s.case_id: s.detection for s in samples}
    items = [(c.key, c.image_path) for c in cases if c.key in by_id]
    preds, pred_errors = predict_items(model, items, batch_size, progress, detections, workers)
    net_cfg = postprocess.PostprocessConfig.from_dict(meta.get("postprocess"))
    fused_samples = []
    for pred in preds:
        s = by_id[pred.case_id]
        pairs = decide(s.detection, matcher_params)
        fused_samples.append(calibration.FusedSample(pred.case_id, pred, pairs,
                                                     instances_of(pairs, s.detection.shape), s.gt))
    fused_base = FusedParams.from_dict(meta.get("fused"))
    fused_params, f_before, f_after = calibration.search_fused(fused_samples, net_cfg, fused_base, progress,
                                                               margin_se)
    scores = {
        "network": float(np.mean([image_score(postprocess.instances(f.pred.prob, f.pred.orig_hw, net_cfg,
                                                                    f.pred.image_score), f.gt)
                                  for f in fused_samples])),
        "matcher": float(np.mean([image_score(f.matcher_instances, f.gt) if f.pairs else float(not f.gt)
                                  for f in fused_samples])),
        "fused": f_after,
    }
    chosen = max(DETECTORS, key=lambda d: (round(scores[d], 12), -DETECTORS.index(d)))
    report = {"images": len(fused_samples), "skipped": len(errors) + len(pred_errors),
              "skipped_cases": sorted(errors + pred_errors, key=lambda e: e["case_id"]),
              "matcher": {"oF1_before": m_before, "oF1_after": m_after, "after": matcher_params.to_dict()},
              "fused": {"oF1_before": f_before, "oF1_after": f_after, "after": fused_params.to_dict()},
              "validation_oF1": scores, "detector": chosen}
    print(f"detectors on {report['images']} validation images at native resolution "
          f"({report['skipped']} skipped):", file=stream)
    print(f"  matcher decision: oF1 {m_before:.4f} -> {m_after:.4f}  {matcher_params.to_dict()}", file=stream)
    print(f"  fused decision:   oF1 {f_before:.4f} -> {f_after:.4f}  {fused_params.to_dict()}", file=stream)
    print("  validation oF1: " + ", ".join(f"{d} {scores[d]:.4f}" for d in DETECTORS)
          + f"; default detector: {chosen}", file=stream, flush=True)
    meta.update(matcher=matcher_params.to_dict(), fused=fused_params.to_dict(), detector=chosen)
    meta["calibration"]["detectors"] = {k: v for k, v in report.items() if k != "skipped_cases"}
    return report


def print_report(report: dict, stream=sys.stdout) -> None:
    print(f"calibrated on {report['images']} images ({report['forged']} forged, {report['skipped']} skipped) "
          f"from {report['data']}", file=stream)
    for err in report["skipped_cases"]:
        print(f"  skipped {err['case_id']}: {err['path']}: {err['reason']}", file=stream)
    print(f"  before: oF1 {report['oF1_before']:.4f}  {report['before']}", file=stream)
    print(f"  after:  oF1 {report['oF1_after']:.4f}  {report['after']}", file=stream, flush=True)


def main(argv):
    del argv
    thresholds, min_areas = grid_from_flags()
    report = calibrate(FLAGS.model_dir, FLAGS.data_dir, FLAGS.input_dir, FLAGS.split, FLAGS.batch_size,
                       thresholds, min_areas, write=not FLAGS.dry_run, margin_se=FLAGS.margin_se,
                       allow_pickle_masks=FLAGS.allow_pickle_masks, detectors=FLAGS.detectors,
                       workers=FLAGS.workers)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
