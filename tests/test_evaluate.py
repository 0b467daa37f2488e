"""Dataset-level oF1 (evaluate_frames) and the `python -m serving.evaluate` CLI, on hand-computed cases."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from preprocessing import rle
from serving.evaluate import read_csv
from serving.metric import evaluate_frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 4x4 images; RLE written by hand (1-based, column-major: px 1-4 = column 0, px 5-8 = column 1, ...)
A = "[1, 2, 5, 2]"        # rows 0-1 of columns 0 and 1: top-left 2x2
B = "[11, 2, 15, 2]"      # rows 2-3 of columns 2 and 3: bottom-right 2x2
A_SHIFT = "[5, 2, 9, 2]"  # rows 0-1 of columns 1 and 2: A moved right by one column

# case: (truth, prediction or None if the row is missing, expected score worked out by hand)
CASES = {
    "perfect": (f"{A};{B}", f"{B};{A}", 1.0),
    "extra": (A, f"{A};{B}", 0.5),                 # best match 1.0, penalty 1/2
    "missed": (f"{A};{B}", A, 0.5),                # matched 1.0 and 0 (padding) -> mean 0.5
    "shifted": (A, A_SHIFT, 0.5),                  # overlap 2 px: 2*2/(4+4)
    "forged_as_authentic": (A, "authentic", 0.0),
    "authentic_ok": ("authentic", "authentic", 1.0),
    "authentic_fp": ("authentic", A, 0.0),
    "missing": (A, None, 0.0),                     # absent from the submission
    "garbled": ("authentic", "[1, 2, 3]", 0.0),    # odd length: unparseable
    "out_of_range": (B, "[16, 2]", 0.0),           # px 16-17 of a 16-px image: unparseable
}
# mean over 10 images = (1 + .5 + .5 + .5 + 0 + 1 + 0 + 0 + 0 + 0) / 10 = 3.5 / 10
EXPECTED_OF1 = 0.35
# forged truth: perfect, extra, missed, shifted, forged_as_authentic, missing, out_of_range -> 7
#   their scores 1 + .5 + .5 + .5 + 0 + 0 + 0 = 2.5 -> oF1_forged 2.5/7
# authentic truth: authentic_ok, authentic_fp, garbled -> 3, scores 1 + 0 + 0 -> oF1_authentic 1/3
# predicted (scored rows only): forged = perfect, extra, missed, shifted, authentic_fp = 5;
#   authentic = forged_as_authentic, authentic_ok = 2
EXPECTED_COUNTS = {
    "images": 10, "missing": 1, "unparseable": 2,
    "true_forged": 7, "true_authentic": 3, "pred_forged": 5, "pred_authentic": 2,
    "forged_detected": 4, "authentic_false_positive": 1,
    "extra_submission_rows": 1, "duplicate_submission_rows": 1,
}


def frames():
    solution = pd.DataFrame([{"case_id": k, "annotation": t, "height": 4, "width": 4}
                             for k, (t, _, _) in CASES.items()])
    sub_rows = [{"case_id": k, "annotation": p} for k, (_, p, _) in CASES.items() if p is not None]
    sub_rows.append({"case_id": "not_in_solution", "annotation": A})
    sub_rows.append({"case_id": "perfect", "annotation": "authentic"})  # duplicate: the first row wins
    return solution, pd.DataFrame(sub_rows)


def test_hand_rle_strings_are_the_boxes_they_claim():
    (a,) = rle.decode(A, 4, 4)
    assert a[:2, :2].all() and a.sum() == 4
    (b,) = rle.decode(B, 4, 4)
    assert b[2:, 2:].all() and b.sum() == 4
    (s,) = rle.decode(A_SHIFT, 4, 4)
    assert s[:2, 1:3].all() and s.sum() == 4


def test_evaluate_frames_per_image_scores():
    result = evaluate_frames(*frames())
    got = result.per_image.set_index("case_id")
    for case, (_, _, expected) in CASES.items():
        assert got.loc[case, "score"] == pytest.approx(expected), case
    assert got.loc["missing", "status"] == "missing"
    assert got.loc["garbled", "status"] == "unparseable"
    assert "odd number" in got.loc["garbled", "error"]
    assert got.loc["out_of_range", "status"] == "unparseable"
    assert len(result.per_image) == len(CASES)


def test_evaluate_frames_summary():
    s = evaluate_frames(*frames()).summary
    assert s["oF1"] == pytest.approx(EXPECTED_OF1)
    assert s["oF1_forged"] == pytest.approx(2.5 / 7)
    assert s["oF1_authentic"] == pytest.approx(1 / 3)
    for key, value in EXPECTED_COUNTS.items():
        assert s[key] == value, key
    # counts add up: every solution row is scored, missing or unparseable
    assert s["pred_forged"] + s["pred_authentic"] + s["missing"] + s["unparseable"] == s["images"]
    assert s["true_forged"] + s["true_authentic"] == s["images"]


def test_all_authentic_submission_scores_the_authentic_fraction():
    solution, _ = frames()
    sub = pd.DataFrame({"case_id": solution["case_id"], "annotation": "authentic"})
    s = evaluate_frames(solution, sub).summary
    # 3 authentic of 10 score 1, the 7 forged score 0
    assert s["oF1"] == pytest.approx(0.3)
    assert s["pred_forged"] == 0 and s["pred_authentic"] == 10 and s["forged_detected"] == 0


def test_empty_or_nan_prediction_is_unparseable_not_a_crash():
    solution = pd.DataFrame([{"case_id": "x", "annotation": A, "height": 4, "width": 4},
                             {"case_id": "y", "annotation": "authentic", "height": 4, "width": 4}])
    sub = pd.DataFrame({"case_id": ["x", "y"], "annotation": [float("nan"), ""]})
    s = evaluate_frames(solution, sub).summary
    assert s["unparseable"] == 2 and s["oF1"] == 0.0


def test_integer_case_ids_match_string_ids():
    solution = pd.DataFrame([{"case_id": 17, "annotation": A, "height": 4, "width": 4}])
    sub = pd.DataFrame({"case_id": ["17"], "annotation": [A]})
    assert evaluate_frames(solution, sub).summary["oF1"] == pytest.approx(1.0)


def test_non_square_images_use_height_and_width_in_the_right_order():
    # 2x3 image (H=2, W=3). Truth: the whole first row = px 1, 3, 5 (column-major) -> "[1, 1, 3, 1, 5, 1]".
    # The prediction "[1, 2]" is the whole first COLUMN (px 1-2): overlap 1 px (0,0);
    # F1 = 2*1 / (2 + 3) = 0.4
    solution = pd.DataFrame([{"case_id": "r", "annotation": "[1, 1, 3, 1, 5, 1]", "height": 2, "width": 3}])
    sub = pd.DataFrame({"case_id": ["r"], "annotation": ["[1, 2]"]})
    assert evaluate_frames(solution, sub).summary["oF1"] == pytest.approx(0.4)


def test_bad_inputs_raise_clear_errors():
    solution, sub = frames()
    with pytest.raises(ValueError, match="height"):
        evaluate_frames(solution.drop(columns=["height"]), sub)
    with pytest.raises(ValueError, match="annotation"):
        evaluate_frames(solution, sub.drop(columns=["annotation"]))
    broken = solution.copy()
    broken.loc[0, "annotation"] = "[1, 2, 3]"
    with pytest.raises(rle.RLEError, match="solution row 'perfect'"):
        evaluate_frames(broken, sub)


def test_read_csv_keeps_ids_as_text_and_names_missing_file(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("case_id,annotation\n00012,authentic\n")
    df = read_csv(str(path), "submission")
    assert df.loc[0, "case_id"] == "00012"
    with pytest.raises(FileNotFoundError, match="not found: .*nope.csv"):
        read_csv(str(tmp_path / "nope.csv"), "solution")


def test_cli_prints_json_summary_on_last_line(tmp_path):
    solution, sub = frames()
    sol_path, sub_path, per_image = tmp_path / "solution.csv", tmp_path / "submission.csv", tmp_path / "per.csv"
    solution.to_csv(sol_path, index=False)
    sub.to_csv(sub_path, index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "serving.evaluate", "--solution", str(sol_path), "--submission", str(sub_path),
         "--per_image_csv", str(per_image)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["oF1"] == pytest.approx(EXPECTED_OF1)
    for key, value in EXPECTED_COUNTS.items():
        assert summary[key] == value, key
    written = pd.read_csv(per_image)
    assert len(written) == len(CASES)
    assert written["score"].sum() == pytest.approx(3.5)


def test_duplicate_solution_ids_are_refused():
    """Before: duplicate solution rows counted twice (12 images for 10 ids)."""
    solution, sub = frames()
    doubled = pd.concat([solution, solution.iloc[:2]], ignore_index=True)
    with pytest.raises(ValueError, match="solution repeats case id.*'perfect'"):
        evaluate_frames(doubled, sub)


def test_duplicate_submission_ids_are_listed_and_whitespace_ids_are_explained(tmp_path):
    solution, sub = frames()
    summary = evaluate_frames(solution, sub).summary
    assert summary["duplicate_submission_ids"] == ["perfect"]
    padded = sub.assign(case_id=sub["case_id"] + " ")  # "10 " vs "10": once "10 missing + 10 extra", no hint
    summary = evaluate_frames(solution, padded).summary
    assert summary["missing"] == len(CASES)  # every row, the "missing" one included
    assert len(summary["ids_differing_by_whitespace"]) == len(CASES) - 1
    sol_path, sub_path = tmp_path / "solution.csv", tmp_path / "submission.csv"
    solution.to_csv(sol_path, index=False)
    padded.to_csv(sub_path, index=False)
    proc = subprocess.run([sys.executable, "-m", "serving.evaluate", "--solution", str(sol_path), "--submission",
                           str(sub_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "differ from solution ids only by surrounding whitespace" in proc.stdout


def test_a_non_numeric_height_names_its_row(tmp_path):
    solution, sub = frames()
    solution = solution.astype({"height": object})
    solution.loc[3, "height"] = "tall"
    with pytest.raises(ValueError, match="solution row 'shifted': height 'tall'"):
        evaluate_frames(solution, sub)
    solution.to_csv(tmp_path / "s.csv", index=False)
    sub.to_csv(tmp_path / "p.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "serving.evaluate", "--solution", str(tmp_path / "s.csv"),
                           "--submission", str(tmp_path / "p.csv")], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "shifted" in proc.stderr and "Traceback" not in proc.stderr


# The competition metric's own published examples: the doctest of ``score`` in the official metric
# notebook (kaggle.com/code/metric/recodai-f1, the same text in public copies of it). Its id column
# is ``row_id``; ours is ``case_id``. Authentic rows carry ``shape`` "authentic"; images are 720x960.
# Expected values checked by hand:
#   3: identical runs -> 1.0
#   4: truth 101+103 px vs prediction 101+102 px: F1 2*102/(103+102) = 204/205 on row 0, 1.0 on the
#      two others -> (204/205 + 2) / 3 = 0.99837398...
#   5: row 0 has two true instances (px 101-202, 300-399), one predicted = the first: matched F1s
#      1 and 0 (padding) -> 0.5, no excess penalty; (0.5 + 1 + 1) / 3 = 0.8333...
SIZE = "[720, 960]"
OFFICIAL_CASES = [
    (["authentic"] * 3, ["authentic"] * 3, ["authentic"] * 3, 1.0),
    (["authentic"] * 3, ["authentic"] * 3, ["[101, 102]"] * 3, 0.0),
    (["[101, 102]"] * 3, [SIZE] * 3, ["[101, 102]"] * 3, 1.0),
    (["[101, 103]", "[101, 102]", "[101, 102]"], [SIZE] * 3, ["[101, 102]"] * 3, 0.9983739837398374),
    (["[101, 102];[300, 100]", "[101, 102]", "[101, 102]"], [SIZE] * 3, ["[101, 102]"] * 3, 0.8333333333333334),
]


@pytest.mark.parametrize("truth,shapes,predicted,expected", OFFICIAL_CASES)
def test_the_official_metrics_published_cases_in_its_own_solution_format(truth, shapes, predicted, expected,
                                                                          tmp_path):
    ids = ["0", "1", "2"]
    pd.DataFrame({"case_id": ids, "annotation": truth, "shape": shapes}).to_csv(tmp_path / "sol.csv", index=False)
    pd.DataFrame({"case_id": ids, "annotation": predicted}).to_csv(tmp_path / "sub.csv", index=False)
    result = evaluate_frames(read_csv(str(tmp_path / "sol.csv"), "solution"),
                             read_csv(str(tmp_path / "sub.csv"), "submission"))
    assert result.summary["oF1"] == pytest.approx(expected, abs=1e-12)
    assert result.summary["unparseable"] == 0 and result.summary["official_rejections"] == 0


def test_a_shape_that_is_not_a_size_is_named():
    bad = pd.DataFrame({"case_id": ["x"], "annotation": ["[1, 2]"], "shape": ["720x960"]})
    with pytest.raises(ValueError, match="solution row 'x': shape '720x960'"):
        evaluate_frames(bad, pd.DataFrame({"case_id": ["x"], "annotation": ["authentic"]}))
    with pytest.raises(ValueError, match="missing column 'height' or 'shape'"):
        evaluate_frames(bad.drop(columns=["shape"]), pd.DataFrame({"case_id": ["x"], "annotation": ["authentic"]}))


# submission annotation -> what the competition's scorer says (None: accepted), each worked out from
# its rules: starts ascending within an instance, and start + length <= the next start
REJECTIONS = {
    "fine": ("[1, 2, 5, 2];[11, 2]", None),
    "touching": ("[1, 4, 5, 2]", None),                 # 1-4 then 5-6: adjacent, not overlapping
    "descending": ("[5, 2, 1, 2]", "not ascending"),
    "overlapping": ("[1, 5, 5, 2]", "overlapping"),     # 1-5 reaches the next start 5
    "odd": ("[1, 2, 3]", "start, length pairs"),
    "second_instance": ("[1, 2];[9, 1, 3, 1]", "instance 1: run starts not ascending"),
}


def test_rows_the_official_scorer_would_refuse_are_warned_per_row(tmp_path):
    ids = list(REJECTIONS)
    pd.DataFrame({"case_id": ids, "annotation": "[1, 2]", "height": 4, "width": 4}).to_csv(tmp_path / "sol.csv",
                                                                                          index=False)
    pd.DataFrame({"case_id": ids, "annotation": [a for a, _ in REJECTIONS.values()]}).to_csv(tmp_path / "sub.csv",
                                                                                             index=False)
    proc = subprocess.run([sys.executable, "-m", "serving.evaluate", "--solution", str(tmp_path / "sol.csv"),
                           "--submission", str(tmp_path / "sub.csv")], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    warned = {line.split("'")[1]: line for line in proc.stdout.splitlines() if line.startswith("warning: row ")}
    assert set(warned) == {k for k, (_, reason) in REJECTIONS.items() if reason}
    for case_id, line in warned.items():
        assert REJECTIONS[case_id][1] in line and "fails the whole submission" in line
    assert json.loads(proc.stdout.strip().splitlines()[-1])["official_rejections"] == 4
