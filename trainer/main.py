"""Train the copy-move segmentation model: ``python -m trainer.main --data_dir OUT --model_dir M``.

Reads the Beam job's output (image size and file patterns come from its
manifest.json), trains under a tf.distribute strategy with the seed's schedule
(Adam, ReduceLROnPlateau, EarlyStopping), keeps the best weights by validation
oF1, and exports MODEL_DIR/export/ (SavedModel + metadata.json). Relaunching the
same command after a kill resumes from the last finished epoch.

Defaults suit a GPU (width 32, depth 4, batch 16, 50 epochs). On a CPU, e.g.:
  --width=8 --depth=3 --batch_size=8 --epochs=10 --max_minutes=20
"""
from __future__ import annotations

import json
import os

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Output directory of preprocessing.main (has manifest.json).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and export/ go.")
flags.DEFINE_integer("epochs", 50, "Maximum epochs (early stopping may end sooner).")
flags.DEFINE_integer("batch_size", 16, "Global batch size (split across replicas).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam's initial learning rate.")
flags.DEFINE_enum("loss", "bce_dice", ["bce_dice", "tversky", "dice", "focal", "bce"],
                  "Mask loss. tversky is the seed's (alpha 0.1, beta 0.9); it collapses to all-forged.")
flags.DEFINE_float("image_loss_weight", 1.0, "Weight of the image-level head's BCE.")
flags.DEFINE_enum("arch", "unet", ["unet", "seed"], "unet: this project's; seed: the notebook's tiny network.")
flags.DEFINE_integer("width", 32, "Filters at full resolution (doubled per level).")
flags.DEFINE_integer("depth", 4, "Number of downsamplings.")
flags.DEFINE_bool("self_correlation", True, "Self-correlation block on the bottleneck features.")
flags.DEFINE_list("correlation_levels", [],
                  "Encoder levels (stride 2**level, e.g. 2) whose features also get a self-correlation fed to "
                  "the decoder (empty: bottleneck only). Off by default: no gain in benchmarks/quality.py.")
flags.DEFINE_bool("match_field", True, "Displacement-consistent patch matches of the image itself "
                  "(trainer.layers.MatchField) fed to every decoder scale and the bottleneck.")
flags.DEFINE_integer("match_size", 128, "Working resolution of --match_field (cost is independent of image size).")
flags.DEFINE_float("bn_momentum", 0.9, "BatchNorm moving-average momentum (Keras' 0.99 lags hundreds of steps).")
flags.DEFINE_bool("image_head", True, "Image-level forged/authentic head on the bottleneck (gates post-processing).")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "auto: mixed_float16 on tensor-core GPUs, mixed_bfloat16 on bf16 CPUs, else float32.")
flags.DEFINE_enum("strategy", "auto", ["auto", "mirrored", "multi_worker", "one_device"],
                  "auto: multi_worker if TF_CONFIG is set, mirrored with several devices, else one_device.")
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into N logical devices (test the distributed path).")
flags.DEFINE_float("max_minutes", 0.0, "Stop cleanly after this many minutes (0: no limit).")
flags.DEFINE_integer("seed", 42, "Random seed.")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch (0: one pass over the training split).")
flags.DEFINE_float("forged_fraction", 0.0, "Sample forged images with this probability (0: natural mix).")
flags.DEFINE_string("monitor", "val_of1", "Metric that picks the best checkpoint (exported at the end).")
flags.DEFINE_integer("early_stopping_start", 10, "Epochs before early stopping (patience 5 on val_loss) may act.")
flags.DEFINE_bool("jpeg_augment", True, "Random JPEG recompression of training images.")
flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.")
flags.DEFINE_integer("exit_after_epoch", 0, "Testing aid: exit hard after this epoch, as if killed.")
flags.mark_flags_as_required(["data_dir", "model_dir"])


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.WARNING)  # tf.distribute logs every all-reduce at INFO
    from trainer import train  # imports TensorFlow

    train.split_cpu(FLAGS.cpu_replicas)  # must precede anything that initialises the devices
    from trainer.model import ModelConfig

    cfg = train.TrainConfig(
        data_dir=FLAGS.data_dir, model_dir=FLAGS.model_dir,
        model=ModelConfig(arch=FLAGS.arch, width=FLAGS.width, depth=FLAGS.depth,
                          self_correlation=FLAGS.self_correlation, image_head=FLAGS.image_head,
                          correlation_levels=tuple(int(v) for v in FLAGS.correlation_levels),
                          match_field=FLAGS.match_field, match_size=FLAGS.match_size,
                          bn_momentum=FLAGS.bn_momentum),
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, loss=FLAGS.loss,
        image_loss_weight=FLAGS.image_loss_weight, precision=FLAGS.precision, strategy=FLAGS.strategy,
        max_minutes=FLAGS.max_minutes, seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch,
        forged_fraction=FLAGS.forged_fraction, monitor=FLAGS.monitor, jpeg_augment=FLAGS.jpeg_augment,
        early_stopping_start=FLAGS.early_stopping_start,
        verbose=FLAGS.verbose, exit_after_epoch=FLAGS.exit_after_epoch)
    result = train.run(cfg)
    summary = {k: v for k, v in result.items() if not k.endswith("_obj") and k != "export_model"}
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    app.run(main)
