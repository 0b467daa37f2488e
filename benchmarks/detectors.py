"""The detectors side by side on held-out synthetic photos, compound figures and unfamiliar images.

    python -m benchmarks.detectors --work_dir /tmp/detectors [--seeds 0,1,2] [--minutes 8] [--image_size 128]
        [--num_train 600] [--num_test 100] [--sets photos,figures,unseen] [--networks default,evidence]
        [--workers 2]

For every seed (data, training and test sets all change with it):
1. A training corpus (``mixed`` style) goes through the Beam job with the matcher's evidence maps;
   its val split is the validation data the network, the fused decision and the choice of
   detector are tuned on (the matcher's decision: every split, as ``serving.calibrate`` does).
2. The networks of ``--networks`` train for ``--minutes`` each on the CPU: ``default`` (no evidence
   stream) and ``evidence`` (the trainer's default, with the matcher's evidence map).
   ``serving.calibrate`` then tunes each network's post-processing, the matcher's decision and the
   fused decision, and chooses the default detector, with the pessimistic rule (the test sets are
   never seen).
3. The held-out test sets of ``--sets`` (``benchmarks.seeds.HELD_OUT_SETS``: their own seeds, never
   a tuning seed; ``unseen`` is made of image sources the other styles and the tuning never use)
   are scored by: each network, the matcher, the fused detector with each network, the end-to-end
   default (``auto``: what ``serving.score --detector auto`` runs after that calibration, i.e. the
   row of the detector it chose for the last network of ``--networks``), and "everything
   authentic". oF1 overall / on forged / on authentic images, TP / FP / FN / TN at the image level,
   images per second of scoring, and which copy-moves were found by operation kind and transform
   (a copy is found when a predicted instance matches it with pixel F1 >= 0.5).
The table is printed per test set; with several seeds the spread (min-max) follows.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict

from absl import app, flags

from benchmarks.seeds import HELD_OUT_SETS, held_out_set_seed
from preprocessing import cli

FLAGS = flags.FLAGS
NETWORKS = {"default": False, "evidence": True}  # network name -> whether it reads the evidence map
flags.DEFINE_string("work_dir", "/tmp/copymove_detectors", "Scratch directory (data, records, models).")
flags.DEFINE_list("seeds", ["0"], "One full run (data, training, test sets) per seed.")
flags.DEFINE_integer("num_train", 600, "Training cases of the mixed corpus (about half forged).")
flags.DEFINE_integer("num_test", 100, "Images in each held-out test set.")
flags.DEFINE_list("sets", ["photos", "figures", "unseen"], f"Held-out test sets, of {', '.join(HELD_OUT_SETS)}.")
flags.DEFINE_list("networks", list(NETWORKS), "Networks to train: 'default' (no evidence stream) and/or "
                  "'evidence' (the trainer's default); the last one is the end-to-end default's.")
flags.DEFINE_integer("min_size", 96, "Smallest image side.")
flags.DEFINE_integer("max_size", 1000, "Largest image side (figure pages up to this wide).")
flags.DEFINE_integer("image_size", 128, "Network input size.")
flags.DEFINE_float("minutes", 8.0, "Training wall-clock budget per network.")
flags.DEFINE_integer("width", 16, "Network width.")
flags.DEFINE_integer("depth", 3, "Network depth.")
flags.DEFINE_integer("workers", cli.DEFAULT_WORKERS, "Processes for the matcher and the Beam job.")
flags.DEFINE_bool("reuse", True, "Reuse data, records and trained models already in work_dir.")

AUTO_ROW = "auto (end-to-end default)"
MATCH_F1 = 0.5  # a predicted instance this close to a copy finds it (serving.pictures uses the same bar)


def synth_set(path: str, num_train: int, num_test: int, seed: int, style: str, sources: str = "seen") -> str:
    from preprocessing import synth

    if not (FLAGS.reuse and os.path.exists(os.path.join(path, synth.META_FILE))):
        synth.generate(path, num_train=num_train, num_test=num_test, seed=seed, min_size=FLAGS.min_size,
                       max_size=FLAGS.max_size, style=style, sources=sources, overwrite=True, show_progress=True)
    return path


def records_of(corpus: str, out: str) -> str:
    from preprocessing.job import run_pipeline
    from preprocessing.records import read_manifest

    try:
        if FLAGS.reuse and read_manifest(out).get("evidence"):
            return out
    except (FileNotFoundError, ValueError):
        pass
    args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={FLAGS.workers}"]
    run_pipeline(corpus, out, image_size=FLAGS.image_size, encoding="raw", val_fraction=0.2, evidence=True,
                 overwrite=True, pipeline_args=args if FLAGS.workers > 1 else [])
    return out


def train_network(records: str, model_dir: str, evidence: bool, seed: int) -> dict:
    """Train (or reuse) one network and calibrate every detector on the val split; the calibration
    report."""
    import keras

    from serving import calibrate
    from trainer import train
    from trainer.config import ModelConfig, TrainConfig

    report_path = os.path.join(model_dir, "calibration_report.json")
    if FLAGS.reuse and os.path.exists(report_path):
        with open(report_path) as f:
            return json.load(f)
    shutil.rmtree(model_dir, ignore_errors=True)
    cfg = TrainConfig(data_dir=records, model_dir=model_dir, epochs=500, max_minutes=FLAGS.minutes, seed=seed,
                      model=ModelConfig(width=FLAGS.width, depth=FLAGS.depth, evidence=evidence), verbose=0)
    result = train.run(cfg, strategy=_strategy())
    keras.backend.clear_session()
    report = calibrate.calibrate(model_dir, data_dir=records, progress=False, detectors=True, workers=FLAGS.workers)
    report["epochs"] = result.epochs_run
    with open(report_path, "w") as f:
        json.dump(report, f, default=float)
    return report


def found_by_kind(test_dir: str, rows: dict) -> dict:
    """{"kind:<op kind>" / "transform:<name>": [found, total]} over the forged test images' copies."""
    import pandas as pd

    from preprocessing import rle, synth
    from serving.pictures import match_instances

    with open(os.path.join(test_dir, synth.META_FILE)) as f:
        meta = {c["case_id"]: c for c in json.load(f)["cases"] if c["split"] == "test" and c["forged"]}
    solution = pd.read_csv(os.path.join(test_dir, synth.SOLUTION_FILE), dtype=str, keep_default_na=False)
    out = defaultdict(lambda: [0, 0])
    for r in solution.itertuples(index=False):
        if r.case_id not in meta:
            continue
        h, w = int(r.height), int(r.width)
        truth = rle.decode(r.annotation, h, w)
        pred = rle.decode(rows.get(r.case_id, rle.AUTHENTIC), h, w)
        outcome = match_instances(truth, pred)  # which true instances a prediction matches
        for k, op in enumerate(meta[r.case_id]["ops"]):
            copy = 2 * k + 1  # instances are source, copy per operation
            hit = copy < len(outcome.matched) and outcome.matched[copy]
            for key in (f"kind:{op.get('kind', 'within_image')}", f"transform:{transform_name(op)}"):
                out[key][0] += int(hit)
                out[key][1] += 1
    return dict(out)


def transform_name(op: dict) -> str:
    """The copy-move's change in one word (the synthetic generator records them all)."""
    if op.get("exact", False):
        return "translation"
    for key, name in (("flip", "flip"), ("rot90", "rot90"), ("angle", "rotation"), ("scale", "scale")):
        if op.get(key) not in (None, "", 0, 0.0, 1.0) and not (key == "scale" and op.get(key) == 1):
            return name
    if op.get("gain", 1) != 1 or op.get("offset", 0) != 0:
        return "brightness"
    return "feather" if op.get("feather") else "translation"


def evaluate(test_dir: str, rows: list) -> dict:
    import pandas as pd

    from preprocessing import synth
    from serving.metric import evaluate_frames

    solution = pd.read_csv(os.path.join(test_dir, synth.SOLUTION_FILE), dtype={"case_id": str, "annotation": str},
                           keep_default_na=False)
    s = evaluate_frames(solution, pd.DataFrame(rows, columns=["case_id", "annotation"])).summary
    return {"oF1": s["oF1"], "forged": s["oF1_forged"], "authentic": s["oF1_authentic"],
            "TP": s["forged_detected"], "FP": s["authentic_false_positive"],
            "FN": s["true_forged"] - s["forged_detected"], "TN": s["true_authentic"] - s["authentic_false_positive"]}


def contenders(networks: list[str]) -> list[tuple[str, str, str]]:
    """(row name, detector, network) in table order."""
    plan = [(f"network{'' if n == 'default' else ' + ' + n}", "network", n) for n in networks]
    plan.append(("matcher", "matcher", networks[-1]))
    plan += [(f"fused{'' if n == 'default' else f' (network with {n})'}", "fused", n) for n in networks]
    return plan


def score_all(test_dir: str, models: dict, chosen: str) -> dict:
    """contender -> metrics on one test set; ``chosen``: the detector calibration chose for the
    last network, whose row the end-to-end default's is (the same call with the same settings)."""
    from preprocessing import rle
    from preprocessing.cases import discover_test_images
    from serving import detectors
    from serving.saved_model import load

    items, _ = discover_test_images(test_dir)
    out = {}
    last = FLAGS.networks[-1]
    for name, detector, which in contenders(FLAGS.networks):
        model = load(models[which])
        settings = detectors.Settings.from_metadata(model.metadata)
        t0 = time.monotonic()
        result, _ = detectors.score_items(detector, items, model if detector != "matcher" else None, settings,
                                          FLAGS.workers, progress=False)
        seconds = time.monotonic() - t0
        rows = dict(result.rows)
        out[name] = dict(evaluate(test_dir, result.rows), images_per_s=len(items) / seconds,
                         found=found_by_kind(test_dir, rows))
        if which == last and detector == chosen:
            out[AUTO_ROW] = dict(out[name], chosen=chosen)
    baseline = [(cid, rle.AUTHENTIC) for cid, _ in items]
    out["everything authentic"] = dict(evaluate(test_dir, baseline), images_per_s=float("nan"),
                                       found=found_by_kind(test_dir, dict(baseline)))
    return out


def run_seed(seed: int) -> dict:
    work = os.path.join(FLAGS.work_dir, f"seed{seed}")
    corpus = synth_set(os.path.join(work, "train"), FLAGS.num_train, 0, seed, "mixed")
    records = records_of(corpus, os.path.join(work, f"records{FLAGS.image_size}"))
    models, calibration = {}, {}
    for which in FLAGS.networks:
        models[which] = os.path.join(work, f"model_{which}")
        calibration[which] = train_network(records, models[which], NETWORKS[which], seed)
    chosen = calibration[FLAGS.networks[-1]].get("detectors", {}).get("detector", "network")
    results = {}
    for name in FLAGS.sets:
        style, sources = HELD_OUT_SETS[name]
        test_seed = held_out_set_seed(seed, name)  # the path names it, so a reused set never has another seed
        test = synth_set(os.path.join(work, f"test_{name}_{test_seed}"), 0, FLAGS.num_test, test_seed, style,
                         sources)
        results[name] = score_all(test, models, chosen)
    return {"seed": seed, "chosen": chosen,
            "calibration": {w: c.get("detectors", {}) for w, c in calibration.items()}, "results": results}


def print_tables(runs: list) -> None:
    for style in FLAGS.sets:
        names = list(dict.fromkeys(n for r in runs for n in r["results"][style]))
        print(f"\n{style}: {FLAGS.num_test} held-out images per seed, seeds {', '.join(str(r['seed']) for r in runs)}; "
              f"networks {FLAGS.image_size} px, width {FLAGS.width}, depth {FLAGS.depth}, {FLAGS.minutes:g} CPU min")
        print("| detector | oF1 | forged | authentic | TP | FP | FN | TN | images/s |" + (
            " oF1 min-max |" if len(runs) > 1 else ""))
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if len(runs) > 1 else ""))
        for name in names:
            rs = [r["results"][style][name] for r in runs if name in r["results"][style]]
            mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("oF1", "forged", "authentic", "TP", "FP", "FN",
                                                                 "TN", "images_per_s")}
            spread = f" {min(r['oF1'] for r in rs):.3f}-{max(r['oF1'] for r in rs):.3f} |" if len(runs) > 1 else ""
            print(f"| {name} | {mean['oF1']:.3f} | {mean['forged']:.3f} | {mean['authentic']:.3f} | {mean['TP']:.1f} "
                  f"| {mean['FP']:.1f} | {mean['FN']:.1f} | {mean['TN']:.1f} | {mean['images_per_s']:.2f} |{spread}")
        print("\ncopies found (all seeds):")
        for name in names:
            found = defaultdict(lambda: [0, 0])
            for r in runs:
                for key, (a, b) in r["results"][style][name]["found"].items():
                    found[key][0] += a
                    found[key][1] += b
            print(f"  {name}: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(found.items())))


def main(argv):
    del argv
    for flag, given, known in (("--networks", FLAGS.networks, NETWORKS), ("--sets", FLAGS.sets, HELD_OUT_SETS)):
        unknown = [v for v in given if v not in known]
        if unknown or not given:
            raise app.UsageError(f"{flag}: unknown {unknown or 'empty list'}; expected some of {', '.join(known)}")
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    runs = []
    for seed in (int(s) for s in FLAGS.seeds):
        runs.append(run_seed(seed))
        with open(os.path.join(FLAGS.work_dir, "results.json"), "w") as f:
            json.dump(runs, f, indent=1, default=float)
    for r in runs:
        print(f"seed {r['seed']}: calibration chose {r['chosen']}; validation oF1: " + json.dumps(
            {w: c.get("validation_oF1") for w, c in r["calibration"].items()}))
    print_tables(runs)


_STRATEGY = []


def _strategy():
    import tensorflow as tf

    if not _STRATEGY:
        _STRATEGY.append(tf.distribute.OneDeviceStrategy("/cpu:0"))
    return _STRATEGY[0]


if __name__ == "__main__":
    from preprocessing import cli

    cli.quiet_native_logs()
    app.run(main)
