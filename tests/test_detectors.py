"""Two detectors, one verdict: the matcher's evidence as a stored feature and a third input stream,
the fused decision and its calibration, and scoring with every detector. Real records from the Beam
job, a real SavedModel reloaded in a fresh process, real synthetic images."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tiny_model import export_tiny

from preprocessing import records as records_lib
from preprocessing import schema
from preprocessing.cases import discover_training_cases
from preprocessing.constants import EVIDENCE_CHANNELS
from preprocessing.images import read_rgb8, resize_image
from preprocessing.matching.evidence import evidence_map, evidence_of
from preprocessing.model_input import upscale_one
from serving.fused import FusedParams, fuse, refine
from serving.postprocess import NEVER, PostprocessConfig, Prediction
from serving.submission import read_jsonl, read_side_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESENT = EVIDENCE_CHANNELS.index("present")


def stored_records(data_dir: str, split: str, evidence: bool = True) -> dict:
    """(label/case_id) -> parsed record, read with the one reader."""
    src = records_lib.resolve_source(data_dir, split)
    out = {}
    for f in src.files:
        for raw in tf.data.TFRecordDataset(f, src.compression):
            ex = {k: v.numpy() for k, v in schema.parse_record(tf.constant(f), raw, evidence=evidence).items()}
            out[f"{'forged' if ex['label'] else 'authentic'}/{ex['case_id'].decode()}"] = ex
    return out


def test_the_beam_job_and_serving_compute_the_same_evidence_for_a_file(records_dir, synth_dir):
    """The Beam job stores the map resized as the image; serving computes it from the file and
    resizes it with the same function: the model sees one feature in training and scoring."""
    stored = stored_records(records_dir, "val")
    cases = {c.key: c for c in discover_training_cases(synth_dir)[0]}
    assert stored and all(ex["evidence"].shape == ex["image"].shape[:2] + (len(EVIDENCE_CHANNELS),)
                          for ex in stored.values())
    for key, ex in stored.items():
        mine = resize_image(evidence_of(read_rgb8(cases[key].image_path)), 64)
        np.testing.assert_array_equal(ex["evidence"], mine)
        assert (ex["evidence"][..., PRESENT] == 255).all()
    from serving.network import image_dataset

    key = sorted(stored)[0]
    items = [(key, cases[key].image_path)]
    rgb = read_rgb8(cases[key].image_path)
    batch = next(iter(image_dataset(items, 64, 1, evidence_for=lambda _: evidence_of(rgb))))
    np.testing.assert_array_equal(batch[3].numpy()[0], stored[key]["evidence"])


def test_records_with_evidence_go_through_tf_data_and_the_device_step(records_dir):
    from trainer import data
    from trainer.model import model_images

    ds = data.make_dataset(records_dir, "val", 4, training=False, with_ids=True, evidence=True)
    inputs, targets, ids = next(iter(ds))
    assert inputs["evidence"].dtype == tf.uint8 and inputs["evidence"].shape[-1] == len(EVIDENCE_CHANNELS)
    stored = stored_records(records_dir, "val")
    key = f"{'forged' if targets['image'].numpy()[0, 0] else 'authentic'}/{ids['case_id'].numpy()[0].decode()}"
    np.testing.assert_array_equal(inputs["evidence"].numpy()[0], stored[key]["evidence"])
    x, mask = model_images(inputs, targets["mask"])
    assert set(x) == {"images", "evidence"} and x["evidence"].shape == (4, 64, 64, len(EVIDENCE_CHANNELS))


def test_records_without_evidence_read_as_zeros_and_say_so(small_records_dir):
    """Records written without evidence (the Beam job's --noevidence) give zeros, "present" included."""
    from trainer import data

    inputs, _ = next(iter(data.make_dataset(small_records_dir, "val", 4, training=False, evidence=True)))
    assert inputs["evidence"].shape[-1] == len(EVIDENCE_CHANNELS) and not inputs["evidence"].numpy().any()


def test_training_with_evidence_exports_a_signature_that_takes_it(records_dir, tmp_path):
    """Two epochs with the third stream; the export reloads in a process that never imports trainer
    and gives the in-memory model's outputs."""
    from trainer import train
    from trainer.config import ModelConfig, TrainConfig
    from trainer.model import model_images

    cfg = TrainConfig(data_dir=records_dir, model_dir=str(tmp_path / "m"),
                      model=ModelConfig(width=4, depth=2, evidence=True, match_field=False), epochs=2, batch_size=4,
                      steps_per_epoch=2, precision="float32", verbose=0, jpeg_augment=False)
    result = train.run(cfg, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert result.epochs_run == 2 and result.model_config["evidence"] is True
    from trainer import data

    inputs, _ = next(iter(data.make_dataset(records_dir, "val", 4, training=False, evidence=True)))
    x = model_images(inputs)
    expected = result.export_model(x, training=False)
    np.save(tmp_path / "images.npy", x["images"].numpy())
    np.save(tmp_path / "evidence.npy", x["evidence"].numpy())
    script = (
        "import sys, numpy as np\n"
        "from serving.saved_model import load\n"
        f"m = load({cfg.model_dir!r}); assert m.uses_evidence\n"
        f"p, h = m.predict(np.load({str(tmp_path / 'images.npy')!r}), np.load({str(tmp_path / 'evidence.npy')!r}))\n"
        "assert 'trainer' not in sys.modules\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, p)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path), timeout=180)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected["mask"].numpy()[..., 0], atol=1e-4)
    # Calibration on the records feeds the stored maps: its outputs are the model's on those inputs.
    from serving.saved_model import load
    from serving.tuning import samples_from_records

    samples = {s.pred.case_id: s.pred.prob for s in
               samples_from_records(load(cfg.model_dir), records_dir, batch_size=4, progress=False)}
    assert len(samples) == records_lib.num_examples(records_dir, "val")
    inputs, targets, ids = next(iter(data.make_dataset(records_dir, "val", 4, training=False, evidence=True,
                                                       with_ids=True)))
    probs = result.export_model(model_images(inputs), training=False)["mask"].numpy()[..., 0]
    for k, (label, case_id) in enumerate(zip(targets["image"].numpy()[:, 0], ids["case_id"].numpy())):
        np.testing.assert_allclose(samples[f"{int(label)}/{case_id.decode()}"], probs[k], atol=1e-4)


# ----------------------------------------------------------------------------- the fused decision

class _Pair:
    def __init__(self, strength):
        self.strength = strength


def _square(y, x, side=10, shape=(40, 40)):
    m = np.zeros(shape, np.uint8)
    m[y:y + side, x:x + side] = 1
    return m


def test_fuse_confirms_rejects_refines_and_falls_back_to_the_network():
    src, cpy = _square(2, 2), _square(20, 20)
    prob = np.zeros((40, 40), np.float32)
    prob[20:32, 20:32] = 0.9  # the network sees the copy two pixels larger than the matcher drew it
    confident = Prediction("x", (40, 40), prob, 0.9)
    doubtful = Prediction("x", (40, 40), prob, 0.2)
    cfg = PostprocessConfig(threshold=0.5, min_area=4)
    pairs, masks = [_Pair(0.5)], [src, cpy]
    assert fuse(pairs, masks, confident, cfg, FusedParams())[1] == "matcher"  # defaults: the matcher alone
    assert fuse(pairs, masks, doubtful, cfg, FusedParams(confirm_bar=0.5)) == ([], "none")
    assert fuse(pairs, masks, doubtful, cfg, FusedParams(confirm_bar=0.5, matcher_sure=0.4))[1] == "matcher"
    refined, _ = fuse(pairs, masks, confident, cfg, FusedParams(refine_threshold=0.5))
    assert refined[1][30:32, 20:32].all() and refined[1].sum() > cpy.sum()  # the edge followed the network
    assert refined[1][20:30, 20:30].all()  # the inside stayed
    assert fuse([], [], confident, cfg, FusedParams()) == ([], "none")  # network alone: not by default
    own, source = fuse([], [], confident, cfg, FusedParams(network_only_bar=0.8))
    assert source == "network" and len(own) == 1 and own[0][20:32, 20:32].all()
    assert fuse([], [], doubtful, cfg, FusedParams(network_only_bar=0.8)) == ([], "none")
    assert refine(np.zeros((5, 5), np.uint8), prob[:5, :5], 0.5).sum() == 0


def test_fused_search_takes_the_network_veto_when_it_pays_and_never_lowers_validation():
    from serving.tuning import FusedEvaluator, FusedSample, search_fused

    cfg = PostprocessConfig(threshold=0.5, min_area=4)
    flat = np.zeros((40, 40), np.float32)
    samples = []
    for k in range(24):  # matcher flags all; the network's head is high exactly on the forged half
        forged = k % 2 == 0
        gt = [_square(2, 2), _square(20, 20)] if forged else []
        pred = Prediction(str(k), (40, 40), flat, 0.9 if forged else 0.1)
        samples.append(FusedSample(str(k), pred, [_Pair(0.3)], [_square(2, 2), _square(20, 20)], gt))
    best, before, after = search_fused(samples, cfg, progress=False)[:3]
    assert before == pytest.approx(0.5) and after == pytest.approx(1.0)
    assert 0.1 < best.confirm_bar <= 0.9 and best.network_only_bar == NEVER
    assert FusedEvaluator(samples, cfg).scores(best).mean() == pytest.approx(after)
    # The evaluator's vectorised branches are serving's own decision (serving.fused.fuse), image by image.
    from serving.metric import image_score

    mixed = samples[:6] + [FusedSample("alone", Prediction("alone", (40, 40), np.where(_square(20, 20), 0.95, 0.0)
                                                         .astype(np.float32), 0.9), [], [], [_square(20, 20)])]
    ev = FusedEvaluator(mixed, cfg)
    for params in (FusedParams(), best, FusedParams(confirm_bar=0.5, refine_threshold=0.5),
                   FusedParams(matcher_sure=0.2, confirm_bar=NEVER, network_only_bar=0.8)):
        served = [image_score(fuse(s.pairs, s.matcher_instances, s.pred, cfg, params)[0], s.gt) for s in mixed]
        np.testing.assert_allclose(ev.scores(params), served)
    noise = [FusedSample(s.case_id, s.pred, s.pairs, s.matcher_instances, s.gt) for s in samples[:2]]
    kept, b2, a2 = search_fused(noise, cfg, progress=False)[:3]
    assert a2 >= b2  # with two images nothing beats the margin: the matcher alone stays
    assert kept == FusedParams()


# ----------------------------------------------------------------------------- commands

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return export_tiny(str(tmp_path_factory.mktemp("det_model") / "model"))


def run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_every_detector_keeps_every_row_and_error_record(tiny_model, figures_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    test = os.path.join(figures_dir, "test_images")
    for name in sorted(os.listdir(test)):
        os.symlink(os.path.join(test, name), images / name)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    n = len(os.listdir(images))
    for detector in ("network", "matcher", "fused"):
        out = tmp_path / detector / "sub.csv"
        proc = run("serving.score", "--model_dir", tiny_model, "--input_dir", str(images), "--output", str(out),
                   "--detector", detector, "--workers", "2")
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = out.read_text().strip().splitlines()
        assert len(rows) == 1 + n, detector
        errors = read_side_file(str(out), str(tmp_path / detector / "sub.errors.jsonl"))
        assert [e["case_id"] for e in errors] == ["broken"] and errors[0]["reason"].startswith("corrupt_image")
        if detector != "network":
            evidence = read_side_file(str(out), str(tmp_path / detector / "sub.evidence.jsonl"))
            assert len(evidence) == n - 1 and all("verdict" in e and "pairs" in e for e in evidence)
    # The matcher needs no model.
    proc = run("serving.score", "--input_dir", str(images), "--output", str(tmp_path / "nomodel.csv"),
               "--detector", "matcher", "--workers", "1")
    assert proc.returncode == 0 and len((tmp_path / "nomodel.csv").read_text().strip().splitlines()) == 1 + n


def _sample_folder(figures_dir: str, folder, count: int = 5) -> list[tuple[str, str]]:
    """A few figures (forged and authentic) and one broken file, as scoring items."""
    from preprocessing.cases import discover_test_images

    folder.mkdir()
    test = os.path.join(figures_dir, "test_images")
    for name in sorted(os.listdir(test))[:count]:
        os.symlink(os.path.join(test, name), folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    return discover_test_images(str(folder))[0]


def _error_tags(path) -> list:
    return [(e["case_id"], e["path"], e["reason"].split(":")[0]) for e in read_jsonl(str(path))]


def test_beam_score_writes_the_same_files_as_score_for_the_matcher(figures_dir, tmp_path):
    """serving.beam_score --detector matcher (no model) == serving.score --detector matcher, file by file."""
    items = _sample_folder(figures_dir, tmp_path / "images")
    outs = {}
    for command in ("serving.score", "serving.beam_score"):
        out = tmp_path / command / "sub.csv"
        out.parent.mkdir()
        proc = run(command, "--input_dir", str(tmp_path / "images"), "--output", str(out), "--detector", "matcher",
                   "--workers", "1", *(["--direct_running_mode=in_memory"] if "beam" in command else []))
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[command] = out
    plain, beam = outs["serving.score"], outs["serving.beam_score"]
    assert beam.read_text() == plain.read_text() and len(plain.read_text().splitlines()) == 1 + len(items)
    assert (beam.parent / "sub.evidence.jsonl").read_text() == (plain.parent / "sub.evidence.jsonl").read_text()
    assert _error_tags(beam.parent / "sub.errors.jsonl") == _error_tags(plain.parent / "sub.errors.jsonl")
    assert [t[0] for t in _error_tags(plain.parent / "sub.errors.jsonl")] == ["broken"]


def test_beam_fused_scoring_feeds_the_evidence_and_matches_in_process_scoring(figures_dir, tmp_path):
    """The fused detector with a model that takes the matcher's evidence: Beam (match -> evidence ->
    RunInference -> join by case id -> fuse) writes the same files as serving.score's path."""
    from serving import detectors
    from serving.beam_pipeline import run as beam_run
    from serving.saved_model import load
    from serving.submission import errors_path, evidence_path, write_outputs

    model_dir = export_tiny(str(tmp_path / "model"), evidence=True)
    model = load(model_dir)
    assert model.uses_evidence
    items = _sample_folder(figures_dir, tmp_path / "images")
    # A network veto and network-only instances, so both halves of the decision are exercised.
    settings = detectors.Settings(postprocess=PostprocessConfig(threshold=0.5, min_area=4),
                                  fused=FusedParams(confirm_bar=0.3, network_only_bar=0.0))
    result, evidence = detectors.score_items("fused", items, model, settings, workers=1, batch_size=4,
                                             progress=False)
    plain = str(tmp_path / "plain.csv")
    write_outputs(plain, result.rows, result.errors, evidence)
    beam_out = str(tmp_path / "beam.csv")
    errors = beam_run(model_dir, "", beam_out, batch_size=3, pipeline_args=["--direct_running_mode=in_memory"],
                      items=items, detector="fused", settings=settings)
    assert open(beam_out).read() == open(plain).read()
    assert open(evidence_path(beam_out)).read() == open(evidence_path(plain)).read()
    assert _error_tags(errors_path(beam_out)) == _error_tags(errors_path(plain)) and len(errors) == 1
    decided = {e["decided_by"] for e in evidence}
    assert len(result.rows) == len(items) and decided - {"none"}, decided
    # The network alone, with this model, still needs the matcher's map: Beam runs the matcher for it.
    net, _ = detectors.score_items("network", items, model, settings, workers=1, batch_size=4, progress=False)
    beam_net = str(tmp_path / "beam_net.csv")
    beam_run(model_dir, "", beam_net, batch_size=3, pipeline_args=["--direct_running_mode=in_memory"],
             items=items, detector="network", settings=settings)
    assert pd.read_csv(beam_net).values.tolist() == [list(r) for r in net.rows]


@pytest.mark.parametrize("reads_evidence", [False, True], ids=["plain", "evidence"])
def test_calibrate_tunes_every_detector_and_records_the_best(tiny_model, synth_dir, tmp_path, reads_evidence):
    import shutil

    from serving.tuning import simplest_first

    model = str(tmp_path / "model")
    if reads_evidence:  # its validation maps come from the same detections the matcher is tuned on
        export_tiny(model, evidence=True)
    else:
        shutil.copytree(tiny_model, model)
    proc = run("serving.calibrate", "--model_dir", model, "--input_dir", synth_dir, "--workers", "2",
               "--thresholds", "0.5", "--min_areas", "16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])["detectors"]
    meta = json.load(open(os.path.join(model, "export", "metadata.json")))
    assert meta["detector"] == report["detector"] in ("network", "matcher", "fused")
    assert meta["matcher"] == report["matcher"]["after"] and meta["fused"] == report["fused"]["after"]
    assert report["matcher"]["oF1_after"] >= report["matcher"]["oF1_before"]
    assert report["fused"]["oF1_after"] >= report["fused"]["oF1_before"]
    # The simplest detector stays unless a more complex one beats it by more than the margin (1 SE).
    expected = simplest_first(reads_evidence)[0]
    for step in report["choice"]:
        assert step["against"] == expected and step["chosen"] == (step["mean_difference"] > step["se"])
        expected = step["candidate"] if step["chosen"] else expected
    assert meta["detector"] == expected
    assert "validation oF1:" in proc.stdout and "default detector:" in proc.stdout
    cases, _ = discover_training_cases(synth_dir)
    assert report["images"] + report["skipped"] == len(cases)


def test_evidence_map_of_a_copy_marks_both_regions():
    from preprocessing.matching import detect
    from preprocessing.matching.evidence import EVIDENCE_CONFIG

    rng = np.random.default_rng(4)
    img = cv2_blur(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8))
    img[100:140, 130:180] = img[10:50, 20:70]
    ev = evidence_map(detect(img, EVIDENCE_CONFIG))
    assert ev.shape == (160, 200, len(EVIDENCE_CHANNELS)) and ev.dtype == np.uint8
    match = ev[..., EVIDENCE_CHANNELS.index("match")]
    assert match[20:40, 30:60].mean() > 128 and match[110:130, 140:170].mean() > 128
    assert match[60:90, 80:120].max() == 0 and (ev[..., PRESENT] == 255).all()


def cv2_blur(img):
    import cv2

    return cv2.GaussianBlur(img, (3, 3), 0)


def test_upscaled_evidence_matches_the_device_step(records_dir):
    """Serving's resize of a map that fits is the training device step's (model_input.upscale)."""
    ev = (np.arange(40 * 50 * 3) % 251).astype(np.uint8).reshape(40, 50, 3)
    from serving.decode import resize_to_model

    np.testing.assert_array_equal(resize_to_model(tf.constant(ev), 64).numpy(), upscale_one(tf.constant(ev), 64))
