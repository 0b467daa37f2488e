"""Orchestration: discover, sample, analyse, compute the numbers, write the page and its files.

Counts come from case discovery over the whole corpus; everything that opens a file runs on a
seeded sample of at most ``max_images`` training images (and as many test images). The report is
built in a staging folder and moved into place when complete (``preprocessing.outputs``).

Another layer can add to the page without this package importing it: an ``Extension`` (serving's
submission scoring, ``python -m serving.report``) gets the discovered data, adds its numbers to
stats.json, sentences to the summary and a section to the page.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from preprocessing import fileio, outputs
from preprocessing.cases import Case, discover_test_images, discover_training_cases
from preprocessing.report import collect, render, stats
from preprocessing.report.collect import Collected, Options

PAGE, STATS, PROBLEMS = "index.html", "stats.json", "problems.csv"
PROBLEM_COLUMNS = ["case_id", "label", "source", "path", "tag", "reason"]


@dataclass
class Context:
    """What an extension gets: the corpus as discovered, the options and the folder to write into."""

    input_dir: str
    out_dir: str
    cases: list[Case]
    tests: list[tuple[str, str]]
    options: Options


class Extension(Protocol):
    name: str  # its key in stats.json
    files: tuple[str, ...]  # the files it writes into the report folder
    inputs: dict  # role -> a file it reads (the report folder must neither be nor contain one)

    def analyse(self, ctx: Context) -> dict: ...

    def sentences(self, result: dict) -> list[str]: ...

    def section(self, ctx: Context, result: dict) -> Optional[tuple[str, str, str]]: ...


def own_files(extensions: Sequence[Extension] = ()) -> set[str]:
    return {PAGE, STATS, PROBLEMS, *render.FIGURE_FILES, *(f for e in extensions for f in e.files)}


def _write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    raise TypeError(type(o).__name__)


def _source_of(path: str, root: str) -> str:
    rel = collect._rel(path, root)
    return "supplemental" if rel.startswith("supplemental") else "test" if rel.startswith("test") else "train"


def build_report(input_dir: str, output_dir: str, options: Options = Options(),
                 extensions: Sequence[Extension] = (), overwrite: bool = False) -> dict:
    """Analyse ``input_dir`` and write the report into ``output_dir``; returns what stats.json holds."""
    owned = own_files(extensions)
    output_dir = outputs.check_dir(output_dir, overwrite=overwrite, owned=lambda rel: rel in owned,
                                   protected={"input directory": input_dir,
                                              **{k: v for e in extensions for k, v in e.inputs.items()}})
    cases, found = discover_training_cases(input_dir)
    tests, refused = discover_test_images(input_dir) if fileio.isdir(fileio.join(input_dir, "test_images")) \
        else ([], [])
    found = found + refused
    with outputs.staged_local_dir(output_dir, lambda rel: rel in owned) as out_dir:
        return _build(input_dir, out_dir, options, extensions, cases, found, tests)


def _build(input_dir, out_dir, opts: Options, extensions, cases, found, tests) -> dict:
    rng = np.random.default_rng(opts.seed)
    c = Collected(problems=[collect.problem_row(p.case_id, p.label, _source_of(p.path, input_dir), p.path, p.reason,
                                                input_dir) for p in found])
    sample = collect.stratified_sample(cases, opts.max_images, rng)
    pictured = collect.choose_pictured(sample)
    wanted = set(pictured["grid"]) | {k for pair in pictured["pairs"] for k in pair if k}
    for case in tqdm(sample, desc="analysing images", unit="img"):
        key = collect.uid(case)
        try:
            collect.analyse_case(case, input_dir, opts, rng, key in wanted, key in pictured["peek"], c)
        except (cv2.error, ValueError) as exc:  # an image the measurements cannot handle: record, go on
            c.problems.append(collect.problem_row(case.case_id, case.label, case.source, case.image_path,
                                                  f"analysis_failed: {type(exc).__name__}: {exc}", input_dir))
    test_sample = tests if opts.max_images <= 0 else [
        tests[i] for i in sorted(rng.permutation(len(tests))[:opts.max_images])]
    collect.analyse_test_images(test_sample, input_dir, opts.max_pixels, c)

    ctx = Context(input_dir, out_dir, cases, tests, opts)
    added = {e.name: e.analyse(ctx) for e in extensions}

    images = pd.DataFrame(c.images, columns=["case_id", "label", "split", "width", "height", "mode", "format",
                                             "bits", "aspect"])
    counts = stats.dataset_counts(cases, tests, c.problems)
    analysed = {"available": len(cases), "sampled": len(sample),
                "decoded": int((images["split"] != "test").sum()),
                "test_images": int((images["split"] == "test").sum())}
    ms, fs, geometry = stats.mask_stats(c), stats.feature_stats(c), stats.image_geometry(images)
    peek_df = pd.DataFrame(c.peeks, columns=["case_id", "instance", "score", "on_other_instance"])
    peek = {"instances": int(len(peek_df)), "on_other": int(peek_df["on_other_instance"].sum()),
            "median_score": float(peek_df["score"].median()) if len(peek_df) else None}
    sentences = stats.summary_sentences(counts, analysed, ms, fs, geometry, peek)
    for e in extensions:
        sentences += e.sentences(added[e.name])

    result = {"input_dir": fileio.absolute(input_dir), "counts": counts, "analysed": analysed,
              "problems_by_tag": dict(Counter(p["tag"] for p in c.problems)), "geometry": geometry,
              "colour_modes": stats.value_counts(images, "mode"), "bit_depths": stats.value_counts(images, "bits"),
              "masks": ms, "features": fs, "copy_move_peek": peek, **added, "summary": sentences,
              "options": dict(opts.__dict__, extensions=[e.name for e in extensions])}
    _write_csv(os.path.join(out_dir, PROBLEMS), c.problems, PROBLEM_COLUMNS)
    with open(os.path.join(out_dir, STATS), "w") as f:
        json.dump(result, f, indent=2, default=_json_default)
    sections = render.dataset_sections(out_dir, result, c, images, pictured)
    sections += [s for s in (e.section(ctx, added[e.name]) for e in extensions) if s]
    meta = (f"Input <code>{render.esc(fileio.absolute(input_dir))}</code>; seed {opts.seed}; "
            f"max_images {opts.max_images or 'all'}. Machine-readable numbers: <a href='{STATS}'>{STATS}</a>.")
    with open(os.path.join(out_dir, PAGE), "w", encoding="utf-8") as f:
        f.write(render.render_page("Copy-move forgery dataset report", sections, meta))
    return result
