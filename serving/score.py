"""Batch scoring: a folder of images -> the competition submission.csv.

    python -m serving.score [--model_dir MODEL_DIR] --input_dir IMAGES --output submission.csv
        [--detector auto|network|matcher|fused] [--workers N] [--batch_size 16]
        [--threshold T] [--min_area A] [--image_threshold B] [--strict] [--allow_empty] [--overwrite]

The detectors are ``serving.detectors``'s: the network (MODEL_DIR/export, loaded with
``tf.saved_model.load``, no trainer code), the native-resolution matcher (no model needed), or the
two fused. Their settings come from metadata.json (written by training, tuned by serving.calibrate,
which also records the detector that scored best on validation data: ``auto``); a post-processing
flag overrides one of the network's values. Every image gets a row: a file that cannot be read is
scored ``authentic`` and listed with its reason in ``<output stem>.errors.jsonl``; the matcher and
the fused detector also write ``<output stem>.evidence.jsonl`` (the matching regions, their transforms and evidence).
The output paths are checked before any work (``preprocessing.outputs``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from absl import flags

from preprocessing import cli, hyperparams, outputs
from preprocessing.errors import UsageError
from serving.postprocess import PostprocessConfig

if TYPE_CHECKING:
    from serving.detectors import Settings

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags serving.score and serving.beam_score share."""
    from serving.detectors import AUTO, DETECTORS

    cli.define_model_dir("MODEL_DIR (with export/) or the export directory itself; not needed by --detector "
                         "matcher.", required=False)
    flags.DEFINE_string("input_dir", None, "Folder of images (or a dataset root with test_images/).", required=True)
    flags.DEFINE_enum("detector", AUTO, [AUTO, *DETECTORS], "auto: the detector the export was calibrated for "
                      "(the matcher without a model); network, matcher (native-resolution matching) or fused.")
    cli.define_workers()
    flags.DEFINE_string("output", "submission.csv", "Submission CSV to write (errors go to <stem>.errors.jsonl).")
    flags.DEFINE_integer("batch_size", 16, hyperparams.HELP["batch_size"], lower_bound=1)
    cli.define_override_flags(PostprocessConfig, default_from="the export's metadata.json")
    flags.DEFINE_bool("strict", False, "Exit non-zero if any file could not be read.")
    flags.DEFINE_bool("allow_empty", False, "Accept an input folder without images (writes a header-only CSV).")
    cli.define_overwrite()


def check_paths() -> tuple[str, list[tuple[str, str]], list[dict]]:
    """Before any work: the output and its side files may be written without destroying anything,
    and there are images to score. Returns the absolute output path, the (case_id, path) items and
    the error records of files discovery refused (same case id twice, a name that is not UTF-8)."""
    from preprocessing.cases import discover_test_images
    from serving.submission import side_files

    protected = {"input directory": FLAGS.input_dir, "model directory": FLAGS.model_dir}
    output = outputs.check_file(FLAGS.output, overwrite=FLAGS.overwrite, protected=protected)
    for what, path in side_files(output).items():
        outputs.check_file(path, overwrite=FLAGS.overwrite, protected=protected, what=what)
    items, problems = discover_test_images(FLAGS.input_dir)
    if not items and not problems and not FLAGS.allow_empty:
        raise UsageError(f"--input_dir {FLAGS.input_dir} holds no image (.png, .jpg, .jpeg, .tif, .tiff); "
                         "pass --allow_empty if an empty submission is what you want")
    return output, items, [p.record() for p in problems]


def calibration_note(metadata: dict, overridden: bool) -> Optional[str]:
    """A warning when the export still carries the seed's post-processing: scoring before
    ``serving.calibrate`` is the easiest way to lose score. None once calibrated or when the user
    set the values."""
    if "calibration" in metadata or overridden:
        return None
    return ("note: this export's post-processing is not calibrated (the seed's threshold 0.45 / min area 32); "
            "run `python -m serving.calibrate --model_dir MODEL_DIR --data_dir RECORDS` first: on validation "
            "data it picks the threshold, minimum area and image-level bar that score best")


def flag_postprocess(metadata: dict) -> tuple[PostprocessConfig, Optional[str]]:
    """What the flags ask for: metadata.json's post-processing with any flag overrides, and the
    calibration note when no flag was set on an uncalibrated export."""
    from dataclasses import replace

    over = cli.overrides_from_flags(PostprocessConfig)
    cfg = replace(PostprocessConfig.from_dict(metadata.get("postprocess")), **over)
    return cfg, calibration_note(metadata, overridden=bool(over))


def settings_from_flags() -> tuple[str, Settings]:
    """(detector, settings) as the flags and the export's metadata.json ask, printed: what
    serving.score and serving.beam_score both run."""
    from dataclasses import replace

    from serving import detectors
    from serving.saved_model import export_dir_of, read_metadata

    meta = read_metadata(export_dir_of(FLAGS.model_dir)) if FLAGS.model_dir else None
    settings = detectors.Settings.from_metadata(meta)
    detector = detectors.resolve(FLAGS.detector, settings, has_model=meta is not None)
    if detector != "matcher":
        cfg, note = flag_postprocess(meta)
        settings = replace(settings, postprocess=cfg)
        print(f"model {export_dir_of(FLAGS.model_dir)} (input {meta['image_size']} px), "
              f"post-processing: {cli.settings_text(cfg.to_dict())}")
        if note:
            print(note)
    print(f"detector {detector}" + (f"; decision: {cli.settings_text(settings.matcher.to_dict())}"
                                    if detector != "network" else "")
          + (f"; fused: {cli.settings_text(settings.fused.to_dict())}" if detector == "fused" else ""))
    return detector, settings


def main(argv):
    del argv
    output, items, refused = check_paths()
    from serving import detectors, submission

    detector, settings = settings_from_flags()
    model = None
    if detector != "matcher":
        from serving.saved_model import load  # TensorFlow: only now, after the log level is set

        model = load(FLAGS.model_dir)
    result, evidence = detectors.score_items(detector, items, model, settings, FLAGS.workers, FLAGS.batch_size)
    result = submission.with_errors(result, refused)
    submission.write_outputs(output, result.rows, result.errors, evidence if detector != "network" else None)
    if detector != "network":
        print(f"evidence (the matching regions and their transforms): {submission.evidence_path(output)}")
    return submission.report(output, result, FLAGS.strict)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
