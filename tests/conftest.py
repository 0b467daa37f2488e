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
def synth_dir(tmp_path_factory):
    """A small synthetic dataset in the competition layout (generated once per test session)."""
    from preprocessing import synth

    out = str(tmp_path_factory.mktemp("synth"))
    synth.generate(out, num_train=24, num_test=8, seed=7, min_size=64, max_size=200)
    return out


@pytest.fixture(scope="session")
def records_dir(synth_dir, tmp_path_factory):
    """The Beam job's output (DirectRunner) for ``synth_dir`` at 64 px, PNG-encoded, gzip."""
    from preprocessing.main import run_pipeline

    out = str(tmp_path_factory.mktemp("records"))
    run_pipeline(input_dir=synth_dir, output_dir=out, image_size=64, encoding="png",
                 compression="gzip", num_shards=2, val_fraction=0.25)
    return out
