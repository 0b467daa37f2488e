"""Batch scoring end to end on a real exported SavedModel (reloaded from disk), plain and Beam."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from tiny_model import SIZE, export_tiny

from preprocessing import rle
from preprocessing.cases import discover_test_images
from preprocessing.images import read_rgb8
from preprocessing.version import __version__
from serving.decode import decode_file_eager, resize_to_model
from serving.network import predict_items, score_folder
from serving.postprocess import PostprocessConfig
from serving.saved_model import load, read_metadata
from serving.score import calibration_note
from serving.submission import errors_path, read_jsonl, read_side_file, submission_rows, write_outputs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return export_tiny(str(tmp_path_factory.mktemp("tiny_model")))


def _write_png16_gray(path, rng):
    cv2.imwrite(path, rng.integers(0, 65536, (50, 70), dtype=np.uint16))


@pytest.fixture(scope="session")
def messy_dir(tmp_path_factory):
    """Good images in several encodings plus the bad files a real folder contains."""
    rng = np.random.default_rng(11)
    root = str(tmp_path_factory.mktemp("messy"))
    smooth = lambda h, w, c: cv2.GaussianBlur(rng.integers(0, 256, (h, w, c), dtype=np.uint8), (7, 7), 0)  # noqa: E731
    cv2.imwrite(os.path.join(root, "rgb.png"), smooth(90, 120, 3))
    cv2.imwrite(os.path.join(root, "gray.png"), smooth(80, 66, 1))
    alpha = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    cv2.imwrite(os.path.join(root, "rgba.png"), np.dstack([smooth(40, 50, 3), alpha]))
    cv2.imwrite(os.path.join(root, "photo.jpg"), smooth(100, 64, 3), [cv2.IMWRITE_JPEG_QUALITY, 85])
    cv2.imwrite(os.path.join(root, "deep.tif"), rng.integers(0, 65536, (70, 90, 3), dtype=np.uint16))
    cv2.imwrite(os.path.join(root, "deepgray.tiff"), rng.integers(0, 65536, (30, 200), dtype=np.uint16))
    _write_png16_gray(os.path.join(root, "deepgray16.png"), rng)
    Image.fromarray(smooth(40, 48, 3)).convert("CMYK").save(os.path.join(root, "print.jpg"), quality=90)
    with open(os.path.join(root, "bitmap.png"), "wb") as f:  # a BMP with the wrong extension
        f.write(cv2.imencode(".bmp", smooth(20, 30, 3))[1].tobytes())
    # 1-bit TIFF: tensorflow-io cannot read it, so it takes the pipelines' preprocessing.images retry.
    Image.fromarray(smooth(30, 41, 1) > 128).save(os.path.join(root, "bilevel.tif"))
    data = cv2.imencode(".png", smooth(60, 60, 3))[1].tobytes()
    with open(os.path.join(root, "corrupt.png"), "wb") as f:
        f.write(data[: len(data) // 2])
    open(os.path.join(root, "empty.png"), "wb").close()
    with open(os.path.join(root, "notes.jpg"), "w") as f:
        f.write("this is not an image\n" * 20)
    with open(os.path.join(root, "README.txt"), "w") as f:  # not an image extension: not a case
        f.write("ignored")
    return root


GOOD = ("bilevel", "bitmap", "deep", "deepgray", "deepgray16", "gray", "photo", "print", "rgb", "rgba")
BAD = {"corrupt": "corrupt_image", "empty": "empty_file", "notes": "not_an_image"}


@pytest.mark.parametrize("name", ["deep.tif", "deepgray.tiff", "deepgray16.png", "gray.png", "rgba.png",
                                  "photo.jpg", "print.jpg", "rgb.png"])
def test_tf_decoder_equals_preprocessing(messy_dir, name):
    """Pixel equality of the TF decoder (+ resize) with preprocessing.images.read_rgb8 (+ the Beam job's resize)."""
    from serving.decode import decode_rgb8_tf

    path = os.path.join(messy_dir, name)
    ref = read_rgb8(path)
    got = decode_rgb8_tf(tf.io.read_file(path)).numpy()
    assert got.dtype == np.uint8 and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(decode_file_eager(path, SIZE), model_sized(ref))


def model_sized(image: np.ndarray) -> np.ndarray:
    """serving.decode's resize to the model size, applied to preprocessing's decoded pixels (that
    this resize is training's is tests/test_model_input.py's business)."""
    return resize_to_model(tf.constant(image), SIZE).numpy()


def test_score_messy_folder(tiny_model_dir, messy_dir, tmp_path):
    result = score_folder(tiny_model_dir, messy_dir, batch_size=4, progress=False)
    ids = [c for c, _ in result.rows]
    assert ids == sorted(GOOD + tuple(BAD))  # every image file has a row, README.txt has none
    reasons = {e["case_id"]: e["reason"] for e in result.errors}
    assert set(reasons) == set(BAD)
    for cid, tag in BAD.items():
        assert reasons[cid].startswith(tag + ":"), reasons[cid]
        assert dict(result.rows)[cid] == rle.AUTHENTIC
    out = str(tmp_path / "sub.csv")
    write_outputs(out, result.rows, result.errors)
    logged = read_side_file(out, errors_path(out))
    assert {e["case_id"] for e in logged} == set(BAD)
    assert all(e["path"].startswith(messy_dir) for e in logged)


def test_score_synthetic_end_to_end(tiny_model_dir, synth_dir, tmp_path):
    """CLI run: every test image gets a row, annotations decode at the original sizes, evaluate accepts it."""
    out = str(tmp_path / "submission.csv")
    # threshold 0.5 / min_area 4 so that this random model predicts some instances.
    proc = subprocess.run([sys.executable, "-m", "serving.score", "--model_dir", tiny_model_dir,
                           "--input_dir", synth_dir, "--output", out, "--batch_size", "3",
                           "--threshold", "0.5", "--min_area", "4", "--strict"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    solution = pd.read_csv(os.path.join(synth_dir, "test_solution.csv"), dtype={"case_id": str})
    assert list(sub.columns) == ["case_id", "annotation"]
    assert list(sub.case_id) == sorted(solution.case_id)
    n_forged = 0
    for row, sol in zip(sub.itertuples(), solution.sort_values("case_id").itertuples()):
        masks = rle.decode(row.annotation, int(sol.height), int(sol.width))
        n_forged += bool(masks)
        for m in masks:
            assert m.shape == (sol.height, sol.width) and m.any()
    assert n_forged > 0
    proc = subprocess.run([sys.executable, "-m", "serving.evaluate", "--solution",
                           os.path.join(synth_dir, "test_solution.csv"), "--submission", out],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["images"] == len(solution) and summary["missing"] == 0 and summary["unparseable"] == 0
    assert read_side_file(out, errors_path(out)) == []


def test_strict_exit_code_on_bad_files(tiny_model_dir, messy_dir, tmp_path):
    """The CLI reports the unreadable files and --strict turns them into a non-zero exit (rows still written)."""
    out = str(tmp_path / "s.csv")
    proc = subprocess.run([sys.executable, "-m", "serving.score", "--model_dir", tiny_model_dir,
                           "--input_dir", messy_dir, "--output", out, "--strict"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "3 unreadable" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "not calibrated" in proc.stdout  # the tiny export carries the seed's post-processing
    assert len(pd.read_csv(out)) == len(GOOD) + len(BAD)


def test_calibration_note_only_for_uncalibrated_defaults(tiny_model_dir):
    meta = load(tiny_model_dir).metadata
    assert "serving.calibrate" in calibration_note(meta, overridden=False)
    assert calibration_note(meta, overridden=True) is None  # the user chose the values
    assert calibration_note(dict(meta, calibration={"oF1_after": 0.6}), overridden=False) is None


def test_rows_match_direct_model_call(tiny_model_dir, messy_dir):
    """The pipeline's batched output equals calling the SavedModel on read_rgb8 + resize, image by image."""
    model = load(tiny_model_dir)
    items, _ = discover_test_images(messy_dir)
    preds, errors = predict_items(model, items, batch_size=4, progress=False)
    assert len(preds) + len(errors) == len(items)
    paths = dict(items)
    for p in preds:
        ref = read_rgb8(paths[p.case_id])
        assert p.orig_hw == ref.shape[:2]
        probs, scores = model.predict(model_sized(ref)[None])
        np.testing.assert_allclose(p.prob, probs[0], atol=1e-5)
        assert abs(p.image_score - float(scores[0])) < 1e-5


def test_metadata_defaults_and_overrides(tiny_model_dir, messy_dir):
    """No flags: metadata.json's post-processing; a threshold above every probability: all authentic."""
    meta = read_metadata(os.path.join(tiny_model_dir, "export"))
    assert PostprocessConfig.from_dict(meta["postprocess"]) == load(tiny_model_dir).postprocess
    assert meta["copymove_version"] == __version__  # the export says which release wrote it
    model = load(tiny_model_dir)
    preds, errors = predict_items(model, discover_test_images(messy_dir)[0], 8, progress=False)
    rows = submission_rows(preds, errors, PostprocessConfig(threshold=1.0))
    assert all(a == rle.AUTHENTIC for _, a in rows)
    loose = submission_rows(preds, errors, PostprocessConfig(threshold=0.0, min_area=1))
    assert sum(a != rle.AUTHENTIC for _, a in loose) == len(GOOD)


def test_beam_score_identical_to_score(tiny_model_dir, messy_dir, synth_dir, tmp_path):
    """serving.beam_score (RunInference, in-memory runner) writes byte-identical files to serving.score."""
    from serving.beam_pipeline import run

    folder = tmp_path / "mixed"
    shutil.copytree(messy_dir, folder)
    for name in sorted(os.listdir(os.path.join(synth_dir, "test_images")))[:4]:
        shutil.copy(os.path.join(synth_dir, "test_images", name), folder / name)
    cfg = PostprocessConfig(threshold=0.5, min_area=4)
    plain = str(tmp_path / "plain.csv")
    result = score_folder(tiny_model_dir, str(folder), batch_size=4, cfg=cfg, progress=False)
    write_outputs(plain, result.rows, result.errors)
    beam_out = str(tmp_path / "beam.csv")
    errors = run(tiny_model_dir, str(folder), beam_out, batch_size=3, cfg=cfg,
                 pipeline_args=["--direct_running_mode=in_memory"])
    assert sum(a != rle.AUTHENTIC for _, a in result.rows) > 0  # the comparison covers real instances
    assert open(beam_out).read() == open(plain).read()
    # Same error records (the reason's detail may quote an object address from PIL: compare the tags).
    def records(path):
        return [(e["case_id"], e["path"], e["reason"].split(":")[0]) for e in read_jsonl(path)]

    assert records(errors_path(beam_out)) == records(errors_path(plain))
    assert len(errors) == len(BAD)


def test_serving_never_imports_trainer():
    """A SavedModel must be enough: no serving module imports trainer (directly or lazily)."""
    import ast

    import serving

    root = os.path.dirname(serving.__file__)
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(root, name)).read())
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m == "trainer" or m.startswith("trainer.") for m in mods), f"serving/{name} imports {mods}"
