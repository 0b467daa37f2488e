"""Hostile input, round three (issue 23): inputs never overwritten, only regular files read or
replaced, no hang on a FIFO, side files tied to their submission, duplicate ids and non-UTF-8 names
as error records. Real commands in real processes on real files, each with a timeout: a hang fails."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from checks import refused
from tiny_model import export_tiny

from preprocessing import fileio, outputs, synth
from preprocessing.errors import BadInput, UsageError
from serving.submission import StaleSideFile, errors_path, evidence_path, read_jsonl, read_side_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG = 120  # seconds: far more than any of these small runs takes; a FIFO read would block forever
BAD_NAME = os.fsdecode(b"b\xffd.png")  # a file name that is not UTF-8


def run(*args, timeout=HANG) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def add_duplicate_and_bad_name(data):
    """``a.png`` and ``a.jpg`` (one case id twice) and a file whose name is not UTF-8, in ``data``'s
    test images; returns that folder."""
    tests = data / "test_images"
    png(tests / "a.png", 1)
    png(tests / "a.jpg", 2)
    png(tests / BAD_NAME, 3)
    return tests


def png(path, seed=0, size=64):
    rng = np.random.default_rng(seed)
    ok, data = cv2.imencode(".png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    with open(path, "wb") as f:  # not cv2.imwrite: OpenCV cannot take a name that is not UTF-8
        f.write(data.tobytes())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small dataset in the competition layout (copied by each test before it adds hostile files)."""
    out = str(tmp_path_factory.mktemp("hostile_data"))
    synth.generate(out, num_train=6, num_test=3, seed=5, min_size=64, max_size=96, style="photos")
    return out


@pytest.fixture
def data(dataset, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(dataset, dst)
    return dst


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_tiny(str(tmp_path_factory.mktemp("hostile_model") / "model"))


def errors_by_case(output) -> dict:
    return {e["case_id"]: e["reason"].split(":")[0] for e in read_side_file(str(output), errors_path(str(output)))}


# ----------------------------------------------------------------------------- 1, 2: the output rule

def test_evaluate_never_replaces_its_inputs(data, tmp_path):
    """Before: --per_image_csv = --solution with --overwrite replaced the ground truth."""
    solution = data / "test_solution.csv"
    sub = tmp_path / "sub.csv"
    sol = pd.read_csv(solution, dtype=str)
    pd.DataFrame({"case_id": sol.case_id, "annotation": "authentic"}).to_csv(sub, index=False)
    before = {p: p.read_bytes() for p in (solution, sub)}
    for target in (solution, sub):
        proc = run("serving.evaluate", "--solution", str(solution), "--submission", str(sub), "--per_image_csv",
                   str(target), "--overwrite")
        refused(proc, str(target), "is the")
    assert {p: p.read_bytes() for p in before} == before
    link = tmp_path / "link.csv"
    os.symlink(solution, link)  # the same file under another name
    refused(run("serving.evaluate", "--solution", str(solution), "--submission", str(sub), "--per_image_csv",
                str(link), "--overwrite"), "is the solution")
    ok = run("serving.evaluate", "--solution", str(solution), "--submission", str(sub), "--per_image_csv",
             str(tmp_path / "per_image.csv"))
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_report_folder_never_holds_the_submission(data, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    sub = report / "sub.csv"
    sol = pd.read_csv(data / "test_solution.csv", dtype=str)
    pd.DataFrame({"case_id": sol.case_id, "annotation": "authentic"}).to_csv(sub, index=False)
    proc = run("serving.report", "--input_dir", str(data), "--submission", str(sub), "--output_dir", str(report),
               "--overwrite")
    refused(proc, "contains the submission")
    assert os.listdir(report) == ["sub.csv"]


def test_trainer_refuses_a_model_dir_inside_the_data_dir(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    proc = run("trainer.main", "--data_dir", str(records), "--model_dir", str(records / "m"), "--epochs", "1")
    refused(proc, "--model_dir", "inside the --data_dir")
    assert os.listdir(records) == []


def test_calibrate_never_writes_into_its_data(data, model_dir):
    inside = data / "model"
    shutil.copytree(model_dir, inside)
    before = (inside / "export" / "metadata.json").read_bytes()
    refused(run("serving.calibrate", "--model_dir", str(inside), "--input_dir", str(data)), "inside the --input_dir")
    assert (inside / "export" / "metadata.json").read_bytes() == before


def _special_files(tmp_path) -> list:
    """A FIFO, a socket and (as root) a character device: none may be replaced by --overwrite."""
    import socket

    fifo, sock = tmp_path / "fifo.csv", tmp_path / "sock.csv"
    os.mkfifo(fifo)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    out = [(fifo, "a FIFO"), (sock, "a socket")]
    if os.geteuid() == 0:
        dev = tmp_path / "null.csv"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the numbers of /dev/null
        out.append((dev, "a character device"))
    return out


def test_overwrite_replaces_only_regular_files(tmp_path):
    for path, kind in _special_files(tmp_path):
        with pytest.raises(UsageError, match=kind):
            outputs.check_file(str(path), overwrite=True)
    folder = tmp_path / "out"
    folder.mkdir()
    os.mkfifo(folder / "stats.json")
    with pytest.raises(UsageError, match="a FIFO"):
        outputs.check_dir(str(folder), overwrite=True, owned=lambda rel: rel == "stats.json")
    assert stat.S_ISFIFO(os.stat(folder / "stats.json").st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_score_as_root_never_replaces_a_device(data, tmp_path):
    """Before: --output DEV --overwrite replaced the device with a file."""
    dev = tmp_path / "null.csv"
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    proc = run("serving.score", "--detector", "matcher", "--input_dir", str(data / "test_images"), "--output",
               str(dev), "--overwrite", "--workers", "1")
    refused(proc, "a character device")
    assert stat.S_ISCHR(os.stat(dev).st_mode)


def test_score_never_replaces_a_fifo_output(data, tmp_path):
    fifo = tmp_path / "sub.csv"
    os.mkfifo(fifo)
    proc = run("serving.score", "--detector", "matcher", "--input_dir", str(data / "test_images"), "--output",
               str(fifo), "--overwrite", "--workers", "1")
    refused(proc, "a FIFO")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# ----------------------------------------------------------------------------- 4: a FIFO named like an image

def test_read_input_refuses_special_files(tmp_path):
    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(BadInput, match="not_a_file: a FIFO"):
        fileio.read_input(str(tmp_path / "p.png"))
    (tmp_path / "d.png").mkdir()
    with pytest.raises(BadInput, match="not_a_file: a directory"):
        fileio.read_input(str(tmp_path / "d.png"))


@pytest.mark.parametrize("detector", ["matcher", "network"])
def test_score_records_a_fifo_and_completes(data, tmp_path, model_dir, detector):
    """Before: serving.score blocked forever on the FIFO."""
    os.mkfifo(data / "test_images" / "p.png")
    out = tmp_path / "sub.csv"
    proc = run("serving.score", "--detector", detector, "--model_dir", model_dir, "--input_dir", str(data),
               "--output", str(out), "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert errors_by_case(out) == {"p": "not_a_file"}
    assert dict(pd.read_csv(out, dtype=str).values)["p"] == "authentic"


def test_beam_job_records_a_fifo_and_a_bad_name_and_completes(data, tmp_path):
    """Before: the Beam job blocked forever on the FIFO, and refused a non-UTF-8 name without naming it."""
    os.mkfifo(data / "train_images" / "authentic" / "p.png")
    png(data / "train_images" / "authentic" / BAD_NAME, 3)
    out = tmp_path / "records"
    proc = run("preprocessing.main", "--input_dir", str(data), "--output_dir", str(out), "--image_size", "64",
               "--num_shards", "1", "--direct_running_mode=in_memory", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [json.loads(line) for line in open(out / "errors.jsonl")]
    assert [(e["case_id"], e["reason"].split(":")[0]) for e in errors] == [("p", "not_a_file")]
    problems = json.load(open(out / "manifest.json"))["stats"]["discovery_problems"]
    assert problems["by_reason"] == {"bad_file_name": 1}, problems


def test_report_records_a_fifo_a_duplicate_and_a_bad_name(data, tmp_path):
    """Before: the report blocked forever on the FIFO; a.png + a.jpg was one image; a non-UTF-8 name
    was refused without naming the file."""
    tests = add_duplicate_and_bad_name(data)
    os.mkfifo(tests / "p.png")
    out = tmp_path / "report"
    proc = run("preprocessing.report", "--input_dir", str(data), "--output_dir", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    problems = pd.read_csv(out / "problems.csv", dtype=str, keep_default_na=False)
    found = sorted(zip(problems["path"], problems["tag"]))
    assert ("test_images/a.jpg", "duplicate_image") in found and ("test_images/a.png", "duplicate_image") in found
    assert ("test_images/p.png", "not_a_file") in found
    assert any(tag == "bad_file_name" and "udcff" in path for path, tag in found), found


# ----------------------------------------------------------------------------- 6, 8: discovery

def test_score_lists_duplicate_ids_and_bad_names_as_errors(data, tmp_path):
    """Before: a.png was dropped silently (a.jpg scored); a non-UTF-8 name crashed the CSV writer."""
    add_duplicate_and_bad_name(data)
    out = tmp_path / "sub.csv"
    proc = run("serving.score", "--detector", "matcher", "--input_dir", str(data), "--output", str(out),
               "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = read_side_file(str(out), errors_path(str(out)))
    dup = sorted(os.path.basename(e["path"]) for e in errors if e["reason"].startswith("duplicate_image"))
    assert dup == ["a.jpg", "a.png"]
    bad = [e for e in errors if e["reason"].startswith("bad_file_name")]
    assert len(bad) == 1 and "b'b\\xffd.png'" in bad[0]["reason"]
    rows = dict(pd.read_csv(out, dtype=str).values)
    assert rows["a"] == "authentic" and len(rows) == 3 + 2  # the 3 test images, "a", the bad name


def test_beam_score_lists_duplicate_ids_and_bad_names_as_errors(data, tmp_path):
    add_duplicate_and_bad_name(data)
    out = tmp_path / "sub.csv"
    proc = run("serving.beam_score", "--detector", "matcher", "--input_dir", str(data), "--output", str(out),
               "--direct_running_mode=in_memory", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tags = sorted(e["reason"].split(":")[0] for e in read_side_file(str(out), errors_path(str(out))))
    assert tags == ["bad_file_name", "duplicate_image", "duplicate_image"]


# ----------------------------------------------------------------------------- 5: side files

def test_network_run_removes_the_matcher_evidence_and_the_report_refuses_stale_files(data, tmp_path, model_dir):
    """Before: a network run with --overwrite left the matcher's .evidence.jsonl, and the report drew
    its pairs for a submission that says every image is authentic."""
    out = tmp_path / "sub.csv"
    args = ["--input_dir", str(data), "--output", str(out), "--workers", "1"]
    assert run("serving.score", "--detector", "matcher", *args).returncode == 0
    matcher_evidence = open(evidence_path(str(out))).read()
    assert len(read_side_file(str(out), evidence_path(str(out)))) == 3
    proc = run("serving.score", "--detector", "network", "--model_dir", model_dir, *args, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not os.path.exists(evidence_path(str(out)))
    # A stale evidence file put back (as an earlier version's run or a kill would leave it): refused.
    open(evidence_path(str(out)), "w").write(matcher_evidence)
    with pytest.raises(StaleSideFile, match="another version"):
        read_side_file(str(out), evidence_path(str(out)))
    open(evidence_path(str(out)), "w").write('{"case_id": "x", "pairs": []}\n')  # no header: an older run
    with pytest.raises(StaleSideFile, match="does not say"):
        read_side_file(str(out), evidence_path(str(out)))
    report = tmp_path / "report"
    proc = run("serving.report", "--input_dir", str(data), "--submission", str(out), "--output_dir", str(report),
               timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.load(open(report / "stats.json"))
    assert stats["submission"]["side_file_notes"] and "not used" in proc.stderr


def test_side_files_written_before_the_csv_name_it(tmp_path):
    """A kill between the side-file renames and the CSV rename leaves new side files beside the old
    CSV: they say which CSV they belong to, so the reader refuses the mixed set."""
    from preprocessing import rle
    from serving.submission import write_outputs

    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :4] = 1
    old, new = str(tmp_path / "sub.csv"), str(tmp_path / "new" / "sub.csv")
    os.makedirs(os.path.dirname(new))
    write_outputs(old, [("x", "authentic")], [], [{"case_id": "x", "pairs": []}])
    write_outputs(new, [("x", rle.encode([mask]))], [], [{"case_id": "x", "pairs": [{"inliers": 9}]}])
    assert read_jsonl(errors_path(old)) == [] and read_side_file(old, evidence_path(old))[0]["pairs"] == []
    shutil.copy(evidence_path(new), evidence_path(old))  # the state a kill before the CSV rename leaves
    with pytest.raises(StaleSideFile, match="another version"):
        read_side_file(old, evidence_path(old))


# ----------------------------------------------------------------------------- 13: the right reasons

@pytest.fixture
def odd_images(tmp_path):
    """A float32 RGB TIFF (Pillow cannot open it, OpenCV decodes it), a GIF named .png, a 5-channel TIFF."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(4)
    folder = tmp_path / "odd"
    folder.mkdir()
    floats = rng.random((20, 30, 3)).astype(np.float32)
    tifffile.imwrite(folder / "f32.tif", floats, photometric="rgb")
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(folder / "g.png", format="GIF")
    tifffile.imwrite(folder / "c5.tif", rng.integers(0, 255, (20, 30, 5), dtype=np.uint8), photometric="minisblack",
                     planarconfig="contig")
    return folder, floats


def test_float_tiff_is_read_as_documented_and_odd_formats_are_unsupported(odd_images):
    from preprocessing.images import read_rgb8

    folder, floats = odd_images
    expected = (np.clip(floats, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(read_rgb8(str(folder / "f32.tif")), expected)
    for name in ("g.png", "c5.tif"):
        with pytest.raises(BadInput, match="^.*: unsupported_image: "):
            read_rgb8(str(folder / name))


def test_score_gives_the_same_reasons(odd_images, tmp_path, model_dir):
    folder, _ = odd_images
    for detector in ("network", "matcher"):
        out = tmp_path / detector / "sub.csv"
        proc = run("serving.score", "--detector", detector, "--model_dir", model_dir, "--input_dir", str(folder),
                   "--output", str(out), "--workers", "1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert errors_by_case(out) == {"g": "unsupported_image", "c5": "unsupported_image"}, detector


def test_decoder_warnings_are_not_printed_raw(tmp_path, model_dir):
    """A truncated PNG (OpenCV: "PNG input buffer is incomplete"), a BMP named .png (libtiff: "Not
    a TIFF file") and a PNG with a malformed colour profile (libpng: "iCCP: too short"): each
    file's error record or row says what matters; nothing raw reaches the terminal."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    data = cv2.imencode(".png", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "bitmap.png").write_bytes(cv2.imencode(".bmp", np.full((20, 30, 3), 90, np.uint8))[1].tobytes())
    from PIL import Image

    pixels = np.random.default_rng(2).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "icc.png", icc_profile=b"0" * 200)  # libpng: "iCCP: too short"
    from preprocessing.images import read_rgb8

    np.testing.assert_array_equal(read_rgb8(str(folder / "icc.png")), pixels)  # the profile is never applied
    for detector in ("network", "matcher"):
        out = tmp_path / detector / "sub.csv"
        proc = run("serving.score", "--detector", detector, "--model_dir", model_dir, "--input_dir", str(folder),
                   "--output", str(out), "--workers", "1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert errors_by_case(out) == {"cut": "corrupt_image"}
        assert not any(w in proc.stderr for w in ("WARN", "TIFF", "libpng")), proc.stderr[-2000:]


# ----------------------------------------------------------------------------- 14: the low items

def test_workers_never_exceed_the_items_or_the_cores():
    from preprocessing import cli

    assert cli.worker_count(1000, 4) == min(4, os.cpu_count())
    assert cli.worker_count(1000, 0) == 1 and cli.worker_count(2, 100) == min(2, os.cpu_count())


def test_flag_errors_exit_2_in_one_line(tmp_path):
    for args in (["serving.score", "--input_dir", str(tmp_path), "--no_such_flag"],
                 ["serving.evaluate", "--solution", "x.csv"],  # --submission missing
                 ["serving.score", "--input_dir", str(tmp_path), "--workers", "0"]):
        proc = run(*args)
        refused(proc)


def test_an_empty_run_list_is_unparseable_not_forged(data, tmp_path):
    from preprocessing import rle

    with pytest.raises(rle.RLEError, match="empty run list"):
        rle.parse("[]")
    sol = pd.read_csv(data / "test_solution.csv", dtype=str)
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"case_id": sol.case_id, "annotation": ["[]"] + ["authentic"] * (len(sol) - 1)}).to_csv(sub,
                                                                                                        index=False)
    proc = run("serving.evaluate", "--solution", str(data / "test_solution.csv"), "--submission", str(sub))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["unparseable"] == 1 and summary["pred_forged"] == 0


def test_a_fractional_solution_height_is_refused(data, tmp_path):
    sol = pd.read_csv(data / "test_solution.csv", dtype=str)
    sol.loc[0, "height"] = str(int(sol.loc[0, "height"]) - 0.3)  # 319.7: was truncated to 319
    bad = tmp_path / "solution.csv"
    sol.to_csv(bad, index=False)
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"case_id": sol.case_id, "annotation": "authentic"}).to_csv(sub, index=False)
    refused(run("serving.evaluate", "--solution", str(bad), "--submission", str(sub)), sol.loc[0, "case_id"],
            "not integers")


def _dead_pid() -> int:
    """A process id no process has now (a finished child's)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_interrupted_runs_staging_files_are_removed_next_time(data, tmp_path):
    out = tmp_path / "sub.csv"
    dead, alive = _dead_pid(), os.getpid()
    left_file = tmp_path / f"sub.csv{outputs.TEMP_MARK}{dead}-0badf00d"
    left_file.write_text("half a submission")
    running = tmp_path / f"sub.csv{outputs.TEMP_MARK}{alive}-0badf00d"
    running.write_text("a job still writing")
    other = tmp_path / "notes.tmp-1-x"  # not this output's: never touched
    other.write_text("mine")
    proc = run("serving.score", "--detector", "matcher", "--input_dir", str(data), "--output", str(out),
               "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not left_file.exists() and f"removed {left_file}" in proc.stdout
    assert running.exists() and other.exists()
    staging = tmp_path / f"report{outputs.TEMP_MARK}{dead}-12345678"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "index.html").write_text("half a report")
    proc = run("preprocessing.report", "--input_dir", str(data), "--output_dir", str(tmp_path / "report"),
               timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not staging.exists()


def test_a_dispatcher_port_out_of_range_is_refused_without_a_bad_hint():
    from trainer import service

    with pytest.raises(UsageError, match="port 99999 is not a TCP port"):
        service.address("grpc://localhost:99999")
    assert service.address("grpc://localhost:5050") == "localhost:5050"


def test_the_report_reads_a_float_tiff(data, odd_images, tmp_path):
    folder, _ = odd_images
    for name in ("f32.tif", "g.png"):
        shutil.copy(folder / name, data / "test_images" / name)
    out = tmp_path / "report"
    proc = run("preprocessing.report", "--input_dir", str(data), "--output_dir", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    problems = pd.read_csv(out / "problems.csv", dtype=str, keep_default_na=False)
    assert sorted(zip(problems["path"], problems["tag"])) == [("test_images/g.png", "unsupported_image")]


def test_pillows_bomb_warning_is_not_printed():
    """A header of 9500 x 9500 (90 MP: over Pillow's warning bar of ~89 MP, under our 100 MP limit):
    the size is read without DecompressionBombWarning; our own limit decides."""
    import warnings
    import zlib

    from preprocessing.images import image_size

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = (9500).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(data, "big.png") == (9500, 9500)


# ----------------------------------------------------------------------------- 7: metadata values checked

@pytest.mark.parametrize("section, words", [
    ({"postprocess": {"threshold": 5}}, ("postprocess.threshold", "upper bound")),
    ({"postprocess": {"min_area": -3}}, ("postprocess.min_area", "lower bound")),
    ({"detector": "magic"}, ("detector", "'magic'")),
    ({"matcher": {"min_inliers": "eight"}}, ("matcher.min_inliers", "not an integer")),
    ({"fused": {"confirm_bar": True}}, ("fused.confirm_bar", "not a number")),
])
def test_metadata_values_go_through_the_flags_bounds_and_choices(tmp_path, section, words):
    from serving.saved_model import read_metadata

    export = tmp_path / "export"
    export.mkdir()
    (export / "metadata.json").write_text(json.dumps({"image_size": 64, **section}))
    with pytest.raises(UsageError) as info:
        read_metadata(str(export))
    assert str(export / "metadata.json") in str(info.value)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_scoring_with_a_bad_metadata_value_is_one_line_naming_file_and_field(tmp_path):
    export = tmp_path / "model" / "export"
    export.mkdir(parents=True)
    (export / "metadata.json").write_text(json.dumps({"image_size": 64, "postprocess": {"threshold": 5}}))
    images = tmp_path / "in"
    images.mkdir()
    proc = run("serving.score", "--model_dir", str(tmp_path / "model"), "--input_dir", str(images), "--output",
               str(tmp_path / "sub.csv"), "--allow_empty")
    refused(proc, "metadata.json", "postprocess.threshold")
