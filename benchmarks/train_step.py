"""Training throughput side by side: precision x replicas x architecture, in one run.

    python -m benchmarks.train_step [--image_size 128] [--batch_size 8] [--steps 6] [--width 32 --depth 4]

For each of {seed network, default dual-stream U-Net} x {float32, mixed_bfloat16}
x {1 replica, 2 replicas (the CPU split into two logical devices)} it times
``--steps`` training steps (after warm-up steps that pay for tracing) of the real
train_step (on-device flips, BCE+Dice, image-head BCE) on in-memory random
batches, and prints images/s, parameters and forward GFLOPs per image (counted
by TensorFlow's profiler on the inference graph). On a GPU machine the
``mixed_float16`` rows are added and replicas are GPUs.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 128, "Square image size.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("steps", 6, "Timed steps per configuration.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing).")
flags.DEFINE_integer("width", 32, "Default U-Net width.")
flags.DEFINE_integer("depth", 4, "Default U-Net depth.")
flags.DEFINE_list("archs", ["seed", "unet"], "Architectures to compare.")


def forward_flops(model, image_size: int) -> float:
    """Float operations of one image's forward pass, from TF's profiler on the frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.uint8))
    graph = convert_variables_to_constants_v2(concrete).graph
    opts = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()) \
        .with_empty_output().build()
    return float(model_analyzer.profile(graph, options=opts).total_float_ops)


def measure(arch: str, precision: str, replicas: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from trainer import train
    from trainer.config import ModelConfig, TrainConfig
    from trainer.model import build_model, has_image_head, select_targets

    # Images only: the evidence stream's maps come from the Beam job, not from this synthetic step.
    cfg = ModelConfig(image_size=FLAGS.image_size, arch=arch, width=FLAGS.width, depth=FLAGS.depth, evidence=False)
    strategy = _strategy(replicas)
    tcfg = TrainConfig(data_dir="", model_dir="", model=cfg, loss="bce_dice")
    with strategy.scope(), train._policy(precision):
        model = build_model(cfg)
        train.compile_model(model, tcfg, has_image_head(cfg))
    rng = np.random.default_rng(0)
    n, s = FLAGS.batch_size, FLAGS.image_size
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    masks = (rng.random((n, s, s, 1)) < 0.1).astype(np.float32)
    labels = np.ones((n, 1), np.float32)
    ds = tf.data.Dataset.from_tensors((images, {"mask": masks, "image": labels})).repeat()
    ds = select_targets(ds, model.output_names)
    ds = strategy.experimental_distribute_dataset(ds.with_options(_no_autoshard()))
    model.fit(ds, epochs=1, steps_per_epoch=FLAGS.warmup, verbose=0)
    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=FLAGS.steps, verbose=0)
    seconds = time.perf_counter() - t0
    with train._policy("float32"):
        flops = forward_flops(model, s)
    result = {"arch": arch, "precision": precision, "replicas": replicas,
              "images_per_s": FLAGS.steps * n / seconds, "params": model.count_params(),
              "gflops_per_image": flops / 1e9}
    del model
    keras.backend.clear_session()
    return result


_STRATEGIES: dict = {}


def _strategy(replicas: int):
    """One strategy per replica count for the whole run (two MirroredStrategy objects in one
    process can reuse collective keys)."""
    import tensorflow as tf

    if replicas not in _STRATEGIES:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))][:replicas]
        _STRATEGIES[replicas] = (tf.distribute.MirroredStrategy(devices) if replicas > 1
                                 else tf.distribute.OneDeviceStrategy(devices[0]))
    return _STRATEGIES[replicas]


def _no_autoshard():
    import tensorflow as tf

    o = tf.data.Options()
    o.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return o


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from trainer.train import split_cpu

    split_cpu(2)  # before TF initialises: two CPU replicas on a machine without GPUs
    import tensorflow as tf

    precisions = ["float32", "mixed_bfloat16"] + (["mixed_float16"] if tf.config.list_physical_devices("GPU") else [])
    rows = []
    for arch in FLAGS.archs:
        for precision in precisions:
            for replicas in (1, 2):
                r = measure(arch, precision, replicas)
                print(f"  {r['arch']:5s} {r['precision']:15s} x{r['replicas']}: {r['images_per_s']:.2f} img/s",
                      flush=True)
                rows.append(r)
    base = {r["arch"]: r["images_per_s"] for r in rows if r["precision"] == "float32" and r["replicas"] == 1}
    print(f"\ntraining throughput, {FLAGS.image_size} px, global batch {FLAGS.batch_size}, {FLAGS.steps} timed steps"
          f" (unet: the default model at width {FLAGS.width}, depth {FLAGS.depth})")
    print("| arch | precision | replicas | images/s | vs float32 x1 | params | forward GFLOPs/image |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['precision']} | {r['replicas']} | {r['images_per_s']:.2f} | "
              f"{r['images_per_s'] / base[r['arch']]:.2f}x | {r['params']:,} | {r['gflops_per_image']:.2f} |")


if __name__ == "__main__":
    app.run(main)
