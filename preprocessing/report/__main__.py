"""Dataset report: the exploratory analysis before training, as one HTML page (more: the package docstring).

    python -m preprocessing.report --input_dir DATA --output_dir REPORT [--max_images N] [--allow_pickle_masks]
        [--overwrite]
"""
from __future__ import annotations

import json
import os

from absl import flags

from preprocessing import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The dataset report's flags (``serving.report`` defines these plus its own)."""
    from preprocessing.report.collect import Options

    flags.DEFINE_string("input_dir", None, "Dataset root in the competition layout.", required=True)
    flags.DEFINE_string("output_dir", None, "Where index.html and the figures are written.", required=True)
    cli.define_flags(Options)
    cli.define_overwrite()


def main(argv, extensions=()) -> None:
    from preprocessing.report.build import build_report
    from preprocessing.report.collect import Options

    del argv
    stats = build_report(FLAGS.input_dir, FLAGS.output_dir, cli.from_flags(Options), extensions, FLAGS.overwrite)
    print(os.path.join(FLAGS.output_dir, "index.html"))
    print(json.dumps({"counts": stats["counts"], "problems_by_tag": stats["problems_by_tag"]}))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
