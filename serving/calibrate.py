"""Tune the detectors' decisions on labelled data and store them in the export's metadata.json.

    python -m serving.calibrate --model_dir MODEL_DIR --data_dir RECORDS_DIR    # the Beam job's val split
    python -m serving.calibrate --model_dir MODEL_DIR --input_dir DATA          # competition layout + masks

The searches and the rule they share are ``serving.tuning``'s: the network's post-processing on
the validation split, the matcher's decision on every labelled split (it was never trained), the
fused decision and the default detector on the validation split; nothing moves unless it beats the
current choice by more than ``--margin_se`` standard errors of the per-image paired difference. The
result is printed as ``key: value`` lines (each move's paired difference and its standard error)
before metadata.json is replaced (in one rename), with the full report under its ``calibration``
key; metadata.json must be writable before any work starts. serving.score then uses them by default.
"""
from __future__ import annotations

import json
import sys

from absl import flags

from preprocessing import cli, fileio, hyperparams, outputs
from preprocessing.errors import UsageError

FLAGS = flags.FLAGS


def define_flags() -> None:
    from serving.tuning import DEFAULT_MARGIN_SE, DEFAULT_MIN_AREAS, DEFAULT_THRESHOLDS

    cli.define_model_dir()
    flags.DEFINE_string("data_dir", None, "The Beam job's output (manifest.json + TFRecords); the original images "
                        "are found again in the corpus folder its manifest names.")
    flags.DEFINE_string("input_dir", None, "Or: labelled images + masks in the competition layout.")
    flags.DEFINE_string("split", "val", "The records split the network, the fused decision and the default detector "
                        "are judged on (with --data_dir); the matcher is tuned on every split.")
    flags.DEFINE_integer("batch_size", 32, hyperparams.HELP["batch_size"], lower_bound=1)
    flags.DEFINE_list("thresholds", [str(t) for t in DEFAULT_THRESHOLDS], "Pixel thresholds to try (0..1).")
    flags.DEFINE_list("min_areas", [str(a) for a in DEFAULT_MIN_AREAS], "Minimum areas (model px) to try (>= 0).")
    flags.DEFINE_float("margin_se", DEFAULT_MARGIN_SE, "Move off the current values (or the simpler detector) only "
                       "when the gain exceeds this many standard errors of the per-image paired difference "
                       "(0: any gain).",
                       lower_bound=0.0)
    cli.define_shared("allow_pickle_masks")
    flags.DEFINE_bool("dry_run", False, "Print the result without writing metadata.json.")
    flags.DEFINE_bool("detectors", True, "Also tune the matcher's decision (on every labelled split: it is never "
                      "trained) and the fused decision (on the validation images) at native resolution, and "
                      "choose the default detector (serving.score --detector auto uses it).")
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
    metadata.json; with ``detectors``, then also the matcher's and the fused decision's and the
    choice of the default detector (``serving.tuning.calibrate_detectors``)."""
    from serving import tuning
    from serving.saved_model import METADATA_FILE, load, read_metadata, write_metadata

    if bool(data_dir) == bool(input_dir):
        raise UsageError("give exactly one of --data_dir (records) or --input_dir (images + masks)")
    thresholds = tuning.DEFAULT_THRESHOLDS if thresholds is None else thresholds
    min_areas = tuning.DEFAULT_MIN_AREAS if min_areas is None else min_areas
    margin_se = tuning.DEFAULT_MARGIN_SE if margin_se is None else margin_se
    model = load(model_dir)
    meta_path = fileio.join(model.export_dir, METADATA_FILE)
    if write:  # before the work: the result must not be lost at the last step
        outputs.check_file(meta_path, overwrite=True, what="metadata",
                           protected={"--data_dir": data_dir, "--input_dir": input_dir})
    errors: list[dict] = []
    if data_dir:
        samples = tuning.samples_from_records(model, data_dir, batch_size, split, progress)
    else:
        samples, errors = tuning.samples_from_folder(model, input_dir, batch_size, progress, allow_pickle_masks)
    if not samples:
        raise UsageError(f"no usable validation image in {data_dir or input_dir} ({len(errors)} skipped)")
    base = model.postprocess
    network = tuning.search_network(samples, base, thresholds, min_areas, progress, margin_se)
    report = {
        "images": len(samples),
        "forged": sum(bool(s.gt) for s in samples),
        "skipped": len(errors),
        "skipped_cases": errors,
        "data": fileio.absolute(data_dir or input_dir),
        "split": split if data_dir else "folder",
        "margin_se": margin_se,
        "before": base.to_dict(),
        **network.to_dict(),
    }
    print_report(report, stream)
    meta = read_metadata(model.export_dir)
    meta["postprocess"] = network.params.to_dict()
    meta["calibration"] = {k: v for k, v in report.items() if k not in ("before", "after", "skipped_cases")}
    if detectors:
        report["detectors"] = tuning.calibrate_detectors(model, meta, data_dir, input_dir, split, batch_size,
                                                         progress, margin_se, allow_pickle_masks, workers)
        print_detectors(report["detectors"], stream)
    if write:
        write_metadata(model.export_dir, meta)
        print(f"written to: {meta_path}", file=stream)
    return report


def _difference(d: dict) -> str:
    """A paired difference as one short phrase: mean +- SE (in SEs)."""
    in_se = "" if d["in_se"] is None else f", {d['in_se']:+.1f} SE"
    return f"{d['mean_difference']:+.4f} +- {d['se']:.4f}{in_se} over {d['images']} images"


def _search_lines(name: str, r: dict) -> list[str]:
    """``key: value`` lines of one search: before/after, the chosen move and the highest candidate."""
    moved = r["difference"]["mean_difference"] != 0 or r["difference"]["se"] != 0  # exactly 0 when kept
    lines = [f"{name} oF1: {r['oF1_before']:.4f} -> {r['oF1_after']:.4f}"
             + ("" if moved else " (kept: nothing beats it by the margin)")]
    if moved:
        lines.append(f"{name} paired difference: {_difference(r['difference'])}")
    lines.append(f"{name} highest candidate: oF1 {r['highest']['oF1']:.4f}, "
                 f"{_difference(r['highest']['difference'])}")
    return lines


def print_report(report: dict, stream=sys.stdout) -> None:
    print(f"calibrated on: {report['images']} images ({report['forged']} forged, {report['skipped']} skipped) "
          f"from {report['data']}", file=stream)
    for err in report["skipped_cases"]:
        print(f"  skipped {err['case_id']}: {err['path']}: {err['reason']}", file=stream)
    print(f"margin: {report['margin_se']} standard errors of the per-image paired difference", file=stream)
    print(f"network before: {cli.settings_text(report['before'])}", file=stream)
    print(f"network after:  {cli.settings_text(report['after'])}", file=stream)
    print("\n".join(_search_lines("network", report)), file=stream, flush=True)


def print_detectors(report: dict, stream=sys.stdout) -> None:
    """The detectors' calibration as ``key: value`` lines; the full report is in metadata.json."""
    m = report["matcher"]
    splits = ", ".join(f"{n} {s}" for s, n in m["by_split"].items())
    lines = [f"matcher tuned on: {m['images']} labelled images ({splits}; {m['skipped']} skipped)",
             *_search_lines("matcher", m), f"matcher after: {cli.settings_text(m['after'])}",
             f"detectors compared on: {report['images']} validation images ({report['skipped']} skipped)",
             *_search_lines("fused", report["fused"]), f"fused after: {cli.settings_text(report['fused']['after'])}",
             "validation oF1: " + ", ".join(f"{d} {v:.4f}" for d, v in report["validation_oF1"].items())]
    for step in report["choice"]:
        verdict = "chosen" if step["chosen"] else "not chosen"
        lines.append(f"{step['candidate']} vs {step['against']}: {_difference(step)} -> {verdict}")
    lines.append(f"default detector: {report['detector']}")
    print("\n".join(lines), file=stream, flush=True)


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
