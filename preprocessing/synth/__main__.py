"""Write a synthetic copy-move dataset in the competition layout (more: the package docstring).

    python -m preprocessing.synth --output_dir DIR [--num_train 200] [--num_test 50] [--seed 0]
        [--style mixed|figures|photos] [--min_size 100] [--max_size 1500] [--overwrite]
"""
from __future__ import annotations

from absl import flags

from preprocessing import cli
from preprocessing.synth.dataset import SynthConfig, generate

FLAGS = flags.FLAGS


def main(argv):
    del argv
    cfg = cli.from_flags(SynthConfig)
    s = generate(FLAGS.output_dir, cfg.num_train, cfg.num_test, cfg.seed, cfg.min_size, cfg.max_size,
                 style=cfg.style, overwrite=FLAGS.overwrite, sources=cfg.sources)
    train, test = s["train"], s["test"]
    print(f"wrote {FLAGS.output_dir}: train {train['images']} images ({train['forged']} forged, {train['authentic']} "
          f"authentic, {train['pairs']} forged/authentic pairs), test {test['images']} ({test['forged']} forged), "
          f"{s['operations']} copy-moves")


def define_flags() -> None:
    flags.DEFINE_string("output_dir", None, "Where to write the dataset.", required=True)
    cli.define_flags(SynthConfig)
    cli.define_overwrite()


if __name__ == "__main__":
    define_flags()
    cli.run(main)
