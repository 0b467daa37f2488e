"""Preprocessing throughput: the Beam job (DirectRunner in-memory and multi-processing, runner-chosen vs
fixed shard counts) side by side with a plain single-process Python loop doing the same conversion.

    python -m benchmarks.preprocess [--num_train 200] [--min_size 400] [--max_size 1200] [--image_size 256]
        [--workers 2] [--num_shards 4] [--repeats 3] [--work_dir DIR]

The plain loop calls the very same ``convert_case`` and writes the same gzip
TFRecords with ``tf.io.TFRecordWriter``, so the difference is Beam's overhead
and parallelism. Times include each job's start-up (multi-processing workers import
TensorFlow in each new process), as a user would see it; the driver's own
TensorFlow import is done once before timing. Prints a markdown table.
"""
from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
TINY_CASES = 4  # a corpus this small measures a configuration's fixed start-up cost
flags.DEFINE_integer("num_train", 200, "Synthetic training cases (paired ones add an authentic image).")
flags.DEFINE_integer("min_size", 400, "Smallest synthetic image side.")
flags.DEFINE_integer("max_size", 1200, "Largest synthetic image side.")
flags.DEFINE_integer("image_size", 256, "--image_size of the job.")
flags.DEFINE_integer("workers", 2, "--direct_num_workers for the multi-processing runs.")
flags.DEFINE_integer("num_shards", 4, "Fixed shard count compared against the runner's choice.")
flags.DEFINE_integer("repeats", 3, "Runs per configuration (round-robin); the best time is reported.")
flags.DEFINE_string("work_dir", None, "Keep the dataset and outputs here (default: a temp dir, removed).")


def plain_loop(input_dir: str, output_dir: str, image_size: int) -> int:
    """The same conversion in one process, no Beam: the baseline."""
    import tensorflow as tf
    from tqdm import tqdm

    from preprocessing.cases import discover_training_cases
    from preprocessing.constants import SPLITS
    from preprocessing.convert import ConvertConfig, convert_case
    from preprocessing.errors import BadInput

    cases, _ = discover_training_cases(input_dir)
    cfg = ConvertConfig(image_size=image_size, encoding="png", val_fraction=0.2)
    os.makedirs(output_dir, exist_ok=True)
    opts = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {s: tf.io.TFRecordWriter(os.path.join(output_dir, f"{s}-00000-of-00001.tfrecord.gz"), opts)
               for s in SPLITS}
    written = 0
    for case in tqdm(cases, desc="plain loop", unit="case", leave=False):
        try:
            split, serialized, _ = convert_case(case, cfg)
        except BadInput:
            continue
        writers[split].write(serialized)
        written += 1
    for w in writers.values():
        w.close()
    return written


def beam_job(input_dir: str, output_dir: str, image_size: int, num_shards: int, workers: int) -> int:
    from preprocessing.job import run_pipeline

    args = [] if workers <= 1 else ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    manifest = run_pipeline(input_dir, output_dir, image_size=image_size, encoding="png", compression="gzip",
                            num_shards=num_shards, val_fraction=0.2, pipeline_args=args,
                            overwrite=True)  # the benchmark's own scratch folder, rewritten every round
    return manifest["written"]


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (multi-processing workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(fn) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, images written) of one run."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    n = fn()
    return time.perf_counter() - wall, _cpu_seconds() - cpu, n


def main(argv):
    del argv
    import logging

    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    import preprocessing.schema  # noqa: F401  (TensorFlow, imported before any timing: every row pays it once)
    from preprocessing import synth

    root = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_preprocess_")
    data, tiny = os.path.join(root, "data"), os.path.join(root, "tiny")
    try:
        for folder, n in ((data, FLAGS.num_train), (tiny, TINY_CASES)):
            if not os.path.isdir(os.path.join(folder, "train_images")):
                synth.generate(folder, num_train=n, num_test=0, seed=0,
                               min_size=FLAGS.min_size, max_size=FLAGS.max_size)
        s, w, k = FLAGS.image_size, FLAGS.workers, FLAGS.num_shards
        configs = [
            ("plain Python loop (1 process)", lambda d, out: plain_loop(d, out, s)),
            ("Beam DirectRunner in-memory, runner-chosen shards", lambda d, out: beam_job(d, out, s, 0, 1)),
            (f"Beam DirectRunner in-memory, --num_shards {k}", lambda d, out: beam_job(d, out, s, k, 1)),
            (f"Beam multi-processing x{w}, runner-chosen shards", lambda d, out: beam_job(d, out, s, 0, w)),
            (f"Beam multi-processing x{w}, --num_shards {k}", lambda d, out: beam_job(d, out, s, k, w)),
        ]
        # Round-robin over the repeats, so load from other jobs on the machine hits every configuration alike.
        best: dict = {}
        for r in range(FLAGS.repeats):
            for i, (name, fn) in enumerate(configs):
                for corpus, folder in (("tiny", tiny), ("full", data)):
                    out = os.path.join(root, f"{corpus}_out{i}")
                    run = _measure(lambda fn=fn, folder=folder, out=out: fn(folder, out))
                    if (i, corpus) not in best or run[0] < best[(i, corpus)][0]:
                        best[(i, corpus)] = run
                    print(f"round {r + 1}: {name} [{corpus}]: {run[2]} images in {run[0]:.1f} s", flush=True)
        rows = []
        for i, (name, _) in enumerate(configs):
            (t_tiny, _, n_tiny), (seconds, cpu, n) = best[(i, "tiny")], best[(i, "full")]
            rows.append((name, n, seconds, cpu, t_tiny, (n - n_tiny) / max(seconds - t_tiny, 1e-9)))
        base = rows[0]
        print(f"\n{base[1]} images, {FLAGS.min_size}-{FLAGS.max_size} px -> {s} px PNG, gzip; "
              f"{os.cpu_count()} CPUs; best of {FLAGS.repeats} (round-robin). 'start-up' = wall time for a "
              f"{TINY_CASES}-case corpus; 'steady' = extra images / extra seconds between the two corpora; "
              "'CPU ms/image' = user+system CPU of the job and its worker processes.\n")
        print("| configuration | images | seconds | images/s | vs plain | start-up s | steady images/s "
              "| vs plain | CPU ms/image |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, n, seconds, cpu, t_tiny, steady in rows:
            print(f"| {name} | {n} | {seconds:.1f} | {n / seconds:.1f} | {n / seconds / (base[1] / base[2]):.2f}x "
                  f"| {t_tiny:.1f} | {steady:.1f} | {steady / base[5]:.2f}x | {1000 * cpu / n:.0f} |")
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
