"""What the machine refuses is one line naming the path: a full disk (a real tmpfs, filled), remote
paths that cannot be reached or do not exist; a failed Beam scoring job leaves no ``beam-temp-*`` folders behind."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from preprocessing.outputs import PROBE_BYTES
from serving.matcher import CRASH_TEST_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", **env))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    rng = np.random.default_rng(2)
    root = tmp_path_factory.mktemp("env_images")
    for k in range(3):
        cv2.imwrite(str(root / f"img{k}.png"), cv2.GaussianBlur(rng.integers(0, 256, (80, 96, 3), np.uint8), (5, 5), 0))
    return str(root)


@pytest.fixture
def full_disk(tmp_path):
    """A real tmpfs (needs root and mount), filled with one file until the kernel says ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={PROBE_BYTES // 2}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        with pytest.raises(OSError) as info, open(mount / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
        assert info.value.errno == 28  # ENOSPC: the disk is full
        yield str(mount)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_refused_before_any_work_in_one_line(full_disk, image_dir):
    """Before: the empty probe passed on a full disk; the run failed after its work with a traceback."""
    output = os.path.join(full_disk, "out", "sub.csv")
    proc = run("serving.score", "--detector", "matcher", "--workers", "1", "--input_dir", image_dir,
               "--output", output)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: cannot write output {output}: No space left on device"
    assert "Traceback" not in proc.stderr and "matching" not in proc.stderr  # no image was matched
    assert sorted(os.listdir(os.path.dirname(output))) == []  # the probe is gone


BUCKET = "gs://copymove-no-such-bucket-4f1d"  # unreachable offline, absent online: an error either way


@pytest.mark.parametrize("args, path", [
    (["serving.score", "--detector", "matcher", "--output", f"{BUCKET}/sub.csv"], f"{BUCKET}/sub.csv"),
    (["serving.score", "--detector", "network", "--model_dir", f"{BUCKET}/m", "--output", "{new}"], f"{BUCKET}/m"),
    (["serving.score", "--detector", "network", "--model_dir", "ram://nothing/m", "--output", "{new}"],
     "ram://nothing/m"),
    (["serving.evaluate", "--solution", f"{BUCKET}/solution.csv", "--submission", "{sub}"], f"{BUCKET}/solution.csv"),
    (["serving.evaluate", "--solution", "ram://nothing/solution.csv", "--submission", "{sub}"],
     "ram://nothing/solution.csv"),
])
def test_remote_paths_that_fail_are_one_line_naming_the_path(args, path, image_dir, tmp_path):
    """Before: TensorFlow tracebacks (a FailedPreconditionError for an HTTP failure, a NotFoundError
    without a message)."""
    sub = tmp_path / "sub.csv"  # a submission for serving.evaluate; {new}: serving.score's local output
    sub.write_text("case_id,annotation\n")
    args = [a.format(sub=sub, new=tmp_path / "new.csv") if a.startswith("{") else a for a in args]
    if args[0] == "serving.score":
        args += ["--input_dir", image_dir, "--workers", "1"]
    proc = run(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and lines[-1].startswith("error: ") and path in lines[-1], lines[-1]


def test_a_failed_beam_scoring_job_leaves_no_beam_temp_folders(image_dir, tmp_path):
    """A Beam worker process killed mid-job (the matcher's test hook, multi-processing DirectRunner):
    the job fails, and the folders WriteToText staged its shards in are removed; a folder of the same
    pattern that this run did not create stays."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "beam-temp-someone-elses").mkdir()
    proc = run("serving.beam_score", "--detector", "matcher", "--input_dir", image_dir, "--output",
               str(out / "sub.csv"), "--direct_running_mode=multi_processing", "--direct_num_workers=1",
               **{CRASH_TEST_ENV: "img1.png"})
    assert proc.returncode != 0
    assert sorted(os.listdir(out)) == ["beam-temp-someone-elses"]
