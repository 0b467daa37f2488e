"""Score a submission CSV against a solution CSV with the competition oF1.

    python -m serving.evaluate --solution SOLUTION.csv --submission SUBMISSION.csv

Prints a short table, then one JSON object on the last line of stdout.
"""
from __future__ import annotations

import json
import sys

import pandas as pd
from absl import app, flags

from serving.metric import evaluate_frames


def _define_flags() -> None:
    """Flags exist only when run as a command, so importing this module never clashes with others."""
    flags.DEFINE_string("solution", None, "Ground truth CSV: case_id,annotation,height,width.", required=True)
    flags.DEFINE_string("submission", None, "Predictions CSV: case_id,annotation.", required=True)
    flags.DEFINE_string("per_image_csv", None, "Optional path for per-image scores.")


def read_csv(path: str, what: str) -> pd.DataFrame:
    """Read a CSV keeping case ids and annotations as text; a clear error names the file."""
    try:
        return pd.read_csv(path, dtype={"case_id": str, "annotation": str}, keep_default_na=False)
    except FileNotFoundError:
        raise SystemExit(f"error: {what} file not found: {path}")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: {what} file {path} is not a readable CSV: {exc}")


def main(argv):
    del argv
    solution = read_csv(flags.FLAGS.solution, "solution")
    submission = read_csv(flags.FLAGS.submission, "submission")
    try:
        result = evaluate_frames(solution, submission)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    s = result.summary
    if flags.FLAGS.per_image_csv:
        result.per_image.to_csv(flags.FLAGS.per_image_csv, index=False)
    print(f"images {s['images']}  oF1 {s['oF1']:.4f}  missing {s['missing']}  unparseable {s['unparseable']}")
    print(f"true forged/authentic {s['true_forged']}/{s['true_authentic']}  "
          f"predicted forged/authentic {s['pred_forged']}/{s['pred_authentic']}  "
          f"false positives on authentic {s['authentic_false_positive']}")
    sys.stdout.write(json.dumps(s) + "\n")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
