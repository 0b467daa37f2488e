"""Beam preprocessing job: a competition-layout corpus -> sharded TFRecords + manifest.json + errors.jsonl.

    python -m preprocessing.main --input_dir DATA --output_dir OUT [--num_shards K] [--val_fraction 0.2]
        [--image_size 256] [--encoding png|raw] [--compression gzip|none] [--allow_pickle_masks]
        [--max_pixels N] [--overwrite] [any Beam pipeline option, e.g. --direct_num_workers=1,
        or --runner=FlinkRunner|SparkRunner|DataflowRunner ...]

Flags this module does not know are handed to Beam unchanged; the job itself is
``preprocessing.job.run_pipeline``. Run locally (no --runner), it uses one worker process per core
(``--direct_running_mode=multi_processing --direct_num_workers=<cores>``) unless either option is given.
"""
from __future__ import annotations

import logging
import sys

from absl import flags

from preprocessing import cli
from preprocessing.convert import ConvertConfig, OutputConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("input_dir", None, "Corpus in the competition layout (train_images/, train_masks/, "
                        "optional supplemental_images/ + supplemental_masks/).", required=True)
    flags.DEFINE_string("output_dir", None, "Where the shards, manifest.json and errors.jsonl go.", required=True)
    cli.define_flags(ConvertConfig)
    cli.define_flags(OutputConfig)
    cli.define_overwrite()


def parse(argv: list[str]) -> list[str]:
    """Parse our flags; everything else is a Beam pipeline option (errors: ``cli.run`` reports them)."""
    return FLAGS(argv, known_only=True)


def show_progress_lines() -> None:
    """The job's INFO lines (``preprocessing.*`` loggers, not every worker's) as plain ``preprocess: ...``
    lines on stdout, beside the summary, without absl's timestamp and thread prefix."""
    progress = logging.getLogger("preprocessing")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("preprocess: %(message)s"))
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


def main(argv: list[str]) -> None:
    from preprocessing.beam_runner import quiet_local_workers, quiet_worker_stderr, use_local_cores
    from preprocessing.job import run_pipeline  # Beam: only now, after logging is set up

    show_progress_lines()
    options = {**cli.from_flags(ConvertConfig).__dict__, **cli.from_flags(OutputConfig).__dict__}
    pipeline_args = quiet_local_workers(use_local_cores(argv[1:]), FLAGS.verbose_logs)
    with quiet_worker_stderr(enabled=not FLAGS.verbose_logs):
        run_pipeline(FLAGS.input_dir, FLAGS.output_dir, pipeline_args=pipeline_args, overwrite=FLAGS.overwrite,
                     command=cli.command_line("preprocessing.main"), **options)


if __name__ == "__main__":
    define_flags()
    cli.run(main, flags_parser=parse)
