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

from absl import flags

from preprocessing import cli, fileio, outputs
from preprocessing.errors import UsageError

FLAGS = flags.FLAGS


def define_flags() -> None:
    from serving.calibration import DEFAULT_MARGIN_SE, DEFAULT_MIN_AREAS, DEFAULT_THRESHOLDS

    cli.define_model_dir()
    flags.DEFINE_string("data_dir", None, "The Beam job's output (manifest.json + TFRecords).")
    flags.DEFINE_string("input_dir", None, "Or: labelled images + masks in the competition layout.")
    flags.DEFINE_string("split", "val", "Which records split to calibrate on (with --data_dir).")
    flags.DEFINE_integer("batch_size", 32, cli.HELP["batch_size"], lower_bound=1)
    flags.DEFINE_list("thresholds", [str(t) for t in DEFAULT_THRESHOLDS], "Pixel thresholds to try (0..1).")
    flags.DEFINE_list("min_areas", [str(a) for a in DEFAULT_MIN_AREAS], "Minimum areas (model px) to try (>= 0).")
    flags.DEFINE_float("margin_se", DEFAULT_MARGIN_SE, "Move off the current values only when the validation gain "
                       "exceeds this many standard errors of the per-image difference (0: any gain).",
                       lower_bound=0.0)
    cli.define_shared("allow_pickle_masks")
    flags.DEFINE_bool("dry_run", False, "Print the result without writing metadata.json.")


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
              margin_se: float | None = None, allow_pickle_masks: bool = False, stream=sys.stdout) -> dict:
    """Run the search, print the result, and (unless ``write`` is False) store it in metadata.json."""
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
    if write:
        meta = read_metadata(model.export_dir)
        meta["postprocess"] = best.to_dict()
        meta["calibration"] = {k: v for k, v in report.items() if k not in ("before", "after", "skipped_cases")}
        write_metadata(model.export_dir, meta)
        print(f"  written to {meta_path}", file=stream)
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
                       allow_pickle_masks=FLAGS.allow_pickle_masks)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
