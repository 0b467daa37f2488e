"""Training end to end on the Beam job's real TFRecords: two replicas, mixed precision, resume
after a hard exit, two worker processes, export and reload in a process that never imports trainer.

Everything is tiny (64 px, width 4-8, depth 2, a few steps); the subprocess tests are the slow part.
"""
from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from serving.postprocess import PostprocessConfig
from trainer import data, train
from trainer.model import ModelConfig, model_images

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
    with open(os.path.join(model_dir, train.CSV_LOG)) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_cpus():
    """One strategy for the module: two MirroredStrategy objects in one process reuse collective keys."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def test_mirrored_two_replicas_train_export_and_reload(small_records_dir, tmp_path, two_cpus):
    """On records mostly stored below the model size: each replica enlarges its images on its device."""
    data_dir = small_records_dir
    model_dir = str(tmp_path / "m")
    cfg = train.TrainConfig(data_dir=data_dir, model_dir=model_dir,
                            model=ModelConfig(width=8, depth=2, image_head=True, match_field=True),
                            epochs=1, batch_size=4, steps_per_epoch=2, precision="float32", verbose=0)
    result = train.run(cfg, strategy=two_cpus)
    assert result["replicas"] == 2 and result["epochs_run"] == 1
    (row,) = read_log(model_dir)
    assert math.isfinite(float(row["loss"])) and 0.0 <= float(row["val_of1"]) <= 1.0
    assert os.path.exists(os.path.join(model_dir, train.BEST_WEIGHTS))

    meta = json.load(open(os.path.join(result["export_dir"], "metadata.json")))
    assert meta["image_size"] == 64 and meta["arch"] == "unet" and meta["image_head"] is True
    assert meta["postprocess"] == PostprocessConfig(image_threshold=train.IMAGE_HEAD_THRESHOLD).to_dict()
    assert meta["counts"] == data.read_manifest(data_dir)["counts"] and meta["precision"] == "float32"
    assert meta["model"]["width"] == 8 and meta["model"]["match_field"] is True and "git_commit" in meta

    images = model_images(next(iter(data.make_dataset(data_dir, "val", 4, training=False)))[0]).numpy()
    expected = result["model_obj"](images, training=False)  # the trained (mirrored) model
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
    cfg = train.TrainConfig(data_dir=data_dir, model_dir=str(tmp_path / "m"),
                            model=ModelConfig(width=4, depth=2, self_correlation=False, image_head=False),
                            epochs=3, batch_size=4, steps_per_epoch=2, precision="mixed_bfloat16",
                            max_minutes=1e-4, export=False, verbose=0)
    result = train.run(cfg, strategy=two_cpus)
    assert result["replicas"] == 2 and result["precision"] == "mixed_bfloat16"
    assert result["epochs_run"] == 1  # the time budget stopped it after its first step
    assert math.isfinite(result["best"]["loss"])
    model = result["model_obj"]
    assert model.get_layer("rgb0_conv1").compute_dtype == "bfloat16"
    out = model(np.zeros((2, 64, 64, 3), np.uint8), training=False)
    assert set(out) == {"mask"} and out["mask"].dtype == tf.float32
    assert "export_dir" not in result
    assert keras_policy() == "float32"  # run() does not leak its policy


def keras_policy() -> str:
    import keras

    return keras.config.dtype_policy().name


def test_validation_of1_uses_serving_metric(data_dir):
    ds = data.make_dataset(data_dir, "val", 4, training=False, with_ids=True)
    counts = data.read_manifest(data_dir)["counts"]["val"]
    cfg = PostprocessConfig()

    def constant(value):
        return lambda images: {"mask": tf.fill(tf.concat([tf.shape(images)[:3], [1]], 0), value)}

    nothing = train.score_dataset(constant(0.0), ds, cfg)
    assert nothing["of1"] == pytest.approx(counts["authentic"] / counts["total"])
    everything = train.score_dataset(constant(1.0), ds, cfg)
    assert everything["of1_authentic"] == 0.0 and everything["pred_forged_fraction"] == 1.0
    # An image head below the gate turns the same everything-map into "authentic".
    gated = train.score_dataset(
        lambda x: {**constant(1.0)(x), "image": tf.zeros([tf.shape(x)[0], 1])}, ds,
        train.postprocess_config(image_head=True))
    assert gated["of1"] == pytest.approx(nothing["of1"])


def test_gt_instances_are_connected_components():
    mask = np.zeros((20, 20, 1), np.float32)
    mask[1:5, 1:5] = 1
    mask[10:16, 12:18] = 1
    inst = train.gt_instances(mask)
    assert sorted(int(m.sum()) for m in inst) == [16, 36]


def test_kill_and_resume_continues_at_epoch_2(data_dir, tmp_path):
    model_dir = str(tmp_path / "m")
    cmd = trainer_cmd(data_dir, model_dir, "--epochs=2", "--strategy=one_device", "--self_correlation=false",
                      "--image_head=false")
    first = subprocess.run(cmd + ["--exit_after_epoch=1"], env=env(), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 75, first.stderr[-3000:]
    assert [r["epoch"] for r in read_log(model_dir)] == ["0"]
    assert os.listdir(os.path.join(model_dir, "backup"))  # BackupAndRestore's state survived the exit
    assert not os.path.exists(os.path.join(model_dir, "export"))

    second = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "epoch 2/2" in second.stdout and "epoch 1/2" not in second.stdout
    assert [r["epoch"] for r in read_log(model_dir)] == ["0", "1"]
    assert os.path.exists(os.path.join(model_dir, "export", "saved_model.pb"))


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
