"""Nothing lost: every command refuses, before any work, an output that would destroy data, and writes
through temporary names. Real commands in real processes on real files; the paths' contents are
checked to be untouched after each refusal."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from checks import refused
from tiny_model import export_tiny

from preprocessing import outputs, synth
from preprocessing.errors import UsageError
from serving.submission import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(folder) -> dict:
    """Every file below ``folder`` with its bytes: what must survive a refusal."""
    out = {}
    for d, _, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), folder)] = f.read()
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_tiny(str(tmp_path_factory.mktemp("rule_model") / "model"))


# ----------------------------------------------------------------------------- the rule itself

def test_check_file_refuses_directories_protected_places_and_existing_files(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "old.csv").write_text("keep")
    with pytest.raises(UsageError, match="is an existing directory"):
        outputs.check_file(str(tmp_path / "inputs"))
    with pytest.raises(UsageError, match="inside the input directory"):
        outputs.check_file(str(tmp_path / "inputs" / "x.csv"), protected={"input directory": str(tmp_path / "inputs")})
    with pytest.raises(UsageError, match="exists; pass --overwrite"):
        outputs.check_file(str(tmp_path / "old.csv"))
    assert outputs.check_file(str(tmp_path / "old.csv"), overwrite=True) == str(tmp_path / "old.csv")
    with pytest.raises(UsageError, match="cannot write"):  # the parent is a file: nothing can be created there
        outputs.check_file(str(tmp_path / "old.csv" / "sub.csv"))
    assert (tmp_path / "old.csv").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["inputs", "old.csv"]


def test_atomic_file_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with outputs.atomic_file(str(path)) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_staged_dir_replaces_only_owned_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("old")
    (out / "users.txt").write_text("keep")
    with outputs.staged_dir(str(out), owned=lambda rel: rel.startswith("mine")) as staging:
        assert not os.listdir(staging)
        (tmp_path / os.path.basename(staging) / "mine2.txt").write_text("new")
    assert sorted(os.listdir(out)) == ["mine2.txt", "users.txt"]
    assert (out / "users.txt").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["out"]


# ----------------------------------------------------------------------------- the commands

def test_beam_score_refuses_a_directory_and_the_model_dir(model_dir, synth_dir, tmp_path):
    """Before: --output DIR deleted DIR (with --output MODEL_DIR, the whole model) and exited 0."""
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "old_submission.csv").write_text("keep me")
    before = snapshot(model_dir)
    images = os.path.join(synth_dir, "test_images")
    refused(run("serving.beam_score", "--model_dir", model_dir, "--input_dir", images, "--output", str(precious)),
            "is an existing directory")
    refused(run("serving.beam_score", "--model_dir", model_dir, "--input_dir", images, "--output", model_dir),
            "is an existing directory")
    refused(run("serving.beam_score", "--model_dir", model_dir, "--input_dir", images, "--output",
                os.path.join(model_dir, "export", "sub.csv")), "inside the model directory")
    assert snapshot(precious) == {"old_submission.csv": b"keep me"} and snapshot(model_dir) == before


def test_score_refuses_before_scoring_and_writes_atomically(model_dir, synth_dir, tmp_path):
    images = os.path.join(synth_dir, "test_images")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run("serving.score", "--model_dir", model_dir, "--input_dir", images, "--output", str(blocker / "s.csv"))
    refused(proc, "cannot write", "s.csv")
    assert "scoring" not in proc.stderr  # refused before any image was scored
    refused(run("serving.score", "--model_dir", model_dir, "--input_dir", images, "--output",
                os.path.join(images, "sub.csv")), "inside the input directory")
    out = tmp_path / "sub.csv"
    ok = run("serving.score", "--model_dir", model_dir, "--input_dir", images, "--output", str(out))
    assert ok.returncode == 0, ok.stderr[-2000:]
    refused(run("serving.score", "--model_dir", model_dir, "--input_dir", images, "--output", str(out)),
            "exists; pass --overwrite")
    assert run("serving.score", "--model_dir", model_dir, "--input_dir", images, "--output", str(out),
               "--overwrite").returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["a_file", "sub.csv", "sub.errors.jsonl"]  # no temporary files left


def test_calibrate_checks_metadata_first_and_prints_before_writing(model_dir, records_dir, tmp_path):
    proc = run("serving.calibrate", "--model_dir", model_dir, "--data_dir", records_dir, "--thresholds", "0.4,0.6",
               "--min_areas", "0,16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    after = next(i for i, line in enumerate(lines) if "network after:" in line)
    written = next(i for i, line in enumerate(lines) if "written to" in line)
    assert after < written  # the chosen values are on screen before the file is replaced
    meta = os.path.join(model_dir, "export", "metadata.json")
    os.rename(meta, meta + ".moved")
    os.mkdir(meta)  # metadata.json that cannot be written: a directory
    try:
        proc = run("serving.calibrate", "--model_dir", model_dir, "--data_dir", records_dir)
        assert proc.returncode == 2 and "metadata" in proc.stderr.strip().splitlines()[-1]
        assert "predict val" not in proc.stderr  # nothing was computed
    finally:
        os.rmdir(meta)
        os.rename(meta + ".moved", meta)


def test_synth_refuses_a_non_empty_folder_and_overwrite_removes_only_its_own(tmp_path):
    """Before: old images stayed next to the new ones (40 images, a test_solution.csv of 2 rows)."""
    out = tmp_path / "data"
    synth.generate(str(out), num_train=8, num_test=4, seed=1, min_size=48, max_size=80)
    (out / "README.txt").write_text("the user's notes")
    with pytest.raises(UsageError, match="not empty"):
        synth.generate(str(out), num_train=2, num_test=2, seed=2, min_size=48, max_size=80)
    synth.generate(str(out), num_train=2, num_test=2, seed=2, min_size=48, max_size=80, overwrite=True)
    files = snapshot(out)
    assert files["README.txt"] == b"the user's notes"
    assert len([f for f in files if f.startswith(("train_images", "test_images"))]) <= 2 + 1 + 2
    assert len(files["test_solution.csv"].decode().strip().splitlines()) == 1 + 2
    proc = run("preprocessing.synth", "--output_dir", str(out), "--num_train", "2", "--num_test", "2",
               "--min_size", "64", "--max_size", "64")
    refused(proc, "max_size")  # square images were written although the README says never square


def test_beam_job_refuses_non_empty_and_input_folders(synth_dir, tmp_path):
    out = tmp_path / "records"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    refused(run("preprocessing.main", "--input_dir", synth_dir, "--output_dir", str(out)), "not empty")
    refused(run("preprocessing.main", "--input_dir", synth_dir, "--output_dir", synth_dir), "input directory")
    assert snapshot(out) == {"keep.txt": b"x"}


def test_beam_job_with_overwrite_replaces_its_own_shards_only(small_synth_dir, tmp_path):
    from preprocessing.job import run_pipeline

    out = str(tmp_path / "records")
    first = run_pipeline(small_synth_dir, out, image_size=64, num_shards=3, evidence=False)
    open(os.path.join(out, "notes.txt"), "w").write("mine")
    second = run_pipeline(small_synth_dir, out, image_size=64, num_shards=1, overwrite=True, evidence=False)
    names = sorted(os.listdir(out))
    assert first["num_shards"] == {"train": 3, "val": 3} and second["num_shards"] == {"train": 1, "val": 1}
    assert [n for n in names if n.endswith(".tfrecord.gz")] == ["train-00000-of-00001.tfrecord.gz",
                                                                 "val-00000-of-00001.tfrecord.gz"]
    assert "notes.txt" in names and not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_empty_inputs_fail_clearly(tmp_path, model_dir):
    (tmp_path / "layout" / "train_images" / "authentic").mkdir(parents=True)
    refused(run("preprocessing.main", "--input_dir", str(tmp_path / "layout"), "--output_dir",
                str(tmp_path / "rec")), "no training image found")
    (tmp_path / "empty").mkdir()
    refused(run("serving.score", "--model_dir", model_dir, "--input_dir", str(tmp_path / "empty"), "--output",
                str(tmp_path / "s.csv")), "holds no image", "--allow_empty")
    ok = run("serving.score", "--model_dir", model_dir, "--input_dir", str(tmp_path / "empty"), "--output",
             str(tmp_path / "s.csv"), "--allow_empty")
    assert ok.returncode == 0 and (tmp_path / "s.csv").read_text() == '"case_id","annotation"\n'


@pytest.mark.parametrize("args,words", [
    (("serving.score", "--input_dir", "/nonexistent/images"), ("/nonexistent/images",)),
    (("serving.score", "--input_dir", ".", "--batch_size", "0"), ("batch_size",)),
    (("serving.score", "--input_dir", ".", "--threshold", "2"), ("threshold",)),
    (("serving.score", "--input_dir", ".", "--min_area", "-5"), ("min_area",)),
    (("serving.calibrate", "--data_dir", "/nonexistent/records"), ("/nonexistent/records",)),
    (("serving.calibrate", "--data_dir", ".", "--thresholds", "0.3,1.5"), ("--thresholds",)),
])
def test_user_errors_are_one_line_not_tracebacks(args, words, model_dir, tmp_path):
    proc = run(*args[:1], "--model_dir", model_dir, *args[1:], "--output" if args[0] == "serving.score" else
               "--dry_run", *((str(tmp_path / "s.csv"),) if args[0] == "serving.score" else ()))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    text = proc.stderr.strip()
    assert len(text.splitlines()) <= 3, text  # absl's flag errors add a "Pass --helpfull" hint
    for w in words:
        assert w in text


def test_corrupt_json_files_are_named(tmp_path, model_dir):
    from preprocessing.records import read_manifest
    from serving.saved_model import read_metadata

    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        read_manifest(str(tmp_path))
    export = tmp_path / "export"
    export.mkdir()
    (export / "metadata.json").write_text('{"image_size": ')
    with pytest.raises(ValueError, match="metadata.json: not valid JSON"):
        read_metadata(str(export))


def test_scoring_records_dangling_links_as_unreadable(model_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "ok.png"), np.full((40, 50, 3), 128, np.uint8))
    os.symlink(str(folder / "gone.png"), str(folder / "dangling.png"))
    os.symlink(str(folder / "loop.png"), str(folder / "loop.png"))
    proc = run("serving.score", "--model_dir", model_dir, "--input_dir", str(folder), "--output",
               str(tmp_path / "s.csv"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = (tmp_path / "s.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # every entry has its row
    errors = read_jsonl(str(tmp_path / "s.errors.jsonl"))
    assert {e["case_id"]: e["reason"].split(":")[0] for e in errors} == {"dangling": "unreadable",
                                                                          "loop": "unreadable"}
