"""Submission files: one row per image (``case_id,annotation``), the error records beside them.

Whatever the detector, every image gets a row: an image that could not be read is scored
``authentic`` and listed with its reason in ``<output stem>.errors.jsonl``. Both files are written
to temporary names and renamed when complete (``preprocessing.outputs``).
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from preprocessing import fileio, outputs, rle
from serving.postprocess import PostprocessConfig, Prediction, annotation

HEADER = ("case_id", "annotation")
MAX_ERRORS_SHOWN = 10  # error records printed after a run; the .errors.jsonl file has them all


@dataclass
class ScoreResult:
    rows: list[tuple[str, str]]  # (case_id, annotation), sorted by case_id
    errors: list[dict] = field(default_factory=list)  # {"case_id", "path", "reason"}


def submission_rows(preds: Iterable[Prediction], errors: Sequence[dict],
                    cfg: PostprocessConfig) -> list[tuple[str, str]]:
    """One (case_id, annotation) per image, sorted by case_id; unreadable files are ``authentic``.

    ``preds`` may be a stream that appends to ``errors`` as it goes: it is consumed first.
    """
    rows = {p.case_id: annotation(p, cfg) for p in preds}
    for err in errors:
        rows.setdefault(err["case_id"], rle.AUTHENTIC)
    return sorted(rows.items())


def format_csv(rows: Sequence[tuple[str, str]]) -> str:
    """The submission text; annotations contain commas, so fields are CSV-quoted."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buf.getvalue()


# The files written beside a submission: the unreadable images, and (matcher, fused) the evidence.
ERRORS_SUFFIX = ".errors.jsonl"
EVIDENCE_SUFFIX = ".evidence.jsonl"


def errors_path(output: str) -> str:
    """``submission.csv`` -> ``submission.errors.jsonl``."""
    return os.path.splitext(output)[0] + ERRORS_SUFFIX


def evidence_path(output: str) -> str:
    """``submission.csv`` -> ``submission.evidence.jsonl`` (the matching regions and their transforms)."""
    return os.path.splitext(output)[0] + EVIDENCE_SUFFIX


def jsonl(records: Sequence[dict]) -> str:
    """One JSON object per line, sorted by case_id (error lists, evidence files)."""
    return "".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["case_id"]))


def read_jsonl(path: str) -> list[dict]:
    """The records of a ``jsonl`` file (blank lines ignored)."""
    return [json.loads(line) for line in fileio.read_text(path).splitlines() if line.strip()]


def write_outputs(output: str, rows: Sequence[tuple[str, str]], errors: Sequence[dict]) -> None:
    outputs.write_text(output, format_csv(rows))
    outputs.write_text(errors_path(output), jsonl(errors))


def report(output: str, result: ScoreResult, strict: bool) -> int:
    """Print the summary; the exit code (non-zero only with --strict and errors)."""
    forged = sum(a != rle.AUTHENTIC for _, a in result.rows)
    print(f"wrote {output}: {len(result.rows)} images, {forged} predicted forged, "
          f"{len(result.errors)} unreadable (listed in {errors_path(output)})")
    for err in result.errors[:MAX_ERRORS_SHOWN]:
        print(f"  {err['path']}: {err['reason']}")
    return 1 if strict and result.errors else 0
