"""The matcher's worker processes under real signals: a worker killed mid-run costs at most its image
(an error record naming it), never the run; workers do not outlive a killed ``serving.score``."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from serving.matcher import CRASH_TEST_ENV, PARENT_POLL_S
from serving.submission import errors_path, read_side_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [f"img{k}.png" for k in range(6)]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Six small textured images (the matcher takes well under a second on each)."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("workers")
    for name in NAMES:
        cv2.imwrite(str(root / name), cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (5, 5), 0))
    return str(root)


def score_command(image_dir: str, output: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "serving.score", "--detector", "matcher", "--input_dir", image_dir,
            "--output", output, "--workers", "2", *extra]


def environment(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", **extra)


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_killed_by_its_image_costs_that_image_only(image_dir, tmp_path):
    """img3.png kills the worker reading it with SIGKILL, each time (as an out-of-memory kill would):
    it becomes a ``worker_crashed`` error record, and every other image is scored."""
    output = str(tmp_path / "sub.csv")
    proc = subprocess.run(score_command(image_dir, output), cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=environment(**{CRASH_TEST_ENV: "img3.png"}))
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(output, keep_default_na=False)
    assert sorted(rows["case_id"]) == sorted(n[:-4] for n in NAMES)
    errors = read_side_file(output, errors_path(output))
    assert [(e["case_id"], e["reason"].split(":")[0]) for e in errors] == [("img3", "worker_crashed")]
    assert errors[0]["path"].endswith("img3.png")
    evidence = read_side_file(output, str(tmp_path / "sub.evidence.jsonl"))
    assert sorted(e["case_id"] for e in evidence) == sorted(n[:-4] for n in NAMES if n != "img3.png")


def test_a_worker_killed_from_outside_is_replaced_and_its_images_retried(image_dir, tmp_path):
    """SIGKILL to a worker of a running serving.score: the run completes with every image scored."""
    output = str(tmp_path / "sub.csv")
    proc = subprocess.Popen(score_command(image_dir, output), cwd=REPO, env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = children(proc.pid)
    assert victims, "serving.score started no worker"
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = pd.read_csv(output, keep_default_na=False)
    assert sorted(rows["case_id"]) == sorted(n[:-4] for n in NAMES)
    assert not os.path.exists(errors_path(output)) or read_side_file(output, errors_path(output)) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_exit_when_serving_score_is_killed(image_dir, tmp_path, sig):
    """``kill`` / ``kill -9`` of the main process: its workers are gone within the parent poll interval."""
    slow = tmp_path / "slow"
    slow.mkdir()
    rng = np.random.default_rng(1)
    for k in range(4):  # big enough that the run is still matching when the signal comes
        cv2.imwrite(str(slow / f"big{k}.png"), cv2.GaussianBlur(rng.integers(0, 256, (1400, 1400, 3), np.uint8),
                                                                (5, 5), 0))
    proc = subprocess.Popen(score_command(str(slow), str(tmp_path / "sub.csv")), cwd=REPO, env=environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) >= 2 and proc.poll() is None
    proc.send_signal(sig)
    proc.wait(timeout=30)
    deadline = time.monotonic() + PARENT_POLL_S + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if alive(w)]
    for w in left:  # do not leak them into the rest of the session
        os.kill(w, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"
