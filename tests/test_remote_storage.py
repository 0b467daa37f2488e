"""Every path may be remote: the Beam job on a Beam file system of its own scheme (``beamtest://``),
training, calibration and scoring on TensorFlow's in-memory ``ram://`` file system. No network."""
from __future__ import annotations

import os
import shutil

import beam_test_fs
import pandas as pd
import pytest
import tensorflow as tf

from preprocessing.job import run_pipeline

RAM = "ram://copymove-test"


def copy_to_ram(local_dir: str, ram_dir: str) -> None:
    for d, _, names in os.walk(local_dir):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), local_dir)
            tf.io.gfile.makedirs(os.path.dirname(f"{ram_dir}/{rel}"))
            tf.io.gfile.copy(os.path.join(d, n), f"{ram_dir}/{rel}", overwrite=True)


@pytest.fixture(scope="module")
def beam_run(small_synth_dir, small_records_dir):
    """The Beam job with its input and output under beamtest://."""
    shutil.copytree(small_synth_dir, beam_test_fs.local("beamtest://in"), dirs_exist_ok=True)
    manifest = run_pipeline("beamtest://in", "beamtest://out", image_size=64, encoding="raw", compression="none",
                            val_fraction=0.5, evidence=False)
    yield manifest, small_records_dir
    shutil.rmtree(beam_test_fs.ROOT, ignore_errors=True)


def test_beam_job_reads_and_writes_through_a_beam_file_system(beam_run):
    manifest, local_records = beam_run
    out = beam_test_fs.local("beamtest://out")
    names = sorted(os.listdir(out))
    assert "manifest.json" in names and "errors.jsonl" in names
    assert any(n.startswith("train-") for n in names) and any(n.startswith("val-") for n in names)
    assert not [n for n in os.listdir(os.path.dirname(out)) if ".tmp-" in n]  # staging moved into place
    from preprocessing.records import read_manifest

    local = read_manifest(local_records)  # the same corpus and options, written to a local folder
    assert manifest["counts"] == local["counts"] and manifest["written"] == local["written"]
    assert manifest["options"]["input_dir"] == "beamtest://in"


def test_train_calibrate_and_score_on_ram(beam_run, small_synth_dir, tmp_path):
    from preprocessing.cases import discover_test_images
    from serving import calibrate, network
    from serving.saved_model import load
    from serving.submission import write_outputs
    from trainer import train
    from trainer.config import ModelConfig, TrainConfig

    records, model_dir, images = f"{RAM}/records", f"{RAM}/model", f"{RAM}/images"
    copy_to_ram(beam_test_fs.local("beamtest://out"), records)
    copy_to_ram(os.path.join(small_synth_dir, "test_images"), images)
    cfg = TrainConfig(data_dir=records, model_dir=model_dir, model=ModelConfig(width=4, depth=2, match_field=False,
                      evidence=False, self_correlation=False), epochs=2, batch_size=4, steps_per_epoch=2,
                      precision="float32", verbose=0, jpeg_augment=False)
    result = train.run(cfg, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert result.epochs_run == 2 and result.export_dir == f"{model_dir}/export"
    for name in ("config.json", "state.json", "training_log.csv", "best.weights.h5", "export/saved_model.pb",
                 "export/metadata.json"):
        assert tf.io.gfile.exists(f"{model_dir}/{name}"), name
    assert not tf.io.gfile.exists(f"{model_dir}/backup")  # removed after the export, on ram:// too

    report = calibrate.calibrate(model_dir, data_dir=records, thresholds=[0.3, 0.6], min_areas=[0, 16],
                                 progress=False)
    from preprocessing.records import read_manifest

    assert report["images"] == read_manifest(records)["counts"]["val"]["total"]
    assert load(model_dir).metadata["calibration"]["oF1_after"] == report["oF1_after"]  # written to ram://

    model = load(model_dir)
    remote, _ = network.score_items(discover_test_images(images)[0], model, batch_size=4, progress=False)
    write_outputs(f"{RAM}/out/submission.csv", remote.rows, remote.errors)
    local, _ = network.score_items(discover_test_images(small_synth_dir)[0], model, batch_size=4, progress=False)
    assert remote.rows == local.rows and len(remote.rows) == len(os.listdir(os.path.join(small_synth_dir,
                                                                                         "test_images")))
    with tf.io.gfile.GFile(f"{RAM}/out/submission.csv") as f:
        assert list(pd.read_csv(f, dtype=str, keep_default_na=False)["case_id"]) == [r[0] for r in local.rows]
