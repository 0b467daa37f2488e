"""Memory follows what an input really holds, measured as the peak RSS of real processes: a 2 GB junk
``x.png`` is refused from its first bytes, a big PNG is decoded without 16-bit and int32 copies, and
serving.evaluate scores 1500 instances per row without a mask per instance (a 100000 x 100000 row is
refused in one line)."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from preprocessing import rle
from preprocessing.errors import BadInput
from preprocessing.images import read_rgb8

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20
# Runs a command and prints its peak resident memory (the largest of its processes), in bytes.
PEAK = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def peak_rss(*args: str) -> tuple[int, int]:
    """(exit status, peak RSS in bytes) of ``python ARGS``."""
    proc = subprocess.run([sys.executable, "-c", PEAK, sys.executable, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=""))
    status, peak = proc.stdout.strip().splitlines()[-1].split()
    return int(status), int(peak)


def sparse_file(path, size: int, head: bytes = b"") -> None:
    """``head`` followed by zeros up to ``size`` bytes, without using the disk for the zeros."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def test_a_2_gb_junk_png_is_refused_without_being_read(tmp_path):
    """Before: read whole before its header was looked at (2.2 GB RSS per worker)."""
    folder = tmp_path / "in"
    folder.mkdir()
    sparse_file(folder / "x.png", 2 << 30)
    output = tmp_path / "sub.csv"
    status, peak = peak_rss("-m", "serving.score", "--detector", "matcher", "--workers", "1", "--input_dir",
                            str(folder), "--output", str(output))
    assert status == 0
    assert peak < 600 * MB, f"peak RSS {peak / MB:.0f} MB"
    from serving.submission import read_jsonl

    assert read_jsonl(str(tmp_path / "sub.errors.jsonl"))[0]["reason"].startswith("not_an_image")


def test_a_file_longer_than_its_header_explains_is_refused_before_reading(tmp_path):
    """A real 40 x 30 PNG header followed by 1 GB: no encoding of 1200 pixels needs that."""
    head = cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    sparse_file(tmp_path / "long.png", 1 << 30, head)
    with pytest.raises(BadInput, match=r"corrupt_image: 1073741824 bytes, more than any encoding of 40x30 pixels"):
        read_rgb8(str(tmp_path / "long.png"))


DECODE = """
import resource, sys
from serving.decode import decode_file_eager
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
decode_file_eager(sys.argv[1], 64)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
"""


def test_the_networks_decoder_holds_few_copies_of_a_big_png(tmp_path):
    """A 36 MP 8-bit PNG (108 MB of pixels) through the scoring pipelines' decoder: before, it was
    decoded at 16 bits and rounded through int32 (~12 copies' worth: 1.3 GB over the baseline)."""
    h = w = 6000
    image = np.zeros((h, w, 3), np.uint8)
    image[::7, ::5] = 200
    path = str(tmp_path / "big.png")
    cv2.imwrite(path, image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del image
    proc = subprocess.run([sys.executable, "-c", DECODE, path], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown = int(proc.stdout.strip().splitlines()[-1])
    assert grown < 4 * h * w * 3, f"decoding grew RSS by {grown / MB:.0f} MB for {h * w * 3 / MB:.0f} MB of pixels"


def many_instances(n: int, h: int, w: int) -> str:
    """``n`` one-pixel instances (every other pixel of the first columns), valid RLE."""
    masks = []
    for k in range(n):
        mask = np.zeros((h, w), np.uint8)
        mask[2 * k % h, 2 * k // h] = 1
        masks.append(mask)
    return rle.encode(masks)


def test_evaluate_scores_1500_instances_per_row_in_bounded_memory(tmp_path):
    """Before: 1.25 GB (every instance a dense float64 row of H x W)."""
    ann = many_instances(1500, 300, 300)
    solution, submission = tmp_path / "solution.csv", tmp_path / "submission.csv"
    solution.write_text("case_id,annotation,height,width\n" + "".join(f"c{k},\"{ann}\",300,300\n" for k in range(4)))
    submission.write_text("case_id,annotation\n" + "".join(f"c{k},\"{ann}\"\n" for k in range(4)))
    status, peak = peak_rss("-m", "serving.evaluate", "--solution", str(solution), "--submission", str(submission))
    assert status == 0
    assert peak < 400 * MB, f"peak RSS {peak / MB:.0f} MB"


def test_a_solution_row_claiming_100000_by_100000_is_refused_in_one_line(tmp_path):
    """Before: 9.3 GiB allocated for the claimed size."""
    solution, submission = tmp_path / "solution.csv", tmp_path / "submission.csv"
    solution.write_text("case_id,annotation,height,width\nhuge,\"[1, 5]\",100000,100000\n")
    submission.write_text("case_id,annotation\nhuge,authentic\n")
    proc = subprocess.run([sys.executable, "-m", "serving.evaluate", "--solution", str(solution), "--submission",
                           str(submission)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "solution row 'huge': 100000x100000 = 10000000000 pixels exceeds the " \
        "limit of 100000000" in proc.stderr
