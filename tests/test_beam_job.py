"""The Beam preprocessing job, run for real on DirectRunner over real files, read back with tf.data.

Runs (module fixtures, each once): native size raw/uncompressed with runner-chosen
shards; native size PNG/gzip with 3 fixed shards and --allow_pickle_masks; the CLI
in a fresh process with 2 multi-processing workers at 32 px; and conftest's
``records_dir`` (64 px, PNG, gzip, 2 shards) for the resize path.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from preprocessing.cases import discover_training_cases
from preprocessing.constants import FORGED, LABEL_NAMES
from preprocessing.images import read_rgb8
from preprocessing.job import run_pipeline
from preprocessing.masks import load_mask
from preprocessing.schema import SCHEMA_VERSION, parse_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_LIMIT = 50_000  # pixels: above every synthetic image (<= 200 x 200), below the "huge" one
VAL_FRACTION = 0.3
# Bad cases added to the synthetic corpus -> the reason tag each must get in errors.jsonl.
BAD = {
    "authentic/bad_zero": "empty_file",
    "authentic/bad_truncated": "corrupt_image",
    "authentic/bad_text": "not_an_image",
    "authentic/bad_huge": "too_large",
    "forged/bad_nomask": "missing_mask",
    "forged/bad_pickled": "pickled_mask",
    "forged/bad_emptymask": "empty_mask",
    "forged/bad_softmask": "bad_mask",  # float 0.02 / 0.9: once stored as 100% forged
    "forged/bad_transposed": "bad_mask",  # (W, H): once resized into a wrong label
    "authentic/bad_dangling": "unreadable",  # a symbolic link to nothing: once skipped silently
    "authentic/bad_loop": "unreadable",  # a symbolic link to itself
}
MANIFEST_KEYS = {"schema_version", "image_size", "encoding", "evidence", "compression", "files", "num_shards", "counts",
                 "discovered", "written", "errors", "errors_by_reason", "stats", "options"}


def _png(path: str, rgb: np.ndarray) -> None:
    assert cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]))


@pytest.fixture(scope="module")
def corpus(synth_dir, tmp_path_factory):
    """The synthetic corpus plus one case for every kind of bad input, and one mis-shaped mask."""
    root = str(tmp_path_factory.mktemp("beam_corpus"))
    shutil.copytree(os.path.join(synth_dir, "train_images"), os.path.join(root, "train_images"))
    shutil.copytree(os.path.join(synth_dir, "train_masks"), os.path.join(root, "train_masks"))
    auth, forged, masks = (os.path.join(root, d) for d in
                           ("train_images/authentic", "train_images/forged", "train_masks"))
    rng = np.random.default_rng(3)
    good_png = open(sorted(glob.glob(os.path.join(auth, "*.png")))[0], "rb").read()
    open(os.path.join(auth, "bad_zero.png"), "wb").close()
    with open(os.path.join(auth, "bad_truncated.png"), "wb") as f:
        f.write(good_png[: len(good_png) // 2])
    with open(os.path.join(auth, "bad_text.png"), "w") as f:
        f.write("this is not an image\n")
    _png(os.path.join(auth, "bad_huge.png"), rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    os.symlink(os.path.join(root, "nowhere.png"), os.path.join(auth, "bad_dangling.png"))
    os.symlink(os.path.join(auth, "bad_loop.png"), os.path.join(auth, "bad_loop.png"))
    for cid in ("bad_nomask", "bad_pickled", "bad_emptymask", "odd_shape", "bad_softmask", "bad_transposed"):
        _png(os.path.join(forged, cid + ".png"), rng.integers(0, 256, (80, 120, 3), dtype=np.uint8))
    pickled = np.empty(2, dtype=object)  # a list of instances, as some tools write: needs pickle to load
    pickled[0] = np.zeros((80, 120), np.uint8)
    pickled[0][5:20, 10:30] = 1
    pickled[1] = np.zeros((80, 120), np.uint8)
    pickled[1][40:60, 70:100] = 1
    np.save(os.path.join(masks, "bad_pickled.npy"), pickled, allow_pickle=True)
    np.save(os.path.join(masks, "bad_emptymask.npy"), np.zeros((1, 80, 120), np.uint8))
    soft = np.full((1, 80, 120), 0.02, np.float32)
    soft[0, 10:30, 20:50] = 0.9
    np.save(os.path.join(masks, "bad_softmask.npy"), soft)
    np.save(os.path.join(masks, "bad_transposed.npy"), np.ones((1, 120, 80), np.uint8))
    odd = np.zeros((1, 40, 60), np.uint8)  # half the image's size: resized, counted, not an error
    odd[0, 10:20, 15:40] = 1
    np.save(os.path.join(masks, "odd_shape.npy"), odd)
    return root


@pytest.fixture(scope="module")
def raw_run(corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("beam_raw"))
    manifest = run_pipeline(corpus, out, image_size=0, encoding="raw", compression="none", num_shards=0, evidence=False,
                            val_fraction=VAL_FRACTION, max_pixels=SMALL_LIMIT)
    return out, manifest


@pytest.fixture(scope="module")
def png_run(corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("beam_png"))
    manifest = run_pipeline(corpus, out, image_size=0, encoding="png", compression="gzip", num_shards=3, evidence=False,
                            val_fraction=VAL_FRACTION, max_pixels=SMALL_LIMIT, allow_pickle_masks=True)
    return out, manifest


@pytest.fixture(scope="module")
def cli_multiprocess_run(corpus, tmp_path_factory):
    """The command line in a fresh process (another hash seed), 2 multi-processing DirectRunner workers."""
    out = str(tmp_path_factory.mktemp("beam_cli"))
    cmd = [sys.executable, "-m", "preprocessing.main", "--input_dir", corpus, "--output_dir", out, "--noevidence",
           "--image_size", "32", "--encoding", "raw", "--compression", "none",
           "--val_fraction", str(VAL_FRACTION), "--max_pixels", str(SMALL_LIMIT),
           "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    env = dict(os.environ, PYTHONHASHSEED="12345")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "manifest.json")) as f:
        return out, json.load(f), proc.stdout + proc.stderr  # what the user sees


def read_records(out_dir: str, manifest: dict) -> dict:
    """(label name, case_id) -> (split, parsed example as numpy), read with tf.data from the manifest's globs."""
    records = {}
    for split, pattern in manifest["files"].items():
        files = sorted(glob.glob(os.path.join(out_dir, pattern)))
        assert len(files) == manifest["num_shards"][split]
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP" if manifest["compression"] == "gzip" else "")
        for ex in ds.map(lambda r: parse_record("", r)):
            ex = {k: v.numpy() for k, v in ex.items()}
            key = (LABEL_NAMES[int(ex["label"])], ex["case_id"].decode())
            assert key not in records, f"{key} written twice"
            records[key] = (split, ex)
    return records


def read_errors(out_dir: str) -> dict:
    with open(os.path.join(out_dir, "errors.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return {f"{LABEL_NAMES[e['label']]}/{e['case_id']}": e for e in lines}


def source_of(corpus: str) -> dict:
    """(label name, case_id) -> Case, from the foundation's discovery."""
    cases, _ = discover_training_cases(corpus)
    return {(LABEL_NAMES[c.label], c.case_id): c for c in cases}


def expected_union(case, shape, allow_pickle=False) -> np.ndarray:
    if case.label != FORGED:
        return np.zeros(shape, np.uint8)
    return load_mask(case.mask_path, shape, allow_pickle=allow_pickle).union


def check_counts(manifest: dict, records: dict, errors: dict, discovered: int) -> None:
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["discovered"] == discovered == manifest["written"] + manifest["errors"]
    assert manifest["written"] == len(records) and manifest["errors"] == len(errors)
    for split in ("train", "val"):
        got = [k for k, (s, _) in records.items() if s == split]
        assert manifest["counts"][split] == {
            "total": len(got), "authentic": sum(k[0] == "authentic" for k in got),
            "forged": sum(k[0] == "forged" for k in got)}
        assert len(got) > 0
    reasons = {}
    for e in errors.values():
        tag = e["reason"].split(":")[0]
        reasons[tag] = reasons.get(tag, 0) + 1
    assert manifest["errors_by_reason"] == reasons


@pytest.mark.parametrize("run", ["raw_run", "png_run"])
def test_native_size_round_trip_is_pixel_exact(run, corpus, request):
    out, manifest = request.getfixturevalue(run)
    allow_pickle = manifest["options"]["allow_pickle_masks"]
    records, errors = read_records(out, manifest), read_errors(out)
    sources = source_of(corpus)
    check_counts(manifest, records, errors, len(sources))
    bad = {k for k in BAD if not (allow_pickle and k == "forged/bad_pickled")}
    assert set(errors) == bad
    assert {f"{k[0]}/{k[1]}" for k in records} == {f"{k[0]}/{k[1]}" for k in sources} - bad
    for key, (_, ex) in records.items():
        case = sources[key]
        image = read_rgb8(case.image_path)
        union = expected_union(case, image.shape[:2], allow_pickle)
        np.testing.assert_array_equal(ex["image"], image, err_msg=str(key))
        np.testing.assert_array_equal(ex["mask"][:, :, 0], union, err_msg=str(key))
        assert (ex["orig/height"], ex["orig/width"]) == image.shape[:2]
        assert ex["source"] == b"train"
    forged = [ex for k, (_, ex) in records.items() if k[0] == "forged"]
    assert forged and all(ex["mask"].any() and ex["mask/num_instances"] >= 1 for ex in forged)


def test_bad_inputs_are_recorded_with_reasons(raw_run, corpus):
    out, manifest = raw_run
    errors = read_errors(out)
    assert {k: e["reason"].split(":")[0] for k, e in errors.items()} == BAD
    for key, e in errors.items():
        assert os.path.lexists(e["path"]) or key == "forged/bad_nomask"
        assert len(e["reason"]) > len(BAD[key]) + 5, e  # a tag plus an explanation
    assert errors["forged/bad_pickled"]["path"].endswith("train_masks/bad_pickled.npy")
    assert errors["forged/bad_nomask"]["path"].endswith("forged/bad_nomask.png")
    assert str(SMALL_LIMIT) in errors["authentic/bad_huge"]["reason"]
    assert "0.02, 0.9" in errors["forged/bad_softmask"]["reason"]
    transposed = errors["forged/bad_transposed"]["reason"]
    assert "120x80" in transposed and "80x120" in transposed
    stats = manifest["stats"]
    # The mis-shaped mask is resized to the image and counted, not an error.
    assert stats["mask_shape_mismatches"] == {"count": 1, "cases": ["odd_shape"]}
    assert stats["empty_masks"]["count"] == 1
    records = read_records(out, manifest)
    _, odd = records[("forged", "odd_shape")]
    expect = cv2.resize(np.load(os.path.join(corpus, "train_masks", "odd_shape.npy"))[0], (120, 80),
                        interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(odd["mask"][:, :, 0], expect)


def test_pickled_mask_loads_only_with_flag(raw_run, png_run):
    assert "forged/bad_pickled" in read_errors(raw_run[0])
    assert "forged/bad_pickled" not in read_errors(png_run[0])
    _, ex = read_records(*png_run)[("forged", "bad_pickled")]
    assert ex["mask/num_instances"] == 2
    assert ex["mask"][5:20, 10:30].all() and ex["mask"][40:60, 70:100].all()
    assert int(ex["mask"].sum()) == 15 * 20 + 20 * 30


def test_split_is_deterministic_across_runs_and_modes(raw_run, png_run, cli_multiprocess_run):
    splits = [{k: s for k, (s, _) in read_records(out, m).items()}
              for out, m, *_ in (raw_run, png_run, cli_multiprocess_run)]
    common = set(splits[0]) & set(splits[1]) & set(splits[2])
    assert len(common) == raw_run[1]["written"]
    for other in splits[1:]:
        assert {k: other[k] for k in common} == {k: splits[0][k] for k in common}
    # Pairs (the same case_id authentic and forged) land on the same side.
    pairs = {cid for label, cid in splits[1] if label == "forged"} & \
            {cid for label, cid in splits[1] if label == "authentic"}
    assert len(pairs) >= 3
    for cid in pairs:
        assert splits[1][("forged", cid)] == splits[1][("authentic", cid)]


def test_cli_multiprocessing_run(cli_multiprocess_run, raw_run):
    out, manifest, stdout = cli_multiprocess_run
    assert "preprocess: discovered=" in stdout and f"written={manifest['written']}" in stdout
    assert manifest["options"]["pipeline_args"] == [  # what ran: the user's options + quiet local workers
        "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--default_sdk_harness_log_level=ERROR"]
    assert "sdk_worker" not in stdout and "Data channel established" not in stdout
    assert "apitools" not in stdout and "Logging handler created" not in stdout  # the workers' start-up noise
    assert manifest["counts"] == raw_run[1]["counts"]
    assert manifest["errors_by_reason"] == raw_run[1]["errors_by_reason"]
    assert set(read_errors(out)) == set(read_errors(raw_run[0]))
    records = read_records(out, manifest)
    assert all(ex["image"].shape == (32, 32, 3) and ex["mask"].shape == (32, 32, 1) for _, ex in records.values())


def test_resized_records_and_manifest(records_dir, synth_dir):
    """conftest's job output: 64 x 64, 2 shards per split, counts and stats matching the source."""
    with open(os.path.join(records_dir, "manifest.json")) as f:
        manifest = json.load(f)
    assert (manifest["image_size"], manifest["encoding"], manifest["compression"]) == (64, "png", "gzip")
    assert manifest["num_shards"] == {"train": 2, "val": 2}
    assert sorted(os.listdir(records_dir)) == sorted(
        ["manifest.json", "errors.jsonl"] + [f"{s}-0000{i}-of-00002.tfrecord.gz" for s in ("train", "val")
                                             for i in range(2)])
    records, errors = read_records(records_dir, manifest), read_errors(records_dir)
    sources = source_of(synth_dir)
    check_counts(manifest, records, errors, len(sources))
    assert not errors
    forged_px = pixels = 0
    instances = {}
    for key, (_, ex) in records.items():
        case = sources[key]
        image = read_rgb8(case.image_path)
        h, w = image.shape[:2]
        union = expected_union(case, (h, w))
        shrink = h >= 64 and w >= 64
        expect_img = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        np.testing.assert_array_equal(ex["image"], expect_img, err_msg=str(key))
        np.testing.assert_array_equal(ex["mask"][:, :, 0],
                                      cv2.resize(union, (64, 64), interpolation=cv2.INTER_NEAREST))
        assert (ex["orig/height"], ex["orig/width"]) == (h, w)
        if key[0] == "forged":
            forged_px += int(union.sum())
            pixels += h * w
            n = str(len(load_mask(case.mask_path, (h, w)).instances))
            instances[n] = instances.get(n, 0) + 1
            assert ex["mask/num_instances"] == int(n)
    stats = manifest["stats"]
    assert stats["forged_pixel_fraction"]["forged_images"] == pytest.approx(forged_px / pixels, abs=1e-6)
    assert stats["instances_per_forged_image"]["histogram"] == instances
    sizes = [sources[k].image_path for k in records]
    assert stats["image_size"]["height"]["max"] == max(read_rgb8(p).shape[0] for p in sizes)
    assert sum(stats["image_size"]["longest_side_histogram"].values()) == len(records)


def test_images_that_fit_are_stored_at_their_own_size(small_records_dir, small_synth_dir):
    """An image with both sides <= image_size is stored as it is (its pixels exact, no enlarging on
    the host); one with a side over image_size is resized to image_size x image_size."""
    with open(os.path.join(small_records_dir, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["image_size"] == 64 and manifest["evidence"] is False
    records, sources = read_records(small_records_dir, manifest), source_of(small_synth_dir)
    check_counts(manifest, records, read_errors(small_records_dir), len(sources))
    kept = 0
    for key, (_, ex) in records.items():
        image = read_rgb8(sources[key].image_path)
        h, w = image.shape[:2]
        union = expected_union(sources[key], (h, w))
        if h <= 64 and w <= 64:
            kept += 1
            np.testing.assert_array_equal(ex["image"], image, err_msg=str(key))
            np.testing.assert_array_equal(ex["mask"][:, :, 0], union, err_msg=str(key))
        else:
            shrink = cv2.INTER_AREA if h >= 64 and w >= 64 else cv2.INTER_LINEAR
            np.testing.assert_array_equal(ex["image"], cv2.resize(image, (64, 64), interpolation=shrink))
            np.testing.assert_array_equal(ex["mask"][:, :, 0],
                                          cv2.resize(union, (64, 64), interpolation=cv2.INTER_NEAREST))
    assert 0 < kept < len(records)
