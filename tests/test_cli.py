"""Flags derived from config dataclasses: one default, one help text, bounds checked when parsing."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from preprocessing import cli, hyperparams
from preprocessing.convert import ConvertConfig, OutputConfig
from trainer.config import ModelConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parsed(cls, *argv):
    values = flags.FlagValues()
    cli.define_flags(cls, flag_values=values)
    values(["prog", *argv])
    return values


def test_every_option_of_the_trainer_is_a_flag_with_the_configs_default():
    values = parsed(TrainConfig)
    cfg = cli.from_flags(TrainConfig, values)
    assert cfg == TrainConfig()  # nothing restated: the flags' defaults are the dataclass's
    options = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag")]
    options += [f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("flag")]
    assert sorted(options) == sorted(name for name in values if name not in ("help", "helpshort", "helpfull",
                                                                             "helpxml", "flagfile", "undefok"))
    assert "exit_after_epoch" not in values and "export" not in values  # test hooks are not flags


def test_values_bounds_and_choices_come_from_the_config():
    cfg = cli.from_flags(TrainConfig, parsed(TrainConfig, "--width=8", "--correlation_levels=1,2", "--verbose=2",
                                             "--nomatch_field", "--loss=dice"))
    assert cfg.model.width == 8 and cfg.model.correlation_levels == (1, 2) and cfg.verbose == 2
    assert cfg.model.match_field is False and cfg.loss == "dice"
    for bad in ("--batch_size=0", "--loss=hinge", "--forged_fraction=1.5", "--width=0"):
        with pytest.raises(flags.IllegalFlagValueError):
            parsed(TrainConfig, bad)
    assert cli.from_flags(ConvertConfig, parsed(ConvertConfig)) == ConvertConfig()
    with pytest.raises(flags.IllegalFlagValueError):
        parsed(OutputConfig, "--compression=zip")


def test_changed_fields_name_what_differs():
    old = TrainConfig(data_dir="d", model_dir="m").reproducible_dict()
    new = dataclasses.replace(TrainConfig(data_dir="d", model_dir="m"), epochs=3,
                              model=ModelConfig(width=8)).reproducible_dict()
    assert hyperparams.changed_fields(old, new) == ["epochs (50 -> 3)", "model.width (32 -> 8)"]


def test_commands_keep_tensorflows_start_up_lines_out_of_sight(tmp_path):
    """The CUDA/oneDNN lines look like failures to a newcomer; --verbose_logs brings them back."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    args = [sys.executable, "-m", "trainer.main", "--data_dir", str(tmp_path / "none"), "--model_dir",
            str(tmp_path / "m")]
    quiet = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2 and "manifest.json" in quiet.stderr
    assert "cuda" not in quiet.stderr.lower() and "oneDNN" not in quiet.stderr and "apitools" not in quiet.stderr
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    loud = subprocess.run(args + ["--verbose_logs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    # Which start-up lines TensorFlow prints depends on the CPU (oneDNN's notice on some x86 CPUs
    # only) and on CUDA libraries being present (the stub's "Could not find cuda drivers").
    assert loud.returncode == 2 and "Traceback" in loud.stderr
    assert "oneDNN" in loud.stderr or "cuda" in loud.stderr.lower(), loud.stderr
