"""A dataset report with a submission scored on it: ``python -m serving.report``.

    python -m serving.report --input_dir DATA --submission submission.csv --output_dir REPORT [report flags]

The dataset report (``preprocessing.report``) plus a "Submission" section: per-image oF1 where the
truth is known (DATA/test_solution.csv for test images, the masks for training images), the worst
images first, truth next to prediction for a handful of images, and review cards (authentic images
that were flagged first; each predicted pair drawn as a line joining its two regions with the
transform in words when the submission's ``.evidence.jsonl`` is beside it). It lives here because the
metric does (``serving.metric``); the dataset report never imports serving.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from absl import flags
from tqdm import tqdm

from preprocessing import cli, fileio, rle
from preprocessing.cases import Case
from preprocessing.constants import AUTHENTIC, FORGED, LABEL_NAMES
from preprocessing.errors import BadInput, UsageError
from preprocessing.images import image_size, read_rgb8
from preprocessing.masks import forged_instances
from preprocessing.report import figures as figs
from preprocessing.report.collect import THUMB_SIDE, Options
from preprocessing.report.render import esc, figure, table
from serving import metric

PREDICTION_ROWS = 6  # images pictured with truth and prediction
REVIEW_CARDS = 12  # images drawn with their copy pairs, flagged authentic ones first
SCORES_CSV = "submission_scores.csv"
FIGURES = ("predictions.png", "submission_scores.png")
REVIEW_PNGS = tuple(f"review_{k:02d}.png" for k in range(REVIEW_CARDS))
FLAGS = flags.FLAGS


def load_solution(root: str) -> dict:
    """case_id -> (annotation, h, w) from DATA/test_solution.csv, if present."""
    from serving.evaluate import read_csv
    from serving.metric import solution_size

    path = fileio.join(root, "test_solution.csv")
    if not fileio.isfile(path):
        return {}
    return {r.case_id: (r.annotation, *solution_size(r)) for r in read_csv(path, "solution").itertuples(index=False)}


def train_truth_lookup(cases: list[Case]) -> dict:
    """case_id -> the case whose truth a submission row is scored against.

    A case id is often both an authentic image and its forged twin; the forged
    one (with a mask) wins, since a submission over train ids is almost always
    a check of how well forgeries are found.
    """
    rank = {}
    for c in cases:
        r = (c.label == FORGED and c.mask_path is not None, c.label == FORGED, c.source == "train")
        if c.case_id not in rank or r > rank[c.case_id][0]:
            rank[c.case_id] = (r, c)
    return {cid: c for cid, (_, c) in rank.items()}


@dataclass
class Scored:
    """What the review cards need of one scored row (masks are decoded again only for the picked few)."""

    annotation: str
    path: str
    hw: tuple
    truth_forged: bool
    score: float


def score_submission(sub_path: str, root: str, cases: list[Case], tests: list[tuple[str, str]],
                     opts: Options) -> tuple[pd.DataFrame, list[dict], list[str], dict]:
    """Per-image oF1 (serving.metric.image_score) for every submission row whose truth is known,
    the pictured rows, the case ids the submission repeats (only their first row is scored), and
    case_id -> ``Scored`` for the review cards."""
    from serving.evaluate import read_csv

    sub = read_csv(sub_path, "submission")
    for col in ("case_id", "annotation"):
        if col not in sub.columns:
            raise UsageError(f"{sub_path}: submission is missing column {col!r} (has {list(sub.columns)})")
    repeated = sorted(set(sub.loc[sub["case_id"].duplicated(), "case_id"]))
    sub = sub.drop_duplicates("case_id", keep="first")
    solution, test_paths = load_solution(root), dict(tests)
    train = train_truth_lookup(cases)
    rows, shown, scored, review = [], [], 0, {}
    limit = opts.max_images if opts.max_images > 0 else len(sub)
    for rec in tqdm(list(sub.itertuples(index=False)), desc="scoring submission", unit="img", leave=False):
        if scored >= limit:
            break
        row = {"case_id": rec.case_id, "truth": "", "true_instances": None, "pred_instances": None,
               "status": "ok", "score": np.nan}
        rows.append(row)
        try:
            gt, image_path, hw, row["truth"] = _truth(rec.case_id, solution, test_paths, train, opts)
        except BadInput as exc:
            row.update(status=f"no truth ({exc.reason.split(':', 1)[0]})")
            continue
        except rle.RLEError as exc:
            row.update(status=f"no truth (bad test_solution.csv row: {exc})")
            continue
        if gt is None:
            row.update(status="no truth")
            continue
        scored += 1
        row["true_instances"] = len(gt)
        try:
            pred = rle.decode(rec.annotation, *hw)
        except rle.RLEError as exc:
            row.update(status=f"unparseable: {exc}", score=0.0)
            continue
        row.update(pred_instances=len(pred), score=metric.image_score(pred, gt))
        review[rec.case_id] = Scored(rec.annotation, image_path, hw, bool(gt), row["score"])
        if len(shown) < 4 * PREDICTION_ROWS:
            shown.append({"case_id": rec.case_id, "path": image_path, "truth": gt, "pred": pred,
                          "score": row["score"]})
    df = pd.DataFrame(rows, columns=["case_id", "truth", "true_instances", "pred_instances", "status", "score"])
    df = df.astype({"true_instances": "Int64", "pred_instances": "Int64"})
    return df, _picture_predictions(shown), repeated, review


def review_cards(sub_path: str, review: dict, root: str, cases: list[Case], tests: list[tuple[str, str]],
                 opts: Options, out_dir: str, notes: list[str]) -> list[str]:
    """HTML cards (``serving.pictures``) of the images a reviewer looks at first, authentic images
    that were flagged leading, each predicted pair drawn as a line joining its two regions with the
    transform in words when the detector wrote ``<submission stem>.evidence.jsonl`` for this very CSV
    (another run's evidence file is refused, with a line in ``notes``); pictures as REVIEW_PNGS."""
    from serving import pictures
    from serving.submission import StaleSideFile, read_evidence

    try:
        evidence = read_evidence(sub_path)
    except StaleSideFile as exc:  # pairs of another run would be drawn as this submission's
        print(f"warning: {exc}", file=sys.stderr)
        notes.append(str(exc))
        evidence = {}
    picked = pictures.review_order({c: r.truth_forged for c, r in review.items()},
                                   {c: r.annotation != rle.AUTHENTIC for c, r in review.items()}, REVIEW_CARDS,
                                   opts.seed)
    solution, test_paths, train = load_solution(root), dict(tests), train_truth_lookup(cases)
    cards = []
    for cid, png in zip(picked, REVIEW_PNGS):
        r = review[cid]
        try:
            gt = _truth(cid, solution, test_paths, train, opts)[0]
            rgb = read_rgb8(r.path)
        except BadInput:
            continue
        pred = rle.decode(r.annotation, *r.hw)
        pairs = evidence.get(cid, {}).get("pairs", [])
        cards.append(pictures.card(cid, rgb, pred, gt, pairs, r.score, png_path=os.path.join(out_dir, png)))
    return cards


def _truth(case_id, solution, test_paths, train, opts):
    """(true instances or None if unknown, image path, (h, w), where the truth came from) for one row."""
    if case_id in solution and case_id in test_paths:
        ann, h, w = solution[case_id]
        return rle.decode(ann, h, w), test_paths[case_id], (h, w), "test_solution.csv"
    case = train.get(case_id)
    if case is None or (case.label == FORGED and not case.mask_path):
        return None, None, None, ""
    where = f"{case.source} {LABEL_NAMES[case.label]}"
    h, w = image_size(fileio.read_input(case.image_path), case.image_path)
    if case.label == AUTHENTIC:
        return [], case.image_path, (h, w), where
    # An all-zero mask of a forged image is not the truth "authentic": the one rule refuses it.
    mask = forged_instances(case.image_path, case.mask_path, (h, w), opts.allow_pickle_masks)
    return list(mask.instances), case.image_path, (h, w), where


def _picture_predictions(shown: list[dict]) -> list[dict]:
    """A handful of scored images spread over the score range (worst to best); images where truth or
    prediction has instances first, correctly-authentic ones only to fill up."""
    if not shown:
        return []
    interesting = sorted((r for r in shown if r["truth"] or r["pred"]), key=lambda r: r["score"])
    idx = np.unique(np.linspace(0, len(interesting) - 1, min(PREDICTION_ROWS, len(interesting))).round().astype(int))
    picked = [interesting[i] for i in idx] if interesting else []
    picked += [r for r in shown if not (r["truth"] or r["pred"])][:PREDICTION_ROWS - len(picked)]
    rows = []
    for r in picked:
        try:
            rgb = read_rgb8(r["path"])
        except BadInput:
            continue
        small, truth, _ = figs.thumbnail(rgb, r["truth"], THUMB_SIDE)
        _, pred, _ = figs.thumbnail(rgb, r["pred"], THUMB_SIDE)
        rows.append({"case_id": r["case_id"], "rgb": small, "truth": truth, "pred": pred, "score": r["score"]})
    return rows


def submission_stats(df: pd.DataFrame, repeated: list[str]) -> dict:
    scored = df[df["score"].notna()]
    forged = scored[scored["true_instances"] > 0]
    return {"rows": int(len(df)), "scored": int(len(scored)),
            "no_truth": int(df["status"].str.startswith("no truth").sum()),
            "unparseable": int(df["status"].str.startswith("unparseable").sum()),
            "mean_oF1": float(scored["score"].mean()) if len(scored) else None,
            "forged_scored": int(len(forged)),
            "mean_oF1_forged": float(forged["score"].mean()) if len(forged) else float("nan"),
            "repeated_case_ids": repeated}

@dataclass
class SubmissionSection:
    """The report extension (``preprocessing.report.build.Extension``) for one submission file."""

    path: str
    name: str = "submission"
    files: tuple = (SCORES_CSV, *FIGURES, *REVIEW_PNGS)

    @property
    def inputs(self) -> dict:
        """The files read: the submission and the side files beside it (never replaced by the report)."""
        from serving.submission import side_files

        return {"submission": self.path, **side_files(fileio.absolute(self.path))}

    def analyse(self, ctx) -> dict:
        df, self._pictures, repeated, review = score_submission(self.path, ctx.input_dir, ctx.cases, ctx.tests,
                                                                ctx.options)
        notes: list[str] = []
        self._cards = review_cards(self.path, review, ctx.input_dir, ctx.cases, ctx.tests, ctx.options, ctx.out_dir,
                                   notes)
        self._scores = df
        df.to_csv(os.path.join(ctx.out_dir, SCORES_CSV), index=False)
        return dict(submission_stats(df, repeated), file=fileio.absolute(self.path), side_file_notes=notes)

    def sentences(self, s: dict) -> list[str]:
        out = []
        if s.get("scored"):
            out.append(f"The submission scores a mean oF1 of {s['mean_oF1']:.3f} over {s['scored']} images with "
                       f"known truth ({s['forged_scored']} forged: mean {s['mean_oF1_forged']:.3f}).")
        if s["repeated_case_ids"]:
            out.append(f"The submission repeats {len(s['repeated_case_ids'])} case id(s); only the first row of "
                       "each was scored.")
        out += [f"Evidence refused: {note}." for note in s.get("side_file_notes", [])]
        return out

    def section(self, ctx, s: dict) -> Optional[tuple[str, str, str]]:
        df = self._scores
        html = table(("measure", "value"), [(k, v) for k, v in s.items()
                                            if k not in ("repeated_case_ids", "side_file_notes")]
                     + [("repeated case ids", ", ".join(s["repeated_case_ids"]) or "none")])
        html += figure(figs.prediction_pairs(ctx.out_dir, FIGURES[0], self._pictures),
                       "Truth (left) vs predicted instances (right), spread over the score range")
        if self._cards:
            from serving import pictures

            html += ("<h3>For review: flagged authentic images first, then forgeries, then a few left alone</h3>"
                     f"<style>{pictures.CSS}</style>{pictures.LEGEND}" + "".join(self._cards))
        html += figure(figs.histograms(ctx.out_dir, FIGURES[1], [("Per-image oF1", "oF1", df["score"])]),
                       "Per-image oF1 where the truth is known")
        ordered = df.sort_values("score", na_position="last")
        html += "<h3>Per-image oF1 (worst first)</h3>" + table(
            ("case id", "truth", "true instances", "predicted instances", "status", "oF1"),
            ordered.values.tolist(),
            row_attrs=lambda i: f" class='score' data-case='{esc(ordered.iloc[i]['case_id'])}'")
        html += f"<p class='note'>All rows: <a href='{SCORES_CSV}'>{SCORES_CSV}</a>.</p>"
        return "submission", "Submission", html


def main(argv) -> None:
    from preprocessing.report import __main__ as report_command

    if not fileio.isfile(FLAGS.submission):
        raise UsageError(f"--submission {FLAGS.submission}: no such file")
    report_command.main(argv, extensions=[SubmissionSection(FLAGS.submission)])


if __name__ == "__main__":
    from preprocessing.report import __main__ as report_command

    report_command.define_flags()
    flags.DEFINE_string("submission", None, "submission.csv to score and picture.", required=True)
    cli.run(main)
