"""Score a submission CSV against a solution CSV with the competition oF1.

    python -m serving.evaluate --solution SOLUTION.csv --submission SUBMISSION.csv [--per_image_csv F]

The solution is this project's ``case_id,annotation,height,width`` or the competition's own
``case_id,annotation,shape`` (``"[height, width]"``, or ``authentic``). Prints a short table and what
looks wrong (missing ids, repeated ids, ids that differ only by whitespace, and, per row, annotations
the competition's scorer would refuse, failing the whole submission), then one JSON object on the last
line of stdout.
"""
from __future__ import annotations

import json
import sys

import pandas as pd
from absl import flags

from preprocessing import cli, fileio, outputs, rle
from preprocessing.errors import UsageError
from serving.metric import evaluate_frames

FLAGS = flags.FLAGS
EXAMPLES_SHOWN = 5  # ids quoted per problem line
ROWS_SHOWN = 20  # per-row warnings printed before the rest are only counted (all are in --per_image_csv)


def define_flags() -> None:
    flags.DEFINE_string("solution", None, "Ground truth CSV: case_id,annotation,height,width (or the competition's "
                        "case_id,annotation,shape).", required=True)
    flags.DEFINE_string("submission", None, "Predictions CSV: case_id,annotation.", required=True)
    flags.DEFINE_string("per_image_csv", None, "Optional path for per-image scores.")
    cli.define_overwrite()


def read_csv(path: str, what: str) -> pd.DataFrame:
    """Read a CSV keeping case ids and annotations as text; a clear error names the file."""
    try:
        with fileio.open_file(path, "r") as f:
            return pd.read_csv(f, dtype={"case_id": str, "annotation": str}, keep_default_na=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} file {path} is not a readable CSV: {exc}") from exc


def rejection_lines(per_image: pd.DataFrame) -> list[str]:
    """One warning per submission row the competition's scorer would refuse (``metric.official_rejection``)."""
    rejected = per_image[per_image["official_rejection"].notna()]
    out = [f"warning: row {r.case_id!r}: {r.official_rejection}: the competition's scorer refuses this row and "
           "fails the whole submission" for r in rejected.head(ROWS_SHOWN).itertuples(index=False)]
    if len(rejected) > ROWS_SHOWN:
        out.append(f"warning: {len(rejected) - ROWS_SHOWN} more such rows (--per_image_csv lists every one)")
    return out


def warnings_for(s: dict) -> list[str]:
    """Plain-language lines for what in a summary needs a person's attention."""
    out = []
    if s["duplicate_submission_ids"]:
        ids = s["duplicate_submission_ids"]
        out.append(f"warning: the submission repeats {len(ids)} case id(s) ({', '.join(ids[:EXAMPLES_SHOWN])}); "
                   "only the first row of each was scored")
    if s["ids_differing_by_whitespace"]:
        pairs = s["ids_differing_by_whitespace"]
        shown = ", ".join(f"{sub!r} vs {sol!r}" for sol, sub in pairs[:EXAMPLES_SHOWN])
        out.append(f"warning: {len(pairs)} submission id(s) differ from solution ids only by surrounding "
                   f"whitespace ({shown}): strip them; they were scored as missing")
    return out


def main(argv):
    del argv
    inputs = {"solution": FLAGS.solution, "submission": FLAGS.submission}
    per_image = FLAGS.per_image_csv and outputs.check_file(FLAGS.per_image_csv, overwrite=FLAGS.overwrite,
                                                           protected=inputs, what="--per_image_csv")
    try:
        result = evaluate_frames(read_csv(FLAGS.solution, "solution"), read_csv(FLAGS.submission, "submission"))
    except (UsageError, rle.RLEError) as exc:  # what the two files hold; anything else is a bug
        raise UsageError(f"{FLAGS.solution} / {FLAGS.submission}: {exc}") from exc
    s = result.summary
    print(f"images {s['images']}  oF1 {s['oF1']:.4f}  missing {s['missing']}  unparseable {s['unparseable']}")
    print(f"true forged/authentic {s['true_forged']}/{s['true_authentic']}  "
          f"predicted forged/authentic {s['pred_forged']}/{s['pred_authentic']}  "
          f"false positives on authentic {s['authentic_false_positive']}")
    for line in warnings_for(s) + rejection_lines(result.per_image):
        print(line)
    if per_image:
        outputs.write_text(per_image, result.per_image.to_csv(index=False))
    sys.stdout.write(json.dumps(s) + "\n")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
