"""Quality side by side: the seed's network and recipe vs this project's model, same data, same
wall-clock budget, scored with the competition metric on held-out synthetic test images.

    python -m benchmarks.quality --work_dir /tmp/quality [--minutes 6] [--image_size 128]
        [--num_train 240 --num_test 80] [--contenders seed,default,no_field] [--records_dir DIR]

1. ``preprocessing.synth`` writes a synthetic dataset (train + test with test_solution.csv);
   ``preprocessing.job.run_pipeline`` turns its training part into TFRecords
   (or ``--records_dir`` reuses a Beam output of the same dataset).
2. Each contender trains with ``trainer.train.run`` for ``--minutes`` (time budget, the
   best checkpoint by its own monitor is exported):
   - seed:    ``--arch=seed --loss=tversky``, early stopping / best checkpoint on val_loss;
   - default: ``trainer.main``'s defaults (dual-stream U-Net, match field, self-correlation on the bottleneck,
     image head, BCE+Dice, best checkpoint by val oF1) at the CPU-size --width/--depth;
   - optional (``--contenders``): shallow_corr (+ self-correlation at level 2), no_head, no_corr, no_field.
3. ``serving.score`` scores the test images from the exported SavedModel (resized to the model
   size, post-processed with metadata.json's defaults); ``serving.metric`` computes oF1 against
   test_solution.csv. Then ``serving.calibrate`` tunes the post-processing on the val split and
   the test images are scored again (the pipeline's real order: train, calibrate, score).
   The "everything authentic" baseline scores the authentic fraction.
"""
from __future__ import annotations

import json
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "/tmp/copymove_quality", "Scratch directory (data, records, models).")
flags.DEFINE_string("records_dir", "", "Reuse this Beam output of work_dir/synth instead of running the job.")
flags.DEFINE_integer("num_train", 240, "Synthetic training cases (about half forged).")
flags.DEFINE_integer("num_test", 80, "Held-out synthetic test images.")
flags.DEFINE_integer("min_size", 96, "Smallest synthetic image side.")
flags.DEFINE_integer("max_size", 256, "Largest synthetic image side.")
flags.DEFINE_integer("image_size", 128, "Model input size.")
flags.DEFINE_float("minutes", 6.0, "Training wall-clock budget per contender.")
flags.DEFINE_integer("epochs", 200, "Epoch cap (the budget normally ends training first).")
flags.DEFINE_integer("train_batch_size", 16, "Global training batch (the seed's 16).")
flags.DEFINE_integer("width", 16, "Default model width.")
flags.DEFINE_integer("depth", 3, "Default model depth.")
flags.DEFINE_list("contenders", ["seed", "default"],
                  "Which to train, in order, from: seed, default, shallow_corr, no_head, no_corr, no_field, "
                  "no_evidence.")
flags.DEFINE_string("precision", "auto", "Training precision for every contender.")
flags.DEFINE_integer("seed", 0, "Data and training seed.")
flags.DEFINE_bool("calibrate", True, "Also score after serving.calibrate tunes post-processing on the val split.")
flags.DEFINE_bool("reuse_models", False, "Skip training where work_dir/models/<name> has a finished run.")


def contenders():
    """(name, ModelConfig, loss, monitor) for each of --contenders. The default takes every trainer
    default except the CPU-size flags (width, depth); the seed takes the notebook's network, loss
    and monitor; the others change one thing in the default."""
    from trainer.config import ModelConfig, TrainConfig

    unet = dict(arch="unet", width=FLAGS.width, depth=FLAGS.depth)
    loss, monitor = TrainConfig.loss, TrainConfig.monitor
    known = {
        "seed": ("seed (seed recipe: Tversky, val_loss)", ModelConfig(arch="seed"), "tversky", "val_loss"),
        "default": (f"default (U-Net + match field + bottleneck self-corr + image head + the matcher's evidence map, "
                    f"{loss}, best by {monitor})",
                    ModelConfig(**unet), loss, monitor),
        "shallow_corr": ("default + self-corr at level 2 (stride 4)",
                         ModelConfig(**unet, correlation_levels=(2,)), loss, monitor),
        "no_head": ("default without image head", ModelConfig(**unet, image_head=False), loss, monitor),
        "no_field": ("default without match field", ModelConfig(**unet, match_field=False), loss, monitor),
        "no_corr": ("default without self-corr", ModelConfig(**unet, self_correlation=False, correlation_levels=()),
                    loss, monitor),
        "no_evidence": ("default without the matcher's evidence map", ModelConfig(**unet, evidence=False),
                        loss, monitor),
    }
    unknown = set(FLAGS.contenders) - set(known)
    if unknown:
        raise app.UsageError(f"unknown --contenders {sorted(unknown)}; expected some of {sorted(known)}")
    return [known[name] for name in FLAGS.contenders]


def prepare_data(work: str) -> tuple[str, str]:
    from preprocessing import synth

    synth_dir = os.path.join(work, "synth")
    if not os.path.exists(os.path.join(synth_dir, synth.SOLUTION_FILE)):
        synth.generate(synth_dir, num_train=FLAGS.num_train, num_test=FLAGS.num_test, seed=FLAGS.seed,
                       min_size=FLAGS.min_size, max_size=FLAGS.max_size)
    if FLAGS.records_dir:
        return synth_dir, FLAGS.records_dir
    from preprocessing.job import run_pipeline
    from preprocessing.schema import SCHEMA_VERSION

    records = os.path.join(work, f"records{FLAGS.image_size}")
    manifest = os.path.join(records, "manifest.json")
    version = None
    if os.path.exists(manifest):
        with open(manifest) as f:
            version = json.load(f).get("schema_version")
    if version != SCHEMA_VERSION:  # absent, or written by an older Beam job
        shutil.rmtree(records, ignore_errors=True)
        run_pipeline(synth_dir, records, image_size=FLAGS.image_size, val_fraction=0.2, overwrite=True)
    return synth_dir, records


def test_score(model_dir: str, synth_dir: str) -> dict:
    import pandas as pd

    from preprocessing import synth
    from serving import metric, network

    result = network.score_folder(model_dir, os.path.join(synth_dir, "test_images"), progress=False)
    submission = pd.DataFrame(result.rows, columns=["case_id", "annotation"])
    solution = pd.read_csv(os.path.join(synth_dir, synth.SOLUTION_FILE))
    return metric.evaluate_frames(solution, submission).summary


def authentic_baseline(synth_dir: str) -> dict:
    import pandas as pd

    from preprocessing import synth
    from serving import metric

    solution = pd.read_csv(os.path.join(synth_dir, synth.SOLUTION_FILE))
    submission = pd.DataFrame({"case_id": solution["case_id"], "annotation": "authentic"})
    return metric.evaluate_frames(solution, submission).summary


def slug(model_cfg) -> str:
    if model_cfg.arch == "seed":
        return "seed"
    levels = "".join(str(v) for v in model_cfg.correlation_levels) or "none"
    field = f"_field{model_cfg.match_size}" if model_cfg.match_field else ""
    evidence = "_evidence" if model_cfg.evidence else ""
    return f"unet_sc{int(model_cfg.self_correlation)}_levels{levels}_head{int(model_cfg.image_head)}{field}{evidence}"


def train_contender(model_dir, records, model_cfg, loss, monitor) -> dict:
    """Train (or, with --reuse_models, read back) one contender; the facts go to train_result.json."""
    import shutil

    import keras

    from trainer import train
    from trainer.config import TrainConfig

    path = os.path.join(model_dir, "train_result.json")
    if FLAGS.reuse_models and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    shutil.rmtree(model_dir, ignore_errors=True)  # the benchmark's own scratch: every contender starts afresh
    cfg = TrainConfig(data_dir=records, model_dir=model_dir, model=model_cfg, epochs=FLAGS.epochs,
                            batch_size=FLAGS.train_batch_size, loss=loss, monitor=monitor, precision=FLAGS.precision,
                            max_minutes=FLAGS.minutes, seed=FLAGS.seed, verbose=0)
    t0 = time.monotonic()
    result = train.run(cfg, strategy=_strategy())
    out = {"val_oF1": result.best.get("val_of1", float("nan")), "epochs": result.epochs_run,
           "minutes": (time.monotonic() - t0) / 60, "params": result.model.count_params(),
           "image_size": result.image_size}
    with open(path, "w") as f:
        json.dump(out, f)
    keras.backend.clear_session()
    return out


def score_contender(model_dir, synth_dir, records) -> dict:
    """Test oF1 with the exported post-processing defaults, then after serving.calibrate on val."""
    import shutil

    from serving import calibrate
    from serving.saved_model import METADATA_FILE

    meta = os.path.join(model_dir, "export", METADATA_FILE)
    original = meta + ".uncalibrated"
    if os.path.exists(original):
        shutil.copy(original, meta)
    else:
        shutil.copy(meta, original)
    raw = test_score(model_dir, synth_dir)
    out = {"test_oF1": raw["oF1"], "oF1_forged": raw["oF1_forged"], "oF1_authentic": raw["oF1_authentic"]}
    if FLAGS.calibrate:
        report = calibrate.calibrate(model_dir, data_dir=records, progress=False)
        cal = test_score(model_dir, synth_dir)
        out.update(cal_val_oF1=report["oF1_after"], cal_test_oF1=cal["oF1"], cal_forged=cal["oF1_forged"],
                   cal_authentic=cal["oF1_authentic"])
    return out


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    work = FLAGS.work_dir
    entries = contenders()  # a bad --contenders fails before any work
    os.makedirs(work, exist_ok=True)
    synth_dir, records = prepare_data(work)
    rows, image_size = [], None
    for name, model_cfg, loss, monitor in entries:
        model_dir = os.path.join(work, "models", slug(model_cfg))
        row = {"contender": name, **train_contender(model_dir, records, model_cfg, loss, monitor)}
        row.update(score_contender(model_dir, synth_dir, records))
        image_size = row["image_size"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = authentic_baseline(synth_dir)
    nan = float("nan")
    rows.append({"contender": "everything authentic", "test_oF1": base["oF1"], "oF1_forged": base["oF1_forged"],
                 "oF1_authentic": base["oF1_authentic"], "val_oF1": nan, "epochs": 0, "minutes": 0.0,
                 "params": 0, "cal_val_oF1": nan, "cal_test_oF1": base["oF1"], "cal_forged": base["oF1_forged"],
                 "cal_authentic": base["oF1_authentic"]})
    print(f"\noF1 on {base['images']} held-out synthetic test images ({base['true_forged']} forged), "
          f"{image_size} px, {FLAGS.minutes:g} min training budget each, precision {FLAGS.precision}")
    print("| contender | test oF1 | forged | authentic | best val oF1 | calibrated: val oF1 | test oF1 | forged "
          "| authentic | epochs | train+export min | params |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['contender']} | {r['test_oF1']:.3f} | {r['oF1_forged']:.3f} | {r['oF1_authentic']:.3f} | "
              f"{r['val_oF1']:.3f} | {r.get('cal_val_oF1', nan):.3f} | {r.get('cal_test_oF1', nan):.3f} | "
              f"{r.get('cal_forged', nan):.3f} | {r.get('cal_authentic', nan):.3f} | {r['epochs']} | "
              f"{r['minutes']:.1f} | {r['params']:,} |")


_STRATEGY = []


def _strategy():
    """One strategy for every contender (a second one in the same process would reuse collective keys)."""
    import tensorflow as tf

    if not _STRATEGY:
        _STRATEGY.append(tf.distribute.OneDeviceStrategy("/cpu:0") if not tf.config.list_physical_devices("GPU")
                         else tf.distribute.MirroredStrategy())
    return _STRATEGY[0]


if __name__ == "__main__":
    app.run(main)
