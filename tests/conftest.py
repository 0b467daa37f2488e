"""Shared fixtures. TensorFlow is imported once per pytest process.

The CPU is split into two logical devices before TensorFlow initialises, so the
MirroredStrategy path runs with two replicas on a machine without GPUs.
"""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


@pytest.fixture(scope="session")
def two_cpus():
    """One MirroredStrategy over the two logical CPUs for the whole session: two such objects in one
    process reuse collective keys, and a second one's all-reduce then fails (shape mismatch)."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _synth(tmp_path_factory, name: str, **kwargs) -> str:
    from preprocessing import synth

    out = str(tmp_path_factory.mktemp(name))
    synth.generate(out, **kwargs)
    return out


def _records(input_dir: str, tmp_path_factory, name: str, **kwargs) -> str:
    from preprocessing.job import run_pipeline

    out = str(tmp_path_factory.mktemp(name))
    run_pipeline(input_dir=input_dir, output_dir=out, image_size=64, num_shards=2, **kwargs)
    return out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset in the competition layout (generated once per test session)."""
    return _synth(tmp_path_factory, "synth", num_train=24, num_test=8, seed=7, min_size=64, max_size=200,
                  style="photos")


@pytest.fixture(scope="session")
def figures_dir(tmp_path_factory):
    """Compound figures on small pages (160-320 px wide): panels, decorations and copy-moves."""
    return _synth(tmp_path_factory, "figures", num_train=12, num_test=4, seed=3, min_size=160, max_size=320,
                  style="figures")


@pytest.fixture(scope="session")
def records_dir(synth_dir, tmp_path_factory):
    """The Beam job's output (DirectRunner) for ``synth_dir`` at 64 px, PNG-encoded, gzip, with the
    matcher's evidence maps: every image has a side over 64, so all are resized to 64 x 64."""
    return _records(synth_dir, tmp_path_factory, "records", encoding="png", compression="gzip", val_fraction=0.25)


@pytest.fixture(scope="session")
def small_synth_dir(tmp_path_factory):
    """Synthetic images of 40-72 px: most fit in 64 x 64, the rest have a side over 64."""
    return _synth(tmp_path_factory, "small_synth", num_train=20, num_test=4, seed=11, min_size=40, max_size=72,
                  style="photos")


@pytest.fixture(scope="session")
def small_records_dir(small_synth_dir, tmp_path_factory):
    """The Beam job's output for ``small_synth_dir`` at 64 px (raw, uncompressed): images that fit
    are stored at their own size and enlarged on the device; the others are resized to 64 x 64.
    Without evidence maps: they read as zeros, as records of schema version 2 do."""
    return _records(small_synth_dir, tmp_path_factory, "small_records", encoding="raw", compression="none",
                    val_fraction=0.5, evidence=False)
