"""Scoring throughput: serving.score's batched tf.data pipeline vs the seed notebook's inference loop.

    python -m benchmarks.scoring [--num_images 120] [--image_size 128] [--batch_size 32] [--rounds 3]

Same exported model (trainer.model's U-Net, untrained: speed does not depend on
the weights), same synthetic test images (preprocessing.synth, realistic
sizes), post-processing and RLE included, model loading excluded:

  (a) seed_loop      the seed's loop, re-implemented: per image cv2.imread, BGR->RGB,
                     cv2.resize, one Keras ``model.predict`` on a batch of 1 (the
                     SavedModel wrapped in a TFSMLayer), threshold, components,
                     resize back, RLE
  (b) serving_score  serving.network.predict_items + submission_rows: a parallel
                     tf.data decode/resize, batches of --batch_size, prefetch

Measured in interleaved rounds, median reported, so load from other processes
on a shared machine hits both alike. The last stdout line is JSON.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags

_NUM = flags.DEFINE_integer("num_images", 120, "Synthetic test images to score.")
_SIZE = flags.DEFINE_integer("image_size", 128, "Model input size.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "serving.score batch size.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds (median reported).")
_WIDTH = flags.DEFINE_integer("width", 16, "U-Net width.")
_WORK = flags.DEFINE_string("work_dir", None, "Where data and model go (a temp dir when omitted).")


def make_model(export_dir: str, size: int, width: int) -> None:
    from trainer.config import ModelConfig
    from trainer.export import export_model
    from trainer.model import build_model

    cfg = ModelConfig(image_size=size, width=width, depth=3, evidence=False)  # the network's own speed, no matcher
    export_model(build_model(cfg), export_dir, image_size=size, metadata={"arch": cfg.to_dict()})


def seed_loop(export_dir: str, size: int, threshold: float = 0.45, min_area: int = 32):
    """The seed notebook's run_inference_and_segment on our SavedModel: run(items) -> one row per image."""
    import keras

    inputs = keras.Input((size, size, 3), dtype="uint8", name="images")
    outputs = keras.layers.TFSMLayer(export_dir, call_endpoint="serving_default")(inputs)
    model = keras.Model(inputs, outputs)

    def run(items):
        rows = []
        for case_id, path in items:
            img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            h, w = img.shape[:2]
            x = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
            prob = model.predict(x[None], verbose=0)["probabilities"][0, :, :, 0]
            binary = (prob > threshold).astype(np.uint8)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, 4, cv2.CV_32S)
            clean = np.zeros_like(binary)
            for k in range(1, n):
                if stats[k, cv2.CC_STAT_AREA] >= min_area:
                    clean[labels == k] = 1
            full = cv2.resize(clean, (w, h), interpolation=cv2.INTER_NEAREST)
            pixels = np.concatenate([[0], full.T.flatten(), [0]])
            runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
            runs[1::2] -= runs[::2]
            rows.append((case_id, " ".join(map(str, runs)) if full.any() else "authentic"))
        return rows

    return run


def serving_score(export_dir: str, batch_size: int):
    """serving.score's path: run(items) -> one row per image."""
    from serving.network import predict_items
    from serving.saved_model import load
    from serving.submission import submission_rows

    model = load(export_dir)

    def run(items):
        preds, errors = predict_items(model, items, batch_size, progress=False)
        return submission_rows(preds, errors, model.postprocess)

    return run


def main(argv):
    del argv
    from preprocessing import synth
    from preprocessing.cases import discover_test_images

    work = _WORK.value or tempfile.mkdtemp(prefix="bench_scoring_")
    data, export_dir = os.path.join(work, "data"), os.path.join(work, "model", "export")
    if not os.path.isdir(os.path.join(data, "test_images")):
        synth.generate(data, num_train=0, num_test=_NUM.value, seed=0, min_size=200, max_size=1000)
    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        make_model(export_dir, _SIZE.value, _WIDTH.value)
    items, _ = discover_test_images(data)
    pixels = sum(np.prod(cv2.imread(p, cv2.IMREAD_UNCHANGED).shape[:2]) for _, p in items)
    print(f"{len(items)} images, mean {pixels / len(items) / 1e6:.2f} MP, model input {_SIZE.value} px, "
          f"{os.cpu_count()} CPUs")

    runners = {"seed_loop": seed_loop(export_dir, _SIZE.value),
               "serving_score": serving_score(export_dir, _BATCH.value)}
    for run in runners.values():  # warm-up: graph tracing and first-call costs are not throughput
        run(items[:4])
    times = {name: [] for name in runners}
    for r in range(_ROUNDS.value):
        for name, run in runners.items():
            start = time.perf_counter()
            rows = run(items)
            times[name].append(time.perf_counter() - start)
            assert len(rows) == len(items)
        print(f"round {r + 1}: " + "  ".join(f"{n} {t[-1]:.1f}s" for n, t in times.items()), flush=True)

    rate = {n: len(items) / statistics.median(t) for n, t in times.items()}
    print("\n| method        | images/s | speed-up |\n|---------------|---------:|---------:|")
    for name in runners:
        print(f"| {name:<13} | {rate[name]:>8.1f} | {rate[name] / rate['seed_loop']:>7.2f}x |")
    print(json.dumps({n: round(v, 2) for n, v in rate.items()}))


if __name__ == "__main__":
    app.run(main)
