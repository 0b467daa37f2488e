"""Training end to end on the Beam job's real TFRecords: two replicas, mixed precision, resume
after a hard exit, two worker processes, export and reload in a process that never imports trainer.

Everything is tiny (64 px, width 4-8, depth 2, a few steps); the subprocess tests are the slow part.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import records as records_lib
from serving.postprocess import PostprocessConfig
from trainer import data, run_state, train, validation
from trainer.config import ModelConfig, TrainConfig
from trainer.model import model_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--width=4", "--depth=2", "--batch_size=4", "--steps_per_epoch=2", "--precision=float32", "--verbose=0",
        "--jpeg_augment=false"]


@pytest.fixture(scope="module")
def data_dir(records_dir):
    return records_dir


def env(**extra) -> dict:
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    e.pop("TF_CONFIG", None)
    e.update(extra)
    return e


def trainer_cmd(data_dir, model_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "trainer.main", f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY, *extra]


def read_log(model_dir) -> list[dict]:
    with open(os.path.join(model_dir, run_state.CSV_LOG)) as f:
        return list(csv.DictReader(f))


def test_mirrored_two_replicas_train_export_and_reload(small_records_dir, tmp_path, two_cpus):
    """On records mostly stored below the model size: each replica enlarges its images on its device."""
    data_dir = small_records_dir
    model_dir = str(tmp_path / "m")
    cfg = TrainConfig(data_dir=data_dir, model_dir=model_dir,
                            model=ModelConfig(width=8, depth=2, image_head=True, match_field=True, evidence=False),
                            epochs=1, batch_size=4, steps_per_epoch=2, precision="float32", verbose=0)
    result = train.run(cfg, strategy=two_cpus)
    assert result.replicas == 2 and result.epochs_run == 1
    (row,) = read_log(model_dir)
    assert math.isfinite(float(row["loss"])) and 0.0 <= float(row["val_of1"]) <= 1.0
    assert os.path.exists(os.path.join(model_dir, run_state.BEST_WEIGHTS))

    meta = json.load(open(os.path.join(result.export_dir, "metadata.json")))
    assert meta["image_size"] == 64 and meta["arch"] == "unet" and meta["image_head"] is True
    assert meta["postprocess"] == PostprocessConfig(image_threshold=validation.IMAGE_HEAD_THRESHOLD).to_dict()
    assert meta["counts"] == records_lib.read_manifest(data_dir)["counts"] and meta["precision"] == "float32"
    assert meta["model"]["width"] == 8 and meta["model"]["match_field"] is True and "git_commit" in meta

    images = model_images(next(iter(data.make_dataset(data_dir, "val", 4, training=False)))[0]).numpy()
    expected = result.model(images, training=False)  # the trained (mirrored) model
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np\n"
        "from serving.saved_model import load\n"
        f"m = load({model_dir!r})\n"
        f"probs, head = m.predict(np.load({str(tmp_path / 'images.npy')!r}))\n"
        "assert 'trainer' not in sys.modules, 'serving must not need the trainer'\n"
        f"np.save({str(tmp_path / 'probs.npy')!r}, probs); np.save({str(tmp_path / 'head.npy')!r}, head)\n")
    subprocess.run([sys.executable, "-c", script], check=True, env=env(), cwd=str(tmp_path), timeout=120)
    probs, head = np.load(tmp_path / "probs.npy"), np.load(tmp_path / "head.npy")
    assert probs.dtype == np.float32 and probs.shape == (len(images), 64, 64)
    np.testing.assert_allclose(probs, expected["mask"].numpy()[..., 0], atol=1e-4)
    np.testing.assert_allclose(head, expected["image"].numpy()[:, 0], atol=1e-4)


def test_mixed_bfloat16_two_replicas_and_time_budget(data_dir, tmp_path, two_cpus):
    cfg = TrainConfig(data_dir=data_dir, model_dir=str(tmp_path / "m"),
                            model=ModelConfig(width=4, depth=2, self_correlation=False, image_head=False,
                                            evidence=False),
                            epochs=3, batch_size=4, steps_per_epoch=2, precision="mixed_bfloat16",
                            max_minutes=1e-4, export=False, verbose=0)
    result = train.run(cfg, strategy=two_cpus)
    assert result.replicas == 2 and result.precision == "mixed_bfloat16"
    assert result.epochs_run == 1  # the time budget stopped it after its first step
    assert math.isfinite(result.best["loss"])
    model = result.model
    assert model.get_layer("rgb0_conv1").compute_dtype == "bfloat16"
    out = model(np.zeros((2, 64, 64, 3), np.uint8), training=False)
    assert set(out) == {"mask"} and out["mask"].dtype == tf.float32
    assert result.export_dir is None and result.stage == run_state.TRAINED
    assert keras_policy() == "float32"  # run() does not leak its policy


def keras_policy() -> str:
    import keras

    return keras.config.dtype_policy().name


def test_validation_of1_uses_serving_metric(data_dir):
    ds = data.make_dataset(data_dir, "val", 4, training=False, with_ids=True)
    counts = records_lib.read_manifest(data_dir)["counts"]["val"]
    cfg = PostprocessConfig()

    def constant(value):
        return lambda images: {"mask": tf.fill(tf.concat([tf.shape(images)[:3], [1]], 0), value)}

    nothing = validation.score_dataset(constant(0.0), ds, cfg)
    assert nothing["of1"] == pytest.approx(counts["authentic"] / counts["total"])
    everything = validation.score_dataset(constant(1.0), ds, cfg)
    assert everything["of1_authentic"] == 0.0 and everything["pred_forged_fraction"] == 1.0
    # An image head below the gate turns the same everything-map into "authentic".
    gated = validation.score_dataset(
        lambda x: {**constant(1.0)(x), "image": tf.zeros([tf.shape(x)[0], 1])}, ds,
        validation.postprocess_config(image_head=True))
    assert gated["of1"] == pytest.approx(nothing["of1"])


def test_gt_instances_are_connected_components():
    mask = np.zeros((20, 20, 1), np.float32)
    mask[1:5, 1:5] = 1
    mask[10:16, 12:18] = 1
    inst = validation.gt_instances(mask)
    assert sorted(int(m.sum()) for m in inst) == [16, 36]


def killed_run(cmd: list[str], point: str) -> subprocess.CompletedProcess:
    """The trainer command run by tests/kill_driver.py, which SIGKILLs it at ``point``."""
    driver = [sys.executable, os.path.join(REPO, "tests", "kill_driver.py"), *cmd[3:]]
    proc = subprocess.run(driver, env=env(KILL_AT=point), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed by the signal, not an exit of its own
    return proc


# Two epochs of a small model, killed after the first by ``killed_at_epoch_1``.
RESUMABLE = ("--epochs=2", "--strategy=one_device", "--self_correlation=false", "--image_head=false",
             "--match_field=false")


@pytest.fixture(scope="module")
def killed_at_epoch_1(data_dir, tmp_path_factory) -> str:
    """A run killed after its first epoch, made once: each test resumes its own copy (a run's
    directory may be moved: nothing in it names where it was)."""
    model_dir = str(tmp_path_factory.mktemp("killed") / "m")
    killed_run(trainer_cmd(data_dir, model_dir, *RESUMABLE), "epoch:1")
    return model_dir


def resumable_copy(killed: str, tmp_path) -> str:
    model_dir = str(tmp_path / "m")
    shutil.copytree(killed, model_dir)
    return model_dir


def test_kill_and_resume_continues_at_epoch_2(data_dir, killed_at_epoch_1, tmp_path):
    model_dir = resumable_copy(killed_at_epoch_1, tmp_path)
    cmd = trainer_cmd(data_dir, model_dir, *RESUMABLE)
    assert [r["epoch"] for r in read_log(model_dir)] == ["0"]
    assert os.listdir(os.path.join(model_dir, "backup"))  # BackupAndRestore's state survived the kill
    assert not os.path.exists(os.path.join(model_dir, "export"))

    second = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "epoch 2/2" in second.stdout and "epoch 1/2" not in second.stdout
    assert [r["epoch"] for r in read_log(model_dir)] == ["0", "1"]
    assert os.path.exists(os.path.join(model_dir, "export", "saved_model.pb"))
    assert not os.path.exists(os.path.join(model_dir, "backup"))  # deleted only after the export


def test_kill_during_export_re_exports_and_a_finished_run_says_so(data_dir, tmp_path):
    model_dir = str(tmp_path / "m")
    cmd = trainer_cmd(data_dir, model_dir, "--epochs=1", "--strategy=one_device", "--self_correlation=false",
                      "--image_head=false", "--match_field=false")
    killed_run(cmd, "export")
    assert not os.path.exists(os.path.join(model_dir, "export"))  # no half export under the final name
    assert os.listdir(os.path.join(model_dir, "backup"))  # not deleted before the export was complete
    assert json.load(open(os.path.join(model_dir, run_state.STATE_FILE)))["stage"] == run_state.TRAINED
    log = read_log(model_dir)

    second = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "exporting its best weights" in second.stdout and "epoch 1/1" not in second.stdout
    assert read_log(model_dir) == log  # nothing trained again
    assert os.path.exists(os.path.join(model_dir, "export", "saved_model.pb"))
    assert not os.path.exists(os.path.join(model_dir, "backup"))

    third = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "finished and exported" in third.stdout and json.loads(third.stdout.splitlines()[-1])["epochs_run"] == 0


def test_torn_backup_is_named_and_training_starts_over(data_dir, killed_at_epoch_1, tmp_path):
    model_dir = resumable_copy(killed_at_epoch_1, tmp_path)
    cmd = trainer_cmd(data_dir, model_dir, *RESUMABLE)
    weights = os.path.join(model_dir, "backup", run_state.BACKUP_WEIGHTS)
    with open(weights, "r+b") as f:  # what a kill in the middle of writing it leaves
        f.truncate(os.path.getsize(weights) // 3)

    second = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert weights in second.stdout and "starts over from epoch 1" in second.stdout
    assert "epoch 1/2" in second.stdout and "epoch 2/2" in second.stdout
    assert [r["epoch"] for r in read_log(model_dir)] == ["0", "1"]  # the log does not repeat epoch 1
    assert [n for n in os.listdir(model_dir) if n.startswith("backup.damaged-")]  # kept, not deleted


def test_torn_latest_backup_falls_back_to_the_previous_state(tmp_path):
    """With two saved states, a damaged latest one resumes from the previous, saying so."""
    folder = tmp_path / "backup"
    folder.mkdir()
    import h5py

    with h5py.File(folder / (run_state.BACKUP_WEIGHTS + run_state.PREVIOUS_SUFFIX), "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    (folder / (run_state.BACKUP_META + run_state.PREVIOUS_SUFFIX)).write_text('{"epoch": 3, "batch": 0}')
    (folder / run_state.BACKUP_WEIGHTS).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # torn
    (folder / run_state.BACKUP_META).write_text('{"epoch": 4, "batch": 0}')
    import io

    out = io.StringIO()
    resume = run_state.prepare_backup(str(tmp_path), stream=out)
    assert resume.epoch == 3 and "resuming from the previous state" in out.getvalue()
    assert str(folder / run_state.BACKUP_WEIGHTS) in out.getvalue()
    assert json.loads((folder / run_state.BACKUP_META).read_text())["epoch"] == 3


def test_bad_splits_fail_before_any_training(tmp_path, small_synth_dir):
    from preprocessing.job import run_pipeline

    no_val = str(tmp_path / "no_val")
    run_pipeline(small_synth_dir, no_val, image_size=64, val_fraction=0.0, evidence=False)
    cfg = TrainConfig(data_dir=no_val, model_dir=str(tmp_path / "m1"), model=ModelConfig(width=4, depth=2),
                      epochs=1, batch_size=4, precision="float32", verbose=0)
    with pytest.raises(ValueError, match="val split is empty"):
        train.run(cfg, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    n_train = records_lib.num_examples(no_val, "train")
    too_big = TrainConfig(data_dir=no_val, model_dir=str(tmp_path / "m2"), batch_size=n_train + 1, verbose=0)
    with pytest.raises(ValueError, match=f"fewer than --batch_size {n_train + 1}"):
        train.run(too_big, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert not os.path.exists(tmp_path / "m1") and not os.path.exists(tmp_path / "m2")  # nothing was started


def test_evidence_model_refuses_records_without_evidence(small_records_dir, tmp_path):
    """--evidence is the default: on records the Beam job wrote without evidence maps, the model would
    learn from zeros; the run refuses before any work and says both ways out."""
    cfg = TrainConfig(data_dir=small_records_dir, model_dir=str(tmp_path / "m"), model=ModelConfig(width=4, depth=2),
                      epochs=1, batch_size=4, precision="float32", verbose=0)
    assert cfg.model.evidence
    with pytest.raises(ValueError, match="carry no evidence maps.*--noevidence") as info:
        train.run(cfg, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert small_records_dir in str(info.value) and not os.path.exists(tmp_path / "m")


def test_relaunch_with_another_configuration_names_the_fields(data_dir, tmp_path):
    model_dir = str(tmp_path / "m")
    run_state.save_config(TrainConfig(data_dir=data_dir, model_dir=model_dir, model=ModelConfig(width=8, depth=2)))
    cmd = trainer_cmd(data_dir, model_dir, "--epochs=1")  # width 4, lr default, ...
    proc = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.width (8 -> 4)" in last and "epochs (50 -> 1)" in last
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(model_dir)) == ["config.json"]  # nothing trained, nothing replaced


def test_a_run_is_repeated_from_its_config(data_dir, tmp_path):
    """config.json holds the resolved configuration; --config reads it back (flags still win)."""
    from absl import flags as absl_flags

    from trainer import main as trainer_main

    saved = TrainConfig(data_dir=data_dir, model_dir=str(tmp_path / "a"), model=ModelConfig(width=8, depth=2),
                        epochs=3, learning_rate=5e-4, seed=7)
    run_state.save_config(saved)
    values = absl_flags.FlagValues()
    from preprocessing import cli

    cli.define_flags(type(saved), flag_values=values)
    absl_flags.DEFINE_string("config", None, "", flag_values=values)
    values(["x", f"--config={tmp_path / 'a' / 'config.json'}", f"--model_dir={tmp_path / 'b'}", "--epochs=4"])
    again = trainer_main.resolve(values)
    assert again.model.width == 8 and again.learning_rate == 5e-4 and again.seed == 7
    assert again.epochs == 4 and again.model_dir == str(tmp_path / "b")


def test_a_damaged_shard_is_named(tmp_path, records_dir):
    import shutil

    data = str(tmp_path / "records")
    shutil.copytree(records_dir, data)
    shard = records_lib.resolve_source(data, "train").files[0]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 100)
    cfg = TrainConfig(data_dir=data, model_dir=str(tmp_path / "m"), model=ModelConfig(width=4, depth=2,
                      match_field=False), epochs=1, batch_size=4, steps_per_epoch=40, precision="float32", verbose=0,
                      jpeg_augment=False)
    with pytest.raises(ValueError, match="damaged TFRecord shard") as info:
        train.run(cfg, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert shard in str(info.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_multi_worker(data_dir, tmp_path):
    model_dir = str(tmp_path / "m")
    workers = [f"localhost:{free_port()}", f"localhost:{free_port()}"]
    cmd = trainer_cmd(data_dir, model_dir, "--epochs=1", "--strategy=multi_worker", "--self_correlation=false",
                      "--image_head=false", "--max_minutes=30")
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(cmd, env=env(TF_CONFIG=tf_config), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["replicas"] == 2 and summary["epochs_run"] == 1
        assert math.isfinite(summary["best"]["loss"])
    assert os.path.exists(os.path.join(model_dir, "export", "saved_model.pb"))  # the chief exported
    assert os.path.isdir(os.path.join(model_dir, "workers", "worker_1"))  # the other worker kept apart
