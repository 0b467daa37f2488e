"""``python -m preprocessing.synth``: write a synthetic dataset (see the package docstring)."""
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
    print(f"wrote {FLAGS.output_dir}: train {s['train']}  test {s['test']}  copy-moves {s['operations']}")


def define_flags() -> None:
    flags.DEFINE_string("output_dir", None, "Where to write the dataset.", required=True)
    cli.define_flags(SynthConfig)
    cli.define_overwrite()


if __name__ == "__main__":
    define_flags()
    cli.run(main)
