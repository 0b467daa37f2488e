"""Batch scoring as a Beam pipeline (RunInference), for corpora that need a cluster.

    python -m serving.beam_score [--model_dir MODEL_DIR] --input_dir IMAGES --output submission.csv
        [--detector auto|network|matcher|fused] [--batch_size 16] [--threshold T] [--min_area A]
        [--strict] [--overwrite] [Beam pipeline options...]

Same flags, detectors, decoding, model, post-processing and files as serving.score, so the output
is identical on the same images (``--workers`` is serving.score's: here Beam's own options set the
parallelism); the pipeline is ``serving.beam_pipeline``. Flags this module does not know are
handed to Beam. Every output file is written under a temporary name and renamed when the job has
finished; the output paths are checked before any work (``preprocessing.outputs``).
"""
from __future__ import annotations

from absl import flags

from preprocessing import cli
from serving.score import check_paths, define_flags, settings_from_flags

FLAGS = flags.FLAGS


def main(argv):
    from preprocessing.beam_runner import quiet_local_workers, quiet_worker_stderr
    from serving import beam_pipeline  # Beam and TensorFlow: only now, after logging is set up
    from serving.submission import ScoreResult, report

    output, items, refused = check_paths()
    detector, settings = settings_from_flags()
    print(f"Beam options {argv[1:]}")
    pipeline_args = quiet_local_workers(argv[1:], FLAGS.verbose_logs)
    with quiet_worker_stderr(enabled=not FLAGS.verbose_logs):
        errors = beam_pipeline.run(FLAGS.model_dir, FLAGS.input_dir, output, FLAGS.batch_size, None, pipeline_args,
                                   items=items, detector=detector, settings=settings,
                                   refused=refused)
    if detector != "network":
        from serving.submission import evidence_path

        print(f"evidence (the matching regions and their transforms): {evidence_path(output)}")
    return report(output, ScoreResult(beam_pipeline.read_rows(output), errors), FLAGS.strict)


def parse_flags(argv: list[str]) -> list[str]:
    """absl takes its flags; everything else is left for Beam's PipelineOptions."""
    return FLAGS(argv, known_only=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main, flags_parser=parse_flags)
