"""Batch scoring as a Beam pipeline (RunInference), for corpora that need a cluster.

    python -m serving.beam_score --model_dir MODEL_DIR --input_dir IMAGES --output submission.csv \
        [--batch_size 16] [--threshold T] [--min_area A] [--strict] [--overwrite] [Beam pipeline options...]

Same flags, decoding, model, post-processing and CSV as serving.score, so the output is identical
on the same images; the pipeline is ``serving.beam_scoring``. Flags this module does not know are
handed to Beam. Both output files are written under temporary names and renamed when the job has
finished; the output paths are checked before any work (``preprocessing.outputs``).
"""
from __future__ import annotations

from absl import flags

from preprocessing import cli
from serving.score import check_paths, define_flags, flag_postprocess

FLAGS = flags.FLAGS


def main(argv):
    from serving import beam_scoring  # Beam and TensorFlow: only now, after logging is set up
    from serving.saved_model import export_dir_of, read_metadata
    from serving.submission import ScoreResult, report

    output, items = check_paths()
    meta = read_metadata(export_dir_of(FLAGS.model_dir))
    cfg, note = flag_postprocess(meta)
    print(f"model {export_dir_of(FLAGS.model_dir)}, post-processing {cfg.to_dict()}, Beam options {argv[1:]}")
    if note:
        print(note)
    errors = beam_scoring.run(FLAGS.model_dir, FLAGS.input_dir, output, FLAGS.batch_size, cfg, argv[1:], items=items)
    return report(output, ScoreResult(beam_scoring.read_rows(output), errors), FLAGS.strict)


def parse_flags(argv: list[str]) -> list[str]:
    """absl takes its flags; everything else is left for Beam's PipelineOptions."""
    return FLAGS(argv, known_only=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main, flags_parser=parse_flags)
