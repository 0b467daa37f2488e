"""Input pipeline throughput: the seed notebook's Python Sequence vs tf.data over the Beam job's records.

    python -m benchmarks.input_pipeline [--data_dir DIR] [--work_dir DIR]

DIR is in the competition layout; without it a synthetic dataset at realistic
sizes is generated (preprocessing.synth). The Beam job (preprocessing.main)
converts it to records for --image_size (images that fit are stored at their
own size and enlarged on the accelerator), once per encoding. Measured side by
side in one run, batch --batch_size, training augmentation on, images/s:

  (a) seed_generator   the seed's DualStreamDataGenerator, re-implemented below:
                       per sample cv2 PNG decode at full size, flips, JPEG
                       recompression, gray, resizes and the noise residual in numpy
  (b) tfdata_raw/png   trainer.data.make_dataset over the Beam job's records (what
                       the host delivers; the step that enlarges images stored below
                       the model size runs on the accelerator, and its rate on this
                       CPU is printed after the table)
  (c) compute_ceiling  the same host augmentation, batching and parallelism over
                       examples already decoded and held in memory
  (b') tfdata_png_evidence[_uncached]  (b) with the matcher's evidence map as well
                       (``trainer.main --evidence``): what the third stream costs the host
  (d) tfdata_raw_service  (b) as ``trainer.main --data_service`` runs it, through a
                       tf.data service dispatcher (in this process) and one worker (a
                       ``python -m trainer.data_service`` process) on this host: on the
                       same cores it cannot be faster; it shows what the service costs.
                       *_snappy: with --data_service_compression

Configurations are measured in interleaved rounds and the median is reported,
so load from other processes on a shared machine hits them alike. Each row also
gives the CPU time per delivered image of this process (the trainer's side) and
of the service worker's process: what a cluster is sized from. The last stdout
line is JSON of the images/s: {"seed_generator", "tfdata_raw", "tfdata_png",
"compute_ceiling", "tfdata_raw_uncached", "tfdata_png_uncached", "tfdata_png_evidence",
"tfdata_png_evidence_uncached", "tfdata_raw_service",
"tfdata_raw_service_snappy"}.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", None, "Competition layout to read; a synthetic one is generated when omitted.")
    flags.DEFINE_string("work_dir", None, "Where the synthetic data and records go (a temp dir when omitted).")
    flags.DEFINE_integer("num_train", 60, "Synthetic training cases when --data_dir is omitted.")
    flags.DEFINE_integer("min_size", 300, "Synthetic image size range (realistic figure sizes).")
    flags.DEFINE_integer("max_size", 1500, "Synthetic image size range (realistic figure sizes).")
    flags.DEFINE_integer("batch_size", 16, "Batch size (the seed's BATCH_SIZE).")
    flags.DEFINE_integer("image_size", 256, "Model input size (the seed's IMAGE_SIZE).")
    flags.DEFINE_enum("compression", "none", ["none", "gzip"], "Compression of the benchmarked records.")
    flags.DEFINE_float("min_seconds", 3.0, "Minimum timed duration per configuration and round.")
    flags.DEFINE_integer("rounds", 3, "Interleaved rounds; the median is reported.")
    flags.DEFINE_list("parallelism", ["1", "2", "4"], "num_parallel_calls values for the scaling rows "
                      "(the headline rows use AUTOTUNE).")


# --------------------------------------------------------------------------- (a) the seed's generator

def seed_generator(train_root: str, mask_root: str, image_size: int):
    """The seed notebook's DualStreamDataGenerator (training/augmentation path), re-implemented.

    Kept faithful on purpose, including what the new pipeline fixes: per-sample full-size decode,
    silent skips of unreadable samples and padding of short batches with the last sample.
    """
    import keras  # the seed subclasses tf.keras.utils.Sequence, which is keras.utils.PyDataset in Keras 3

    def forgery_features(gray: np.ndarray) -> np.ndarray:
        img = gray.astype(np.uint8)
        blur = cv2.GaussianBlur(img, (5, 5), 0)
        residual = img.astype(np.float32) - blur.astype(np.float32)
        residual = cv2.resize(residual, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        residual = (residual - residual.min()) / (residual.max() - residual.min() + 1e-7)
        return np.stack([residual] * 3, axis=-1).astype(np.float32)

    class DualStreamDataGenerator(keras.utils.PyDataset):
        def __init__(self, ids, batch_size=16, shuffle=True, is_validation=False, **kwargs):
            super().__init__(**kwargs)
            self.ids = list(ids)
            self.batch_size = batch_size
            self.shuffle = shuffle
            self.is_validation = is_validation
            self.on_epoch_end()
            self.skipped_count = 0

        def on_epoch_end(self):
            self.indexes = np.arange(len(self.ids))
            if self.shuffle and not self.is_validation:
                np.random.shuffle(self.indexes)
            self.skipped_count = 0

        def __len__(self):
            return int(np.floor(len(self.ids) / self.batch_size))

        def __getitem__(self, index):
            x1, x2, y = [], [], []
            for i in self.indexes[index * self.batch_size:(index + 1) * self.batch_size]:
                image_id = self.ids[i]
                candidates = [os.path.join(train_root, f"{image_id}{ext}") for ext in (".png", ".jpg", ".tif", ".tiff")]
                path = next((p for p in candidates if os.path.exists(p)), None)
                if path is None:
                    self.skipped_count += 1
                    continue
                try:
                    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
                    mask = np.load(os.path.join(mask_root, f"{image_id}.npy"))
                except Exception:
                    self.skipped_count += 1
                    continue
                rgb_final = rgb.copy()
                mask_final = np.squeeze(mask.copy())
                if mask_final.ndim == 3:
                    mask_final = mask_final[:, :, 0]
                if mask_final.ndim != 2:
                    self.skipped_count += 1
                    continue
                if not self.is_validation:
                    if random.random() > 0.5:
                        rgb_final, mask_final = cv2.flip(rgb_final, 1), cv2.flip(mask_final, 1)
                    if random.random() > 0.5:
                        rgb_final, mask_final = cv2.flip(rgb_final, 0), cv2.flip(mask_final, 0)
                    if random.random() > 0.5:
                        quality = random.randint(70, 95)
                        _, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb_final, cv2.COLOR_RGB2BGR),
                                              [cv2.IMWRITE_JPEG_QUALITY, quality])
                        rgb_final = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                try:
                    gray = cv2.cvtColor(rgb_final, cv2.COLOR_RGB2GRAY)
                    x1_sample = cv2.resize(rgb_final, (image_size, image_size), interpolation=cv2.INTER_LINEAR) / 255.0
                    x2_sample = forgery_features(gray)
                    mask_resized = cv2.resize(mask_final, (image_size, image_size), interpolation=cv2.INTER_NEAREST)
                    y_sample = mask_resized.reshape(image_size, image_size, 1).astype(np.float32)
                except Exception:
                    self.skipped_count += 1
                    continue
                x1.append(x1_sample)
                x2.append(x2_sample)
                y.append(y_sample)
            if not x1:
                zeros = np.zeros((self.batch_size, image_size, image_size, 3), np.float32)
                return (zeros, zeros.copy()), np.zeros((self.batch_size, image_size, image_size, 1), np.float32)
            while len(x1) < self.batch_size:
                x1.append(x1[-1])
                x2.append(x2[-1])
                y.append(y[-1])
            return (np.array(x1), np.array(x2)), np.array(y)

    ids = sorted(os.path.splitext(n)[0] for n in os.listdir(train_root))
    return DualStreamDataGenerator(ids, batch_size=FLAGS.batch_size, shuffle=True, is_validation=False)


def seed_batches(gen) -> Iterator:
    """Endless batches the way model.fit consumes a Sequence: index order, on_epoch_end between epochs."""
    while True:
        for i in range(len(gen)):
            yield gen[i]
        gen.on_epoch_end()


# --------------------------------------------------------------------------- (b), (c) tf.data

def tfdata_batches(records_dir: str, parallelism: int, cache: bool | None = None, evidence: bool = False
                   ) -> Iterator:
    """make_dataset as trainer.main uses it (cache=None: decoded examples kept in RAM after the first
    epoch when they fit); cache=False re-reads and re-decodes the records every epoch; ``evidence``:
    also the matcher's evidence map (``trainer.main --evidence``)."""
    from trainer import data

    ds = data.make_dataset(records_dir, "train", FLAGS.batch_size, training=True, num_parallel_calls=parallelism,
                           cache=cache, evidence=evidence)
    return iter(ds.repeat())


def decoded_examples(records_dir: str) -> dict:
    """Every training example decoded once into numpy (what the ceiling starts from)."""
    from preprocessing import records
    from trainer import data

    n = records.num_examples(records_dir, "train")
    ds = data.make_dataset(records_dir, "train", n, training=False, augment_jpeg=False, with_ids=True)
    inputs, targets, ids = next(iter(ds))
    return {"image": inputs["images"].numpy(), "size": inputs["sizes"].numpy(),
            "mask": targets["mask"].numpy().astype(np.uint8),
            "label": targets["image"].numpy()[:, 0].astype(np.int64), "case_id": ids["case_id"].numpy(),
            "orig/height": ids["orig_hw"].numpy()[:, 0].astype(np.int64),
            "orig/width": ids["orig_hw"].numpy()[:, 1].astype(np.int64),
            "mask/num_instances": ids["num_instances"].numpy(),
            "file": np.array([records_dir.encode()] * n)}


def service_batches(records_dir: str, service_target: str, compress: bool = False) -> Iterator:
    """make_dataset as trainer.main --data_service runs it: built here, run by the tf.data service's
    workers without the RAM cache (trainer.service), its batches received from them."""
    from trainer import data, service

    ds = data.make_dataset(records_dir, "train", FLAGS.batch_size, training=True, cache=False)
    return iter(service.distribute(ds.repeat(), service_target, compress=compress))


def start_service():
    """A dispatcher in this process and one worker in a child process, so that the CPU time of the two
    sides is measured apart: (dispatcher, worker process)."""
    from trainer import service

    dispatcher = service.start_dispatcher()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    worker = subprocess.Popen([sys.executable, "-m", "trainer.data_service", "--host=localhost",
                               f"--dispatcher={dispatcher.target}"], cwd=repo, stdout=subprocess.PIPE, text=True)
    if "worker listening" not in worker.stdout.readline():
        raise RuntimeError("the tf.data service worker did not start")
    return dispatcher, worker


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wire_bytes_per_image(batch) -> tuple[float, float]:
    """(bytes, bytes snappy-compressed as the service sends them by default) per image of a batch."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops import compression_ops  # what distribute(compression="AUTO") runs

    raw = sum(t.numpy().nbytes for t in tf.nest.flatten(batch))
    compressed = len(tf.io.serialize_tensor(compression_ops.compress(batch)).numpy())
    return raw / FLAGS.batch_size, compressed / FLAGS.batch_size


def ceiling_batches(examples: dict, parallelism: int) -> Iterator:
    """make_dataset's host work minus reading, parsing and decoding: shuffle, JPEG recompression
    with the same parallelism, batching, prefetch."""
    import tensorflow as tf

    from trainer import data

    fields = {k: examples[k] for k in data.TRAIN_FIELDS}  # what make_dataset keeps for training
    ds = tf.data.Dataset.from_tensor_slices(fields).shuffle(data.DEFAULT_SHUFFLE_BUFFER)
    ds = data.batch_for_model(ds, FLAGS.batch_size, training=True, num_parallel_calls=parallelism,
                              augment_jpeg=True)
    options = tf.data.Options()
    options.deterministic = False
    return iter(ds.with_options(options).repeat())


def device_step_rate(records_dir: str, min_seconds: float) -> float:
    """Images/s of the trainer's device step before the network (enlarging images stored below the
    model size, casting masks), run here on the CPU. In training it runs on the accelerator, not
    on the host this benchmark measures; printed so that the work moved there is visible."""
    import tensorflow as tf

    from trainer.model import device_batch

    inputs, targets = next(tfdata_batches(records_dir, tf.data.AUTOTUNE))
    step = tf.function(lambda x, y: device_batch((x, y))[0])
    step(inputs, targets).numpy()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        step(inputs, targets).numpy()
        n += int(inputs["images"].shape[0])
    return n / (time.perf_counter() - start)


# --------------------------------------------------------------------------- measuring

def images_per_second(batches: Iterator, min_seconds: float, clocks: dict[str, Callable[[], float]],
                      warmup: int = 2) -> tuple[float, dict[str, float]]:
    """Pull batches for at least ``min_seconds`` after ``warmup`` batches: images delivered per second,
    and the CPU µs per image of every clock (CPU seconds of a process)."""
    for _ in range(warmup):
        next(batches)
    n, start = 0, time.perf_counter()
    cpu = {name: clock() for name, clock in clocks.items()}
    while True:
        batch = next(batches)
        n += len(batch[1]) if isinstance(batch[1], np.ndarray) else int(batch[1]["mask"].shape[0])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= 2 * FLAGS.batch_size:
            return n / elapsed, {name: 1e6 * (clock() - cpu[name]) / n for name, clock in clocks.items()}


def prepare_data(work_dir: str) -> str:
    if FLAGS.data_dir:
        return FLAGS.data_dir
    from preprocessing import synth

    out = os.path.join(work_dir, "synth")
    if not os.path.exists(os.path.join(out, synth.META_FILE)):
        synth.generate(out, num_train=FLAGS.num_train, num_test=0, seed=0,
                       min_size=FLAGS.min_size, max_size=FLAGS.max_size, show_progress=True)
    return out


def prepare_records(data_dir: str, work_dir: str, encoding: str) -> str:
    """The Beam job's output for ``data_dir`` (reused if already there with the same options)."""
    from preprocessing.job import run_pipeline

    out = os.path.join(work_dir, f"records_{encoding}_{FLAGS.compression}_{FLAGS.image_size}")
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        from preprocessing.schema import SCHEMA_VERSION

        with open(manifest) as f:
            old = json.load(f)
        if old.get("options", {}).get("input_dir") == data_dir and old.get("schema_version") == SCHEMA_VERSION:
            return out
    run_pipeline(data_dir, out, image_size=FLAGS.image_size, encoding=encoding, compression=FLAGS.compression,
                 num_shards=4, val_fraction=0.0, overwrite=True)
    return out


def image_sizes(data_dir: str) -> tuple[int, float, int]:
    """(min, mean, max) of the longest side of the forged training images (what the seed reads)."""
    from PIL import Image

    root = os.path.join(data_dir, "train_images", "forged")
    sides = []
    for name in os.listdir(root):
        with Image.open(os.path.join(root, name)) as im:
            sides.append(max(im.size))
    return min(sides), float(np.mean(sides)), max(sides)


def run(configs: dict[str, Callable[[], Iterator]], rounds: int, min_seconds: float,
        clocks: dict[str, Callable[[], float]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Median images/s of every configuration, and its median CPU µs per image by clock."""
    from tqdm import tqdm

    iterators = {name: make() for name, make in configs.items()}
    results: dict[str, list] = {name: [] for name in configs}
    with tqdm(total=rounds * len(configs), desc="measuring", unit="config") as bar:
        for _ in range(rounds):
            for name, it in iterators.items():
                results[name].append(images_per_second(it, min_seconds, clocks))
                bar.update()
    ips = {name: statistics.median(rate for rate, _ in v) for name, v in results.items()}
    cpu = {name: {c: statistics.median(us[c] for _, us in v) for c in clocks} for name, v in results.items()}
    return ips, cpu


def main(argv):
    del argv
    random.seed(0)
    np.random.seed(0)
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_input_")
    data_dir = prepare_data(work_dir)
    raw_dir = prepare_records(data_dir, work_dir, "raw")
    png_dir = prepare_records(data_dir, work_dir, "png")
    examples = decoded_examples(raw_dir)

    import tensorflow as tf

    dispatcher, worker = start_service()
    clocks = {"trainer": time.process_time, "worker": lambda: process_cpu_seconds(worker.pid)}
    auto = tf.data.AUTOTUNE
    gen = seed_generator(os.path.join(data_dir, "train_images", "forged"),
                         os.path.join(data_dir, "train_masks"), FLAGS.image_size)
    configs = {
        "seed_generator": lambda: seed_batches(gen),
        "tfdata_raw": lambda: tfdata_batches(raw_dir, auto),
        "tfdata_png": lambda: tfdata_batches(png_dir, auto),
        "tfdata_raw_uncached": lambda: tfdata_batches(raw_dir, auto, cache=False),
        "tfdata_png_uncached": lambda: tfdata_batches(png_dir, auto, cache=False),
        "tfdata_png_evidence": lambda: tfdata_batches(png_dir, auto, evidence=True),
        "tfdata_png_evidence_uncached": lambda: tfdata_batches(png_dir, auto, cache=False, evidence=True),
        "tfdata_raw_service": lambda: service_batches(raw_dir, dispatcher.target),
        "tfdata_raw_service_snappy": lambda: service_batches(raw_dir, dispatcher.target, compress=True),
        "compute_ceiling": lambda: ceiling_batches(examples, auto),
    }
    for p in (int(v) for v in FLAGS.parallelism):
        configs[f"tfdata_raw@{p}"] = lambda p=p: tfdata_batches(raw_dir, p)
        configs[f"tfdata_png@{p}"] = lambda p=p: tfdata_batches(png_dir, p)
        configs[f"tfdata_raw_uncached@{p}"] = lambda p=p: tfdata_batches(raw_dir, p, cache=False)
        configs[f"compute_ceiling@{p}"] = lambda p=p: ceiling_batches(examples, p)
    try:
        ips, cpu_us = run(configs, FLAGS.rounds, FLAGS.min_seconds, clocks)
        wire = wire_bytes_per_image(next(service_batches(raw_dir, dispatcher.target)))
    finally:
        worker.terminate()
        worker.wait()
    device_ips = device_step_rate(raw_dir, FLAGS.min_seconds)
    stored = examples["size"]
    native = int(np.sum(np.any(stored != FLAGS.image_size, axis=1)))

    lo, mean, hi = image_sizes(data_dir)
    print(f"\ndata: {data_dir}  seed reads {len(gen.ids)} forged images, longest side {lo}-{hi} px "
          f"(mean {mean:.0f}); records: {len(examples['label'])} training examples for {FLAGS.image_size} px "
          f"({native} stored at their own size, longest {int(stored.max(axis=1).min())}-"
          f"{int(stored.max(axis=1).max())} px), "
          f"compression {FLAGS.compression}; batch {FLAGS.batch_size}; {os.cpu_count()} CPUs; "
          f"median of {FLAGS.rounds} rounds")
    print(f"{'configuration':<30}{'parallelism':>12}{'images/s':>12}{'x seed':>10}{'% ceiling':>11}"
          f"{'core-µs/img':>13}{'worker':>8}")
    seed_ips = ips["seed_generator"]
    for name, value in ips.items():
        base, _, par = name.partition("@")
        ceiling = ips.get(f"compute_ceiling@{par}" if par else "compute_ceiling")
        pct = f"{100 * value / ceiling:.0f}%" if base.startswith("tfdata") and ceiling else ""
        label = "1 (Python)" if base == "seed_generator" else (par or "AUTOTUNE")
        cpu = cpu_us[name]
        print(f"{base:<30}{label:>12}{value:>12.1f}{value / seed_ips:>10.1f}{pct:>11}{cpu['trainer']:>13.0f}"
              f"{cpu['worker']:>8.0f}")
    print("tfdata_*: the pipeline as trainer.main runs it (decoded examples cached in RAM after the first "
          "epoch when they fit); *_uncached: records re-read and re-decoded every epoch.")
    print(f"device step (enlarging stored images to {FLAGS.image_size} px, mask cast), which training runs on "
          f"the accelerator, run here on the CPU: {device_ips:.1f} images/s")
    local, remote, snappy = (cpu_us[k] for k in ("tfdata_raw_uncached", "tfdata_raw_service",
                                                  "tfdata_raw_service_snappy"))
    print(f"core-µs/img: CPU time per image of this process (the trainer's host); worker: of the tf.data service "
          f"worker's process, which only the *_service* rows use. Through the service the pipeline costs the "
          f"worker {remote['worker']:.0f} core-µs per image ({local['trainer']:.0f} locally, uncached) and the "
          f"trainer {remote['trainer']:.0f} to receive it, {wire[0] / 1e3:.0f} KB on the network; compressed "
          f"(_snappy) {snappy['worker']:.0f} and {snappy['trainer']:.0f} core-µs, {wire[1] / 1e3:.0f} KB.")
    print(json.dumps({k: round(ips[k], 1) for k in ("seed_generator", "tfdata_raw", "tfdata_png", "compute_ceiling",
                                                    "tfdata_raw_uncached", "tfdata_png_uncached",
                                                    "tfdata_png_evidence", "tfdata_png_evidence_uncached",
                                                    "tfdata_raw_service", "tfdata_raw_service_snappy")}))


if __name__ == "__main__":
    _define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
