"""Batch scoring: a folder of images -> the competition submission.csv.

    python -m serving.score --model_dir MODEL_DIR --input_dir IMAGES --output submission.csv \
        [--batch_size 16] [--threshold T] [--min_area A] [--image_threshold B] [--strict] [--overwrite]

Loads MODEL_DIR/export with ``tf.saved_model.load`` (no trainer code) and takes its post-processing
from metadata.json (written by training, tuned by serving.calibrate); a flag overrides one value.
Every image gets a row: a file that cannot be read is scored ``authentic`` and listed with its
reason in ``<output stem>.errors.jsonl``. The output paths are checked before any work
(``preprocessing.outputs``).
"""
from __future__ import annotations

from typing import Optional

from absl import flags

from preprocessing import cli, outputs
from preprocessing.errors import UsageError
from serving.postprocess import PostprocessConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags serving.score and serving.beam_score share."""
    cli.define_model_dir()
    flags.DEFINE_string("input_dir", None, "Folder of images (or a dataset root with test_images/).", required=True)
    flags.DEFINE_string("output", "submission.csv", "Submission CSV to write (errors go to <stem>.errors.jsonl).")
    flags.DEFINE_integer("batch_size", 16, cli.HELP["batch_size"], lower_bound=1)
    cli.define_override_flags(PostprocessConfig, default_from="the export's metadata.json")
    flags.DEFINE_bool("strict", False, "Exit non-zero if any file could not be read.")
    flags.DEFINE_bool("allow_empty", False, "Accept an input folder without images (writes a header-only CSV).")
    cli.define_overwrite()


def check_paths() -> tuple[str, list[tuple[str, str]]]:
    """Before any work: the output may be written without destroying anything, and there are images
    to score. Returns the absolute output path and the (case_id, path) items."""
    from preprocessing.cases import discover_test_images

    protected = {"input directory": FLAGS.input_dir, "model directory": FLAGS.model_dir}
    output = outputs.check_file(FLAGS.output, overwrite=FLAGS.overwrite, protected=protected)
    from serving.submission import errors_path

    outputs.check_file(errors_path(output), overwrite=FLAGS.overwrite, protected=protected, what="error list")
    items = discover_test_images(FLAGS.input_dir)
    if not items and not FLAGS.allow_empty:
        raise UsageError(f"--input_dir {FLAGS.input_dir} holds no image (.png, .jpg, .jpeg, .tif, .tiff); "
                         "pass --allow_empty if an empty submission is what you want")
    return output, items


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


def main(argv):
    del argv
    output, items = check_paths()
    from serving import network, submission  # TensorFlow: only now, after the log level is set
    from serving.saved_model import load

    model = load(FLAGS.model_dir)
    cfg, note = flag_postprocess(model.metadata)
    print(f"model {model.export_dir} (input {model.image_size} px), post-processing {cfg.to_dict()}")
    if note:
        print(note)
    result = network.score_images(model, FLAGS.input_dir, FLAGS.batch_size, cfg, items=items)
    submission.write_outputs(output, result.rows, result.errors)
    return submission.report(output, result, FLAGS.strict)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
