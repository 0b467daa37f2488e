"""Calibration: real records from the Beam job, a real SavedModel, the project's metric."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tiny_model import export_tiny

from preprocessing.cases import discover_training_cases
from preprocessing.records import read_manifest
from serving.calibrate import calibrate
from serving.metric import image_score
from serving.postprocess import PostprocessConfig, Prediction, instances, union_instances
from serving.saved_model import load, read_metadata
from serving.tuning import NetworkEvaluator, NetworkSample, pessimistic, samples_from_records, search_network


@pytest.fixture()
def model_dir(tmp_path):
    """A fresh export per test: calibration rewrites metadata.json."""
    return export_tiny(str(tmp_path / "model"))


def test_union_instances_are_4_connected_components():
    union = np.zeros((6, 8), np.uint8)
    union[0:2, 0:2] = 1
    union[2, 2] = 1  # touches the first block only diagonally: a separate instance
    union[4:6, 5:8] = 1
    inst = union_instances(union)
    assert sorted(int(m.sum()) for m in inst) == [1, 4, 6]
    np.testing.assert_array_equal(np.sum(inst, axis=0), union)
    assert union_instances(np.zeros((4, 4), np.uint8)) == []


def _blob_sample(case_id, gt_boxes, blob_boxes, peak, image_score_=None, size=32):
    prob = np.full((size, size), 0.05, np.float32)
    for (y0, y1, x0, x1) in blob_boxes:
        prob[y0:y1, x0:x1] = peak
    gt = []
    for (y0, y1, x0, x1) in gt_boxes:
        m = np.zeros((size, size), np.uint8)
        m[y0:y1, x0:x1] = 1
        gt.append(m)
    return NetworkSample(Prediction(case_id, (size, size), prob, image_score_), gt)


def test_search_finds_the_known_optimum():
    """Authentic images carry small confident specks or a large faint blob; forged ones large confident blobs.

    Defaults (threshold 0.45, min_area 32) call every authentic image forged (oF1 0.5 here); min_area
    above the specks plus a bar above the faint blob's peak gets a perfect score.
    """
    samples = [
        _blob_sample("a1", [], [(2, 8, 2, 8)], 0.9),  # 36 px speck
        _blob_sample("a2", [], [(10, 30, 10, 30)], 0.6),  # large but faint
        _blob_sample("f1", [(0, 16, 0, 16)], [(0, 16, 0, 16)], 0.95),
        _blob_sample("f2", [(4, 24, 4, 14), (4, 24, 18, 28)], [(4, 24, 4, 14), (4, 24, 18, 28)], 0.9),
    ]
    base = PostprocessConfig()
    best, before, after = search_network(samples, base, thresholds=[0.3, 0.45, 0.7], min_areas=[8, 32, 64],
                                         progress=False)[:3]
    assert before == pytest.approx(0.5)
    assert after == pytest.approx(1.0)
    # First perfect point of the grid: drop the speck by area, the faint blob by the bar midway 0.6 -> 0.9.
    assert (best.threshold, best.min_area) == (0.3, 64) and best.image_threshold == pytest.approx(0.75)
    # The chosen config really scores 1.0 through the real post-processing + metric.
    for s in samples:
        assert image_score(instances(s.pred.prob, s.pred.orig_hw, best, s.pred.image_score), s.gt) == 1.0


def test_search_keeps_defaults_when_nothing_beats_them():
    samples = [_blob_sample("f", [(0, 16, 0, 16)], [(0, 16, 0, 16)], 0.9), _blob_sample("a", [], [], 0.0)]
    base = PostprocessConfig()
    best, before, after = search_network(samples, base, progress=False)[:3]
    assert before == after == 1.0 and best == base


@pytest.mark.parametrize("specks, margin_se, moves", [(1, 1.0, False), (1, 0.0, True), (2, 1.0, True)])
def test_search_moves_only_on_evidence(specks, margin_se, moves):
    """Authentic images with a confident 36 px speck are flagged by the defaults (min_area 32);
    min_area 64 (or a bar above 0.9) fixes them. Fixing one image of ten is within one standard error of noise, so
    the defaults stay unless margin_se is 0; fixing two is a real gain."""
    forged = _blob_sample("f", [(0, 16, 0, 16)], [(0, 16, 0, 16)], 0.95)
    bad = [_blob_sample(f"speck{i}", [], [(2, 8, 2, 8)], 0.9) for i in range(specks)]
    clean = [_blob_sample(f"a{i}", [], [], 0.0) for i in range(9 - specks)]
    samples = [forged, *bad, *clean]
    base = PostprocessConfig()
    best, before, after = search_network(samples, base, thresholds=[0.45], min_areas=[32, 64], progress=False,
                                         margin_se=margin_se)[:3]
    assert before == pytest.approx(1 - specks / 10)
    if moves:
        assert best != base and after == pytest.approx(1.0)  # min_area 64, or a bar between 0.9 and 0.95
    else:
        assert best == base and after == before
    # The pessimistic score is the mean minus margin_se standard errors of the paired difference.
    gain = np.r_[np.zeros(10 - specks), np.ones(specks)]
    assert pessimistic(np.ones(10), 1.0 - gain, 1.0) == pytest.approx(1.0 - np.std(gain, ddof=1) / np.sqrt(10))


def test_calibrate_records_never_lowers_of1(model_dir, records_dir):
    model = load(model_dir)
    samples = samples_from_records(model, records_dir, batch_size=5, progress=False)
    manifest = read_manifest(records_dir)
    assert len(samples) == manifest["counts"]["val"]["total"]
    assert sum(bool(s.gt) for s in samples) == manifest["counts"]["val"]["forged"]
    # The fast evaluator is exactly the real post-processing + the real metric.
    ev = NetworkEvaluator(samples)
    for cfg in (PostprocessConfig(), PostprocessConfig(0.6, 8, 0.75), PostprocessConfig(0.3, 0, 0.0, 1)):
        direct = np.mean([image_score(instances(s.pred.prob, s.pred.orig_hw, cfg, s.pred.image_score), s.gt)
                          for s in samples])
        assert ev.of1(cfg) == pytest.approx(direct, abs=1e-12)

    report = calibrate(model_dir, data_dir=records_dir, batch_size=8, progress=False)
    assert report["images"] == len(samples)
    assert report["oF1_after"] >= report["oF1_before"]
    assert report["oF1_before"] == pytest.approx(ev.of1(PostprocessConfig()))
    chosen = PostprocessConfig.from_dict(report["after"])
    assert ev.of1(chosen) == pytest.approx(report["oF1_after"])
    meta = read_metadata(os.path.join(model_dir, "export"))
    assert meta["postprocess"] == chosen.to_dict() and meta["calibration"]["oF1_after"] == report["oF1_after"]
    assert load(model_dir).postprocess == chosen  # serving.score's default from now on
    again = calibrate(model_dir, data_dir=records_dir, batch_size=8, progress=False)
    assert again["oF1_before"] == pytest.approx(report["oF1_after"]) and again["after"] == report["after"]


def test_calibrate_cli_on_labelled_folder(model_dir, synth_dir):
    """--input_dir: real instance masks at the original size; prints before/after, writes metadata.json."""
    proc = subprocess.run([sys.executable, "-m", "serving.calibrate", "--model_dir", model_dir,
                           "--input_dir", synth_dir, "--batch_size", "8", "--thresholds", "0.4,0.6",
                           "--min_areas", "16,64"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "network oF1:" in proc.stdout and "network after:" in proc.stdout
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    cases, _ = discover_training_cases(synth_dir)
    assert report["images"] + report["skipped"] == len(cases)
    assert report["oF1_after"] >= report["oF1_before"]
    assert read_metadata(os.path.join(model_dir, "export"))["postprocess"] == report["after"]


def test_calibrate_needs_exactly_one_source(model_dir, tmp_path):
    with pytest.raises(ValueError):
        calibrate(model_dir)
    with pytest.raises(ValueError):
        calibrate(model_dir, data_dir=str(tmp_path), input_dir=str(tmp_path))


def test_a_forged_image_without_a_usable_mask_is_skipped_and_listed_not_authentic(model_dir, synth_dir, tmp_path):
    """Before: an empty mask made a forged image an *authentic* sample; skipped cases were not named."""
    import shutil

    root = str(tmp_path / "data")
    shutil.copytree(synth_dir, root)
    masks = sorted(os.listdir(os.path.join(root, "train_masks")))
    empty, gone = masks[0][:-4], masks[1][:-4]
    np.save(os.path.join(root, "train_masks", empty + ".npy"), np.zeros((1, 8, 8), np.uint8))
    os.remove(os.path.join(root, "train_masks", gone + ".npy"))
    from serving.tuning import samples_from_folder

    samples, errors = samples_from_folder(load(model_dir), root, progress=False)
    skipped = {e["case_id"]: e["reason"].split(":")[0] for e in errors}
    assert skipped == {f"forged/{empty}": "bad_mask", f"forged/{gone}": "missing_mask"} or \
        skipped == {f"forged/{empty}": "empty_mask", f"forged/{gone}": "missing_mask"}
    assert f"forged/{empty}" not in {s.pred.case_id for s in samples}
    cases, _ = discover_training_cases(root)
    assert len(samples) + len(errors) == len(cases)  # the counts add up
    report = calibrate(model_dir, input_dir=root, thresholds=[0.5], min_areas=[16], progress=False)
    assert {e["case_id"] for e in report["skipped_cases"]} == set(skipped)


# ----------------------------------------------------------------------------- the detectors and the matcher

def test_choose_detector_keeps_the_simpler_one_unless_beaten_by_the_margin():
    """Ten validation images. The matcher fixing one image the network misses is a gain of 0.1 with a
    standard error of 0.1: within one SE, so the network (the simpler detector) stays; fixing three is
    a gain of 0.3 with an SE of 0.15, and the matcher is chosen. A fused verdict one image better than
    that matcher stays unchosen."""
    from serving.detectors import DETECTORS
    from serving.tuning import SIMPLEST_FIRST, choose_detector, paired_difference

    assert sorted(SIMPLEST_FIRST) == sorted(DETECTORS)  # every detector has its rank

    network = np.zeros(10)
    one_better, three_better = network.copy(), network.copy()
    one_better[0] = 1.0
    three_better[:3] = 1.0
    fused = three_better.copy()
    fused[5] = 1.0
    chosen, steps = choose_detector({"network": network, "matcher": one_better, "fused": one_better})
    assert chosen == "network" and [s["chosen"] for s in steps] == [False, False]
    assert steps[0]["mean_difference"] == pytest.approx(0.1) and steps[0]["se"] == pytest.approx(0.1)
    assert choose_detector({"network": network, "matcher": one_better, "fused": one_better}, margin_se=0.0)[0] \
        == "matcher"  # without the margin, one lucky image decides
    chosen, steps = choose_detector({"network": network, "matcher": three_better, "fused": fused})
    assert chosen == "matcher" and [(s["candidate"], s["against"], s["chosen"]) for s in steps] == \
        [("matcher", "network", True), ("fused", "matcher", False)]
    assert steps[0]["se"] == pytest.approx(np.std(three_better, ddof=1) / np.sqrt(10))
    assert paired_difference(fused, three_better).beats(1.0) is False


def test_a_network_that_reads_the_matchers_evidence_must_beat_the_matcher():
    """An evidence network is the matcher plus a trained model: it ranks above the matcher, so the
    matcher stays unless the network beats it by the margin (one image of ten does not), and the
    fused verdict is then measured against whichever stayed."""
    from serving.tuning import SIMPLEST_FIRST, choose_detector, simplest_first

    assert simplest_first(False) == SIMPLEST_FIRST and simplest_first(True)[0] == "matcher"
    assert sorted(simplest_first(True)) == sorted(SIMPLEST_FIRST)
    matcher = np.zeros(10)
    one_better, three_better = matcher.copy(), matcher.copy()
    one_better[0] = 1.0
    three_better[:3] = 1.0
    chosen, steps = choose_detector({"matcher": matcher, "network": one_better, "fused": matcher},
                                    order=simplest_first(True))
    assert chosen == "matcher" and [(s["candidate"], s["against"]) for s in steps] == \
        [("network", "matcher"), ("fused", "matcher")]
    chosen, _ = choose_detector({"matcher": matcher, "network": three_better, "fused": three_better},
                                order=simplest_first(True))
    assert chosen == "network"
    # the same scores with a plain network: the network is the simpler one and stays
    assert choose_detector({"matcher": one_better, "network": matcher, "fused": one_better})[0] == "network"


def _split_keys(records_dir: str) -> dict:
    """split -> the label/case_id keys its records hold (read from the TFRecords themselves)."""
    import tensorflow as tf

    from preprocessing import records, schema

    out, keys = {}, {k: schema.FEATURES[k] for k in ("case_id", "label")}
    for split in ("train", "val"):
        src = records.resolve_source(records_dir, split)
        out[split] = {f"{'forged' if r['label'] else 'authentic'}/{r['case_id'].decode()}" for r in
                      tf.data.TFRecordDataset(list(src.files), src.compression)
                      .map(lambda s: tf.io.parse_single_example(s, keys)).as_numpy_iterator()}
    return out


def test_calibrate_tunes_the_matcher_on_both_splits_and_reports_paired_differences(model_dir, records_dir):
    """The matcher is tuned on the originals of the train and the val split (found through the records'
    case ids and the manifest's corpus); the network, the fused decision and the detector choice on val.
    Every move and every detector step carries its paired difference and standard error."""
    import io

    from preprocessing.matching import DecisionParams
    from serving import tuning
    from serving.fused import FusedParams

    keys = _split_keys(records_dir)
    by_split = tuning.cases_by_split(records_dir)
    assert {s: {c.key for c in cases} for s, cases in by_split.items()} == keys
    assert all(os.path.isfile(c.image_path) for cases in by_split.values() for c in cases)

    out = io.StringIO()
    report = calibrate(model_dir, data_dir=records_dir, batch_size=8, progress=False, detectors=True,
                       thresholds=[0.5], min_areas=[16], stream=out)
    det = report["detectors"]
    manifest = read_manifest(records_dir)
    assert det["matcher"]["images"] + det["matcher"]["skipped"] == len(keys["train"]) + len(keys["val"])
    assert det["matcher"]["by_split"]["train"] > 0 and det["matcher"]["by_split"]["val"] > 0
    assert det["images"] + det["skipped"] == manifest["counts"]["val"]["total"]
    for search in (report, det["matcher"], det["fused"]):
        assert set(search["difference"]) == {"images", "mean_difference", "se", "in_se"}
        assert search["oF1_after"] - search["oF1_before"] == pytest.approx(search["difference"]["mean_difference"])
        moved = search["difference"]["mean_difference"] > 0
        # a move is a gain beyond one standard error; the highest candidate is at least as good as the choice
        assert not moved or search["difference"]["mean_difference"] > search["difference"]["se"]
        assert search["highest"]["oF1"] >= search["oF1_after"] - 1e-12
    assert [s["candidate"] for s in det["choice"]] == ["matcher", "fused"]
    for step in det["choice"]:
        assert step["chosen"] == (step["mean_difference"] - step["se"] > 1e-12)
    text = out.getvalue()
    assert "matcher tuned on:" in text and "matcher vs network:" in text and "default detector:" in text
    meta = read_metadata(os.path.join(model_dir, "export"))
    assert meta["detector"] == det["detector"] and meta["calibration"]["detectors"]["choice"] == det["choice"]
    assert meta["matcher"] == det["matcher"]["after"] and meta["fused"] == det["fused"]["after"]

    # A margin no candidate can clear: the defaults and the simplest detector stay, whatever scored higher.
    kept = calibrate(model_dir, data_dir=records_dir, batch_size=8, progress=False, detectors=True,
                     thresholds=[0.5], min_areas=[16], margin_se=1e6, stream=io.StringIO())["detectors"]
    assert kept["matcher"]["after"] == DecisionParams().to_dict() and kept["fused"]["after"] == FusedParams().to_dict()
    assert kept["detector"] == "network"


def test_calibrating_an_evidence_network_on_records_draws_its_maps_on_validation_only(records_dir, tmp_path):
    """The matcher is tuned on every split, but only the validation images feed the network, so only
    they are matched with the dense field's planes: a validation map without them would be refused."""
    import io

    model = export_tiny(str(tmp_path / "model"), evidence=True)
    keys = _split_keys(records_dir)
    det = calibrate(model, data_dir=records_dir, batch_size=8, progress=False, detectors=True,
                    thresholds=[0.5], min_areas=[16], stream=io.StringIO())["detectors"]
    assert det["matcher"]["images"] + det["matcher"]["skipped"] == len(keys["train"]) + len(keys["val"])
    assert det["matcher"]["by_split"]["train"] > 0 and det["matcher"]["by_split"]["val"] > 0
    assert det["images"] + det["skipped"] == len(keys["val"]) and det["images"] > 0
    assert [s["candidate"] for s in det["choice"]] == ["network", "fused"]  # it ranks above the matcher


def _textured(rng, shape=(200, 240)) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (5, 5), 0)


def _labelled_folder(root: str, weak: int, clear: int = 0, authentic: int = 0, seed: int = 5) -> str:
    """A competition-layout folder of real PNGs and masks: ``clear`` forged images with an exact
    copy (the matcher's defaults find them), ``weak`` forged images whose copy is mirrored and carries
    noise (few RANSAC inliers under ``NO_GUIDED``; a mirror needs ``min_inliers``, 8, which misses them,
    and a looser setting finds them) and authentic ones."""
    import cv2

    rng = np.random.default_rng(seed)
    for sub in ("train_images/forged", "train_images/authentic", "train_masks"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for k in range(weak + clear):
        img = _textured(rng)
        block = img[20:80, 30:100].astype(float)
        if k < weak:
            block = block[:, ::-1] + rng.normal(0, 20, (60, 70, 3))
        img[120:180, 150:220] = np.clip(block, 0, 255).astype(np.uint8)
        masks = np.zeros((2, 200, 240), np.uint8)
        masks[0, 20:80, 30:100] = masks[1, 120:180, 150:220] = 1
        cv2.imwrite(os.path.join(root, "train_images/forged", f"{seed}{100 + k}.png"), img)
        np.save(os.path.join(root, "train_masks", f"{seed}{100 + k}.npy"), masks)
    for k in range(authentic):
        cv2.imwrite(os.path.join(root, "train_images/authentic", f"{seed}{200 + k}.png"), _textured(rng))
    return root


# The weak copies' few inliers are RANSAC's; guided matching (on by default) adds the rest of the
# copy's pairs and finds them at the defaults, so these tests of the calibration rule match without it.
NO_GUIDED = {"guided": False}


def test_one_lucky_image_does_not_loosen_the_matchers_defaults(tmp_path):
    """Loosening min_inliers finds one more copy in five images: a gain of one SE, within the margin, so
    the matcher's search keeps the defaults (and reports what it passed over); with three such images it
    loosens. Real PNGs and masks, matched once each, as ``calibrate_detectors`` does."""
    from preprocessing.matching import DecisionParams
    from serving import tuning

    defaults = DecisionParams()
    one = _labelled_folder(str(tmp_path / "one"), weak=1, clear=2, authentic=2)
    from preprocessing.matching import MatcherConfig

    samples, errors = tuning.matcher_samples(discover_training_cases(one)[0], MatcherConfig(**NO_GUIDED),
                                             progress=False)
    assert len(samples) == 5 and not errors
    kept = tuning.search_matcher(samples, progress=False).to_dict()
    assert kept["after"] == defaults.to_dict() and kept["oF1_after"] == kept["oF1_before"]
    highest = kept["highest"]
    assert highest["difference"]["mean_difference"] == pytest.approx(highest["oF1"] - kept["oF1_before"])
    assert highest["difference"]["mean_difference"] > 0
    assert highest["params"]["min_inliers"] < defaults.min_inliers  # a looser setting scored higher...
    assert highest["difference"]["in_se"] == pytest.approx(1.0)  # ...by one image: one standard error
    assert tuning.search_matcher(samples, progress=False, margin_se=0.0).params.min_inliers < 8  # no margin: moves

    two_more = _labelled_folder(str(tmp_path / "two_more"), weak=2, seed=6)
    more, _ = tuning.matcher_samples(discover_training_cases(two_more)[0], MatcherConfig(**NO_GUIDED),
                                     progress=False)
    moved = tuning.search_matcher(samples + more, progress=False)
    assert moved.params.min_inliers < 8 and moved.difference.beats(tuning.DEFAULT_MARGIN_SE)
