"""Submission files: one row per image (``case_id,annotation``), the error records beside them.

Whatever the detector, every image gets a row: an image that could not be read is scored
``authentic`` and listed with its reason in ``<output stem>.errors.jsonl``. Every file is written
to a temporary name and renamed when complete (``preprocessing.outputs``), side files first and
the CSV last; each side file's first line names the CSV it belongs to (``side_header``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from preprocessing import fileio, outputs, rle
from preprocessing.errors import BadInput, UsageError
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
    return rows_with_errors({p.case_id: annotation(p, cfg) for p in preds}, errors)


def rows_with_errors(rows: dict[str, str], errors: Sequence[dict]) -> list[tuple[str, str]]:
    """case_id -> annotation plus an ``authentic`` row for every error record's image, sorted."""
    for err in errors:
        rows.setdefault(err["case_id"], rle.AUTHENTIC)
    return sorted(rows.items())


def with_errors(result: ScoreResult, errors: Sequence[dict]) -> ScoreResult:
    """``result`` with more error records (files discovery refused), each image scored ``authentic``."""
    return ScoreResult(rows_with_errors(dict(result.rows), errors),
                       sorted([*result.errors, *errors], key=lambda e: e["case_id"]))


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
# The first line of every side file: the SHA-256 of the submission CSV it was written with, so a
# side file left by another run (an earlier matcher run, a kill before the CSV was renamed) is
# recognised and never read as this submission's.
SIDE_HEADER = "side_file_of"


class StaleSideFile(UsageError):
    """A side file that does not belong to the submission beside it."""


def errors_path(output: str) -> str:
    """``submission.csv`` -> ``submission.errors.jsonl``."""
    return os.path.splitext(output)[0] + ERRORS_SUFFIX


def evidence_path(output: str) -> str:
    """``submission.csv`` -> ``submission.evidence.jsonl`` (the matching regions and their transforms)."""
    return os.path.splitext(output)[0] + EVIDENCE_SUFFIX


def side_files(output: str) -> dict[str, str]:
    """Every file a scoring run may leave beside ``output``: {what: path} (all are checked before
    the work and replaced or removed by every run)."""
    return {"error list": errors_path(output), "evidence file": evidence_path(output)}


def jsonl(records: Sequence[dict]) -> str:
    """One JSON object per line, sorted by case_id (error lists, evidence files)."""
    return "".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["case_id"]))


def read_jsonl(path: str) -> list[dict]:
    """The records of a ``jsonl`` file (blank lines and a side file's header line ignored); a damaged
    line is a ``BadInput`` naming the file and the line."""
    records = []
    for number, line in enumerate(fileio.read_text(path).splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BadInput(path, f"line {number} is not JSON ({exc})") from exc
    return [r for r in records if not (isinstance(r, dict) and SIDE_HEADER in r)]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def side_header(csv_text: str) -> str:
    """The header line of a side file written with the submission text ``csv_text``."""
    return json.dumps({SIDE_HEADER: {"submission_sha256": _digest(csv_text.encode("utf-8"))}}) + "\n"


def read_side_file(output: str, path: str) -> list[dict]:
    """The records of the side file ``path`` of the submission ``output``, or ``StaleSideFile`` when
    it was written with another submission (or before side files recorded theirs)."""
    lines = fileio.read_text(path).splitlines()
    try:
        head = json.loads(lines[0]).get(SIDE_HEADER) if lines else None
    except (ValueError, AttributeError):  # not a JSON object
        head = None
    if not isinstance(head, dict):
        raise StaleSideFile(f"{path} does not say which submission it belongs to (an older run wrote it): "
                            f"not used with {output}")
    if head.get("submission_sha256") != _digest(fileio.read_bytes(output)):
        raise StaleSideFile(f"{path} was written with another version of {output} (a later run replaced the "
                            "CSV, or a run was interrupted): not used")
    return read_jsonl(path)


def publish(output: str, csv_text: str, side: dict[str, Optional[str]]) -> None:
    """Put a submission and its side files in place: each side file (path -> its records as text)
    first, headed by ``side_header``, a side file given as None removed (an earlier run's: this run
    has none), and the CSV last, so that a kill in between leaves side files that say they do not
    belong to the CSV beside them."""
    header = side_header(csv_text)
    for path, body in side.items():
        if body is not None:
            outputs.write_text(path, header + body)
        elif fileio.exists(path):  # the output check allowed replacing it (--overwrite)
            fileio.remove(path)
    outputs.write_text(output, csv_text)


def write_outputs(output: str, rows: Sequence[tuple[str, str]], errors: Sequence[dict],
                  evidence: Optional[Sequence[dict]] = None) -> None:
    """The submission, its error list and (matcher, fused: ``evidence`` given) its evidence file;
    without evidence an earlier run's evidence file is removed."""
    publish(output, format_csv(rows), {errors_path(output): jsonl(errors),
                                       evidence_path(output): None if evidence is None else jsonl(evidence)})


def read_evidence(output: str) -> dict:
    """case_id -> evidence record from the file beside the submission ``output``; {} when the
    detector wrote none (the network); ``StaleSideFile`` when the file there belongs to another
    submission."""
    path = evidence_path(output)
    if not fileio.exists(path):
        return {}
    return {r["case_id"]: r for r in read_side_file(output, path)}


def report(output: str, result: ScoreResult, strict: bool) -> int:
    """Print the summary; the exit code (non-zero only with --strict and errors)."""
    forged = sum(a != rle.AUTHENTIC for _, a in result.rows)
    print(f"wrote {output}: {len(result.rows)} images, {forged} predicted forged, "
          f"{len(result.errors)} unreadable (listed in {errors_path(output)})")
    for err in result.errors[:MAX_ERRORS_SHOWN]:
        print(f"  {err['path']}: {err['reason']}")
    return 1 if strict and result.errors else 0
