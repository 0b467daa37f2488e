"""The dataset report: a real run over the synthetic dataset, a broken copy of it, and a submission.

Expected numbers are computed here straight from the files (directory
listings, np.load of the masks, hand-built submissions), never copied from
the report's own output.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from preprocessing import rle
from preprocessing.features import noise_residual
from preprocessing.report import measure
from preprocessing.report.build import build_report
from preprocessing.report.collect import Options
from serving.report import SubmissionSection
from serving.submission import side_header

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIRD_ID = "<b>&'x"  # a case id that must be escaped on the page


class Page(HTMLParser):
    """What the tests read from index.html: links, count cells, problem rows and score rows."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.counts, self.problems, self.scores = [], {}, [], {}
        self._cell_key, self._row, self._cells, self._in_cell = None, None, [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a and not a[key].startswith("#"):
                self.links.append(a[key])
        if tag == "tr":
            self._row, self._cells = a, []
        if tag == "td":
            self._cell_key, self._in_cell = a.get("data-count"), True
            self._cells.append("")

    def handle_data(self, data):
        if self._in_cell:
            self._cells[-1] += data
            if self._cell_key:
                self.counts[self._cell_key] = int(data.replace(",", ""))

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell, self._cell_key = False, None
        if tag == "tr" and self._row is not None:
            if self._row.get("class") == "problem":
                self.problems.append((self._row["data-case"], self._row["data-tag"]))
            if self._row.get("class") == "score":
                self.scores[self._row["data-case"]] = self._cells
            self._row = None


def listing_counts(root: str) -> dict:
    """Counts straight from the folders, independent of preprocessing.cases."""
    def stems(folder):
        path = os.path.join(root, folder)
        return {os.path.splitext(n)[0] for n in os.listdir(path)} if os.path.isdir(path) else set()

    forged, masks = stems("train_images/forged"), stems("train_masks")
    return {"authentic": len(stems("train_images/authentic")), "forged": len(forged),
            "forged_with_masks": len(forged & masks), "test": len(stems("test_images"))}


def forged_with_masks(root: str) -> list[str]:
    return sorted(n[:-4] for n in os.listdir(os.path.join(root, "train_masks")))


def read_page(out_dir: str) -> tuple[str, Page]:
    with open(os.path.join(out_dir, "index.html"), encoding="utf-8") as f:
        text = f.read()
    return text, Page(text)


def make_submission(root: str, path: str) -> dict:
    """A submission with known per-image scores: case_id -> expected oF1 (None: no truth)."""
    sol = pd.read_csv(os.path.join(root, "test_solution.csv"), dtype=str, keep_default_na=False)
    rows, expected = [], {}
    for i, r in enumerate(sol.itertuples(index=False)):
        forged = r.annotation != "authentic"
        if i == 0:
            rows.append((r.case_id, "[1, 2, 3"))  # unparseable: scores 0
            expected[r.case_id] = 0.0
        elif i % 2:
            rows.append((r.case_id, r.annotation))  # perfect
            expected[r.case_id] = 1.0
        else:
            rows.append((r.case_id, "authentic"))
            expected[r.case_id] = 0.0 if forged else 1.0
    ids = forged_with_masks(root)
    perfect = np.load(os.path.join(root, "train_masks", ids[0] + ".npy"))
    rows.append((ids[0], rle.encode(list(perfect))))
    expected[ids[0]] = 1.0
    partial = np.load(os.path.join(root, "train_masks", ids[1] + ".npy"))
    rows.append((ids[1], rle.encode([partial[0]])))  # one exact instance out of N disjoint ones: oF1 = 1/N
    expected[ids[1]] = 1.0 / len(partial)
    rows.append(("no-such-case", "authentic"))
    expected["no-such-case"] = None
    pd.DataFrame(rows, columns=["case_id", "annotation"]).to_csv(path, index=False)
    return expected


@pytest.fixture(scope="module")
def clean(synth_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    sub = os.path.join(out, "submission.csv")
    expected = make_submission(synth_dir, sub)
    stats = build_report(synth_dir, os.path.join(out, "report"), extensions=[SubmissionSection(sub)])
    return os.path.join(out, "report"), stats, expected


@pytest.fixture(scope="module")
def broken(synth_dir, tmp_path_factory):
    """A copy of the synthetic dataset with a truncated image, a missing, an empty and a half-size mask, and junk."""
    root = os.path.join(str(tmp_path_factory.mktemp("broken")), "data")
    shutil.copytree(synth_dir, root)
    corrupt, missing, empty, small = forged_with_masks(root)[:4]
    img = os.path.join(root, "train_images", "forged", corrupt + ".png")
    with open(img, "rb") as f:
        data = f.read()
    with open(img, "wb") as f:
        f.write(data[: len(data) // 3])
    os.remove(os.path.join(root, "train_masks", missing + ".npy"))
    mask_path = os.path.join(root, "train_masks", empty + ".npy")
    np.save(mask_path, np.zeros_like(np.load(mask_path)))
    mask_path = os.path.join(root, "train_masks", small + ".npy")
    np.save(mask_path, np.load(mask_path)[:, ::2, ::2])
    with open(os.path.join(root, "train_images", "authentic", WEIRD_ID + ".png"), "wb") as f:
        f.write(b"this is not an image")
    out = os.path.join(os.path.dirname(root), "report")
    sub = os.path.join(os.path.dirname(root), "submission.csv")
    pd.DataFrame({"case_id": [missing, empty], "annotation": ["authentic", "authentic"]}).to_csv(sub, index=False)
    stats = build_report(root, out, extensions=[SubmissionSection(sub)])
    return root, out, stats, {"corrupt": corrupt, "missing": missing, "empty": empty, "small": small}


def check_links_and_pngs(out_dir: str) -> list[str]:
    _, page = read_page(out_dir)
    assert page.links, "the page links nothing"
    for link in page.links:
        assert "://" not in link and not os.path.isabs(link), link
        assert os.path.isfile(os.path.join(out_dir, link)), f"index.html references missing {link}"
    pngs = [link for link in page.links if link.endswith(".png")]
    for name in pngs:
        path = os.path.join(out_dir, name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
            assert im.size[0] > 50 and im.size[1] > 50, (name, im.size)
    return pngs


def test_page_links_only_existing_files_and_valid_pngs(clean):
    out, _, _ = clean
    pngs = check_links_and_pngs(out)
    for name in ("geometry.png", "modes.png", "masks_per_image.png", "instances_shape.png", "features.png",
                 "forged_grid.png", "authentic_vs_forged.png", "copy_move_peek.png", "predictions.png",
                 "submission_scores.png"):
        assert name in pngs, f"{name} not on the page"


def test_counts_on_page_match_the_dataset(clean, synth_dir):
    out, stats, _ = clean
    _, page = read_page(out)
    want = listing_counts(synth_dir)
    for key, value in want.items():
        assert page.counts[key] == value, key
    assert page.counts["problems"] == 0 and page.problems == []
    assert stats["analysed"]["decoded"] == want["authentic"] + want["forged"]


def test_mask_statistics_match_the_mask_files(clean, synth_dir):
    out, stats, _ = clean
    forged_px = total_px = 0
    n_instances = []
    for cid in forged_with_masks(synth_dir):
        inst = np.load(os.path.join(synth_dir, "train_masks", cid + ".npy"))
        image = cv2.imread(os.path.join(synth_dir, "train_images", "forged", cid + ".png"), cv2.IMREAD_UNCHANGED)
        h, w = image.shape[:2]
        assert inst.shape[1:] == (h, w)
        forged_px += int(inst.max(axis=0).astype(bool).sum())
        total_px += h * w
        n_instances.append(len(inst))
    ms = stats["masks"]
    ratio = 100.0 * forged_px / total_px
    assert ms["imbalance_ratio_percent"] == pytest.approx(ratio, rel=1e-12)
    assert ms["instances_total"] == sum(n_instances)
    assert ms["instances_per_image"]["mean"] == pytest.approx(np.mean(n_instances))
    text, _ = read_page(out)
    assert f"{ratio:.2f}% of the pixels of forged images" in text  # the written summary uses the data
    assert f"{np.mean(n_instances):.2f} instances on average" in text


def test_bad_files_become_problem_rows(broken):
    root, out, stats, bad = broken
    text, page = read_page(out)
    problems = set(page.problems)
    assert (bad["corrupt"], "corrupt_image") in problems
    assert (bad["missing"], "missing_mask") in problems
    assert (bad["empty"], "empty_mask") in problems
    assert (bad["small"], "shape_mismatch") in problems  # resized and still measured
    assert (WEIRD_ID, "not_an_image") in problems
    assert "<b>&'x" not in text and "&lt;b&gt;&amp;&#x27;x" in text  # escaped, not injected
    want = listing_counts(root)
    for key, value in want.items():
        assert page.counts[key] == value, key
    assert page.counts["problems"] == len(page.problems) == 5
    # The report went on: every other forged image with a mask was measured.
    assert stats["masks"]["forged_images_with_masks"] == want["forged_with_masks"] - 2  # corrupt + empty
    assert stats["analysed"]["decoded"] == want["authentic"] + want["forged"] - 2  # corrupt + junk
    check_links_and_pngs(out)
    with open(os.path.join(out, "problems.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 5
    # Without a usable mask a forged image has no truth: it is not scored as if it were authentic.
    assert page.scores[bad["missing"]][4] == "no truth"
    assert page.scores[bad["empty"]][4] == "no truth (empty_mask)"
    assert stats["submission"]["scored"] == 0


def test_submission_scores_match_hand_computed_of1(clean):
    out, stats, expected = clean
    _, page = read_page(out)
    for cid, want in expected.items():
        cells = page.scores[cid]
        if want is None:
            assert cells[4] == "no truth" and cells[5] == ""
        else:
            assert float(cells[5]) == pytest.approx(want, abs=1e-4), cid
    first = next(iter(expected))
    assert page.scores[first][4].startswith("unparseable")
    known = [v for v in expected.values() if v is not None]
    assert stats["submission"]["scored"] == len(known)
    assert stats["submission"]["mean_oF1"] == pytest.approx(np.mean(known))


def test_noise_residual_matches_the_model_layer():
    from trainer.layers import NoiseResidual

    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    want = NoiseResidual()(rgb[None]).numpy()[0, :, :, 0]
    np.testing.assert_allclose(noise_residual(rgb), want, atol=2e-5)


def test_error_level_matches_the_seed_computation():
    """The first seed: cv2.imwrite JPEG q95 of the BGR image, read back, |diff| mean over channels x 10."""
    rgb = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8), (3, 3), 0)
    bgr = rgb[:, :, ::-1].copy()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.jpg")
        cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        back = cv2.imread(path)
    want = np.mean(np.abs(bgr.astype(np.float32) - back.astype(np.float32)), axis=2) * 10
    np.testing.assert_array_equal(measure.error_level(rgb), want)
    assert want.max() > 0


def test_template_peek_finds_the_copy_not_itself():
    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (3, 3), 0)
    img[70:90, 100:130] = img[10:30, 20:50]
    src, dst = np.zeros((2, 120, 160), np.uint8)
    src[10:30, 20:50] = 1
    dst[70:90, 100:130] = 1
    _, hits = measure.template_peek(img, [src, dst])
    assert [h["hit"] for h in hits] == [(100, 70, 30, 20), (20, 10, 30, 20)]
    assert all(h["score"] > 0.99 and h["on_other_instance"] for h in hits)
    # A lone instance has no copy: its best hit is somewhere else and not on another instance.
    _, (lone,) = measure.template_peek(img[:60], [src[:60]])
    assert lone["hit"] != lone["source"] and not lone["on_other_instance"] and lone["score"] < 0.9


def test_instance_metrics_of_a_rectangle():
    m = np.zeros((40, 50), np.uint8)
    m[5:15, 10:30] = 1  # 10 high, 20 wide
    got = measure.instance_metrics(m)
    assert (got["area_px"], got["bbox_w"], got["bbox_h"], got["aspect"]) == (200, 20, 10, 2.0)
    assert got["area_fraction"] == pytest.approx(200 / 2000)
    # The contour runs through the outer pixel centres: perimeter 2 * (19 + 9) = 56.
    assert got["compactness"] == pytest.approx(56 ** 2 / 200)


@pytest.mark.parametrize("array,mode,bits", [
    (np.zeros((8, 9, 3), np.uint16), "RGB", 16),
    (np.zeros((8, 9), np.uint16), "I;16", 16),
    (np.zeros((8, 9), np.uint8), "L", 8),
    (np.zeros((8, 9, 4), np.uint8), "RGBA", 8),
])
def test_header_info_reads_mode_and_bit_depth(array, mode, bits):
    ok, buf = cv2.imencode(".png", array)
    assert ok
    info = measure.header_info(buf.tobytes(), "x.png")
    assert (info["mode"], info["bits"], info["width"], info["height"]) == (mode, bits, 9, 8)


def test_cli_with_max_images_samples_but_counts_everything(synth_dir, tmp_path):
    out = str(tmp_path / "report")
    proc = subprocess.run([sys.executable, "-m", "preprocessing.report", "--input_dir", synth_dir,
                           "--output_dir", out, "--max_images", "6"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["counts"]["test"] == listing_counts(synth_dir)["test"]
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    assert stats["analysed"]["sampled"] == stats["analysed"]["decoded"] == 6
    assert stats["analysed"]["test_images"] == 6
    assert 1 <= stats["masks"]["forged_images_with_masks"] <= 5  # both labels sampled
    _, page = read_page(out)
    assert page.counts == {**listing_counts(synth_dir), "supplemental": 0, "supplemental_with_masks": 0,
                           "problems": 0}
    check_links_and_pngs(out)


def test_output_folder_rule_and_overwrite_replaces_only_own_files(synth_dir, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*--overwrite"):
        build_report(synth_dir, str(out), Options(max_images=4))
    assert sorted(os.listdir(out)) == ["notes.txt"]  # refused before any work
    with pytest.raises(ValueError, match="inside the input directory"):
        build_report(synth_dir, os.path.join(synth_dir, "report"), Options(max_images=4))
    build_report(synth_dir, str(out), Options(max_images=4), overwrite=True)
    (out / "stats.json").write_text("stale")
    build_report(synth_dir, str(out), Options(max_images=4), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "stats.json").read_text())["counts"]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # the staging folder is gone


def test_reasons_name_the_file_and_truncated_test_images_are_flagged(tmp_path):
    root = tmp_path / "data"
    for sub in ("train_images/authentic", "test_images"):
        (root / sub).mkdir(parents=True)
    img = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "train_images" / "authentic" / "a.png"), img)
    (root / "train_images" / "authentic" / "junk.png").write_bytes(b"plain text, not an image")
    ok, buf = cv2.imencode(".png", img)
    (root / "test_images" / "cut.png").write_bytes(buf.tobytes()[:200])  # a header, then nothing
    out = str(tmp_path / "report")
    stats = build_report(str(root), out)
    with open(os.path.join(out, "problems.csv")) as f:
        rows = {r["case_id"]: r for r in pd.read_csv(f, dtype=str).to_dict("records")}
    assert rows["junk"]["tag"] == "not_an_image" and "BytesIO" not in rows["junk"]["reason"]
    assert rows["cut"]["tag"] == "corrupt_image"
    assert stats["problems_by_tag"] == {"not_an_image": 1, "corrupt_image": 1}


def test_a_repeated_submission_row_is_reported(synth_dir, tmp_path):
    sol = pd.read_csv(os.path.join(synth_dir, "test_solution.csv"), dtype=str, keep_default_na=False)
    first = sol.iloc[0]
    sub = str(tmp_path / "sub.csv")
    pd.DataFrame({"case_id": [first.case_id, first.case_id], "annotation": [first.annotation, "authentic"]}
                 ).to_csv(sub, index=False)
    stats = build_report(synth_dir, str(tmp_path / "r"), Options(max_images=2), [SubmissionSection(sub)])
    assert stats["submission"]["repeated_case_ids"] == [first.case_id]
    assert any("repeats 1 case id" in s for s in stats["summary"])


def test_review_cards_show_flagged_authentic_images_first_with_their_pairs(synth_dir, tmp_path):
    """The submission section draws the images a reviewer looks at first: the authentic image that
    was flagged leads, and a forged image's pair from the evidence file is drawn and written out."""
    import re

    sol = pd.read_csv(os.path.join(synth_dir, "test_solution.csv"), dtype=str, keep_default_na=False)
    authentic = [r for r in sol.itertuples(index=False) if r.annotation == "authentic"]
    forged = [r for r in sol.itertuples(index=False) if r.annotation != "authentic"]
    assert authentic and forged
    flagged = authentic[-1]
    h, w = int(flagged.height), int(flagged.width)
    square = np.zeros((h, w), np.uint8)
    square[: h // 4, : w // 4] = 1
    rows = [(flagged.case_id, rle.encode([square]))] + [(r.case_id, r.annotation) for r in forged]
    rows += [(r.case_id, "authentic") for r in authentic[:-1]]
    sub = str(tmp_path / "sub.csv")
    pd.DataFrame(rows, columns=["case_id", "annotation"]).to_csv(sub, index=False)
    pair = {"source_box": [0, 0, 10, 10], "copy_box": [30, 20, 10, 10], "inliers": 12, "correlation": 0.93,
            "description": "regions at (x=0, y=0, 10x10) and (x=30, y=20, 10x10) match: the second is the first "
                           "mirrored"}
    with open(tmp_path / "sub.evidence.jsonl", "w") as f:
        f.write(side_header(open(sub).read()))
        f.write(json.dumps({"case_id": forged[0].case_id, "pairs": [pair]}) + "\n")
    out = str(tmp_path / "report")
    build_report(synth_dir, out, Options(max_images=40), extensions=[SubmissionSection(sub)])
    text, _ = read_page(out)
    cards = re.findall(r"<div class='card'><h3>([^<]+)</h3>", text)
    assert cards[0] == flagged.case_id and "FALSE POSITIVE" in text
    assert forged[0].case_id in cards and "and (x=30, y=20, 10x10) match: the second is the first mirrored" in text
    assert len(cards) == min(12, len(sol))
    check_links_and_pngs(out)
