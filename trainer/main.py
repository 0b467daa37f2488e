"""Train the copy-move segmentation model: ``python -m trainer.main --data_dir RECORDS --model_dir M``.

Reads the Beam job's output (image size and files from its manifest.json), trains under a
tf.distribute strategy with the seed's schedule (Adam, ReduceLROnPlateau, EarlyStopping), keeps the
best weights by validation oF1, and exports MODEL_DIR/export/ (SavedModel + metadata.json). The
resolved configuration is written to MODEL_DIR/config.json; ``--config M/config.json`` repeats that
run (flags given on the command line still win). Relaunching the same command after a kill resumes
from the last finished epoch; relaunching a finished run says so.

Every flag but --config and --verbose_logs comes from ``trainer.config.TrainConfig`` / ``ModelConfig``,
where its default is written. Defaults suit a GPU; on a CPU, e.g.:
  --width=8 --depth=3 --batch_size=8 --epochs=10 --max_minutes=20
"""
from __future__ import annotations

import json

from absl import flags

from preprocessing import cli, fileio, outputs
from trainer import config

FLAGS = flags.FLAGS
cli.define_flags(config.TrainConfig)
flags.DEFINE_string("config", None, "A run's config.json to repeat; flags given on the command line override it.")


def resolve(flag_values=FLAGS) -> config.TrainConfig:
    """The flags as a TrainConfig; with --config, that file's values where no flag was given."""
    from_flags = cli.from_flags(config.TrainConfig, flag_values)
    if not flag_values.config:
        return from_flags
    saved = config.load(flag_values.config).to_dict()
    given = {name for name in flag_values if flag_values[name].present}
    for key, value in from_flags.to_dict().items():
        if key == "model":
            saved["model"].update({k: v for k, v in value.items() if k in given})
        elif key in given:
            saved[key] = value
    return config.from_dict(saved)


def main(argv):
    del argv
    cfg = resolve()
    for name in ("data_dir", "model_dir"):
        if not getattr(cfg, name):
            raise cli.UsageError(f"--{name} is required (or --config with a saved run)")
    # The output rule: nothing the trainer writes may land among the records it reads.
    outputs.check_protected(fileio.absolute(cfg.model_dir), "--model_dir", {"--data_dir": cfg.data_dir})
    from trainer import distribute  # TensorFlow: imported only now, after the log level is set

    distribute.split_cpu(cfg.cpu_replicas)  # must precede anything that initialises the devices
    from trainer import train

    result = train.run(cfg)
    print(json.dumps(result.summary(), default=str))


if __name__ == "__main__":
    cli.run(main)
