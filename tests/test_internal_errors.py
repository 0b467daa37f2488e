"""User errors and bugs are told apart: a mask with no instances is a ``bad_mask`` record (calibration,
the Beam job), not a crash after all the work; an exception that is not a user error says it is a bug."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tiny_model import export_tiny

from preprocessing.cases import discover_training_cases
from preprocessing.job import run_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def no_instance_corpus(synth_dir, tmp_path_factory):
    """The synthetic corpus with one forged image's mask replaced by an array of shape (0, H, W)."""
    root = str(tmp_path_factory.mktemp("zero_instances"))
    shutil.copytree(synth_dir, root, dirs_exist_ok=True)
    masks = os.path.join(root, "train_masks")
    name = sorted(os.listdir(masks))[0]
    h, w = np.load(os.path.join(masks, name)).shape[-2:]
    np.save(os.path.join(masks, name), np.zeros((0, h, w), np.uint8))
    return root, "forged/" + name[:-4]


def test_a_mask_without_instances_is_a_bad_mask_for_calibration(no_instance_corpus, tmp_path):
    """Before: ``cannot reshape array of size 0`` after every image had been predicted."""
    root, case_id = no_instance_corpus
    model_dir = export_tiny(str(tmp_path / "model"))
    proc = subprocess.run([sys.executable, "-m", "serving.calibrate", "--model_dir", model_dir, "--input_dir", root,
                           "--nodetectors", "--thresholds", "0.5", "--min_areas", "16", "--dry_run"],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    skipped = {e["case_id"]: e["reason"] for e in report["skipped_cases"]}
    assert list(skipped) == [case_id]
    assert skipped[case_id].startswith("bad_mask: shape (0, ")
    assert report["images"] + report["skipped"] == len(discover_training_cases(root)[0])


def test_a_mask_without_instances_is_a_bad_mask_for_the_beam_job(no_instance_corpus, tmp_path):
    """Before: tagged ``unexpected_error`` with a traceback in the log."""
    root, case_id = no_instance_corpus
    out = str(tmp_path / "records")
    manifest = run_pipeline(root, out, image_size=0, encoding="raw", compression="none", num_shards=1,
                            evidence=False, val_fraction=0.25)
    with open(os.path.join(out, "errors.jsonl")) as f:
        errors = {e["case_id"]: e for e in map(json.loads, f)}
    name = case_id.split("/")[1]
    assert list(errors) == [name]
    assert errors[name]["reason"].startswith("bad_mask: shape (0, ")
    assert errors[name]["path"].endswith(f"train_masks/{name}.npy")
    assert manifest["errors_by_reason"] == {"bad_mask": 1}
    assert manifest["discovered"] == manifest["written"] + manifest["errors"]


COMMAND = """
import sys
from preprocessing import cli
from preprocessing.errors import BadInput


def main(argv):
    if argv[1] == "bug":
        [][0] if argv[2] == "index" else int("not a number")  # an IndexError / a ValueError deep in the code
    raise BadInput("/data/x.png", "bad_mask: shape (0, 4, 4)")


cli.run(main)
"""


@pytest.mark.parametrize("kind", ["value", "index"])
def test_an_internal_error_says_it_is_a_bug_and_keeps_its_traceback(kind, tmp_path):
    """A ValueError is no longer taken for a user error: it is reported as a bug, with the traceback
    in a log file (or on screen with --verbose_logs)."""
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    env = dict(os.environ, PYTHONPATH=REPO, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(script), "bug", kind], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 1
    first, second = proc.stderr.strip().splitlines()
    assert first.startswith("internal error (a bug in copymove") and ("ValueError" in first or "IndexError" in first)
    log = second.split("traceback in ")[1].split(";")[0]
    assert os.path.dirname(log) == str(tmp_path) and "Traceback (most recent call last)" in open(log).read()
    verbose = subprocess.run([sys.executable, str(script), "bug", kind, "--verbose_logs"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr


def test_a_user_error_is_one_line_naming_the_file(tmp_path):
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    proc = subprocess.run([sys.executable, str(script), "user", "-"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "error: /data/x.png: bad_mask: shape (0, 4, 4)\n"


def test_damaged_text_files_are_bad_input_naming_the_file_not_bugs(tmp_path):
    """A ValueError no longer passes for a user error, so the readers of user-supplied text say which
    file is wrong themselves (before: a bare JSONDecodeError / UnicodeDecodeError, naming nothing)."""
    from preprocessing import fileio
    from preprocessing.errors import BadInput
    from serving.submission import read_jsonl

    lines = tmp_path / "sub.errors.jsonl"
    lines.write_text('{"case_id": "a"}\n{oops\n')
    with pytest.raises(BadInput, match=r"sub.errors.jsonl: line 2 is not JSON"):
        read_jsonl(str(lines))
    latin = tmp_path / "metadata.json"
    latin.write_bytes(b'{"threshold": "\xe9"}')
    with pytest.raises(BadInput, match=r"metadata.json: not UTF-8 text"):
        fileio.read_text(str(latin))
