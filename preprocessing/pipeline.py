"""The Beam preprocessing job's transforms: cases in, train/val shards, error lines and statistics out.

The work itself is ``preprocessing.convert`` (pure functions); ``ConvertCase``, ``StatsFn`` and
``build`` only route its results. Module-level imports stay light (no TensorFlow): DirectRunner's
multi-processing workers and cluster workers import this module to unpickle the DoFns; TensorFlow
(for the Example protos) loads once per worker in ``ConvertCase.setup``.
"""
from __future__ import annotations

import json
import logging
import os

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from preprocessing.cases import Case
from preprocessing.constants import ERRORS_FILE
from preprocessing.convert import (
    TRAIN,
    VAL,
    ConvertConfig,
    add_outcome,
    assign_split,
    convert_case,
    empty_stats,
    error_outcome,
    error_record,
    finish_stats,
    merge_stats,
    reason_tag,
)
from preprocessing.errors import BadInput

COUNTER_NS = "preprocess"
ERRORS = "errors"
OUTCOMES = "outcomes"
STATS_PREFIX = "_stats"  # side file the pipeline writes and the driver folds into manifest.json
PROGRESS_EVERY = 200  # cases per worker between progress log lines


class StatsFn(beam.CombineFn):
    """Dataset statistics over all outcome records, in one pass (CombineGlobally)."""

    def create_accumulator(self):
        return empty_stats()

    def add_input(self, acc, outcome):
        return add_outcome(acc, outcome)

    def merge_accumulators(self, accs):
        return merge_stats(accs)

    def extract_output(self, acc):
        return finish_stats(acc)


# ----------------------------------------------------------------------------- Beam transforms

class ConvertCase(beam.DoFn):
    """Case dict -> serialized example on the "train"/"val" output, an outcome record on "outcomes",
    and, for bad input, an error record on "errors". Never raises for a bad file: one odd file must
    not kill a long cluster job (unexpected failures are recorded as ``unexpected_error`` and logged)."""

    def __init__(self, cfg: ConvertConfig):
        self.cfg = cfg
        self.read = Metrics.counter(COUNTER_NS, "cases_read")
        self.written = {s: Metrics.counter(COUNTER_NS, f"written_{s}") for s in (TRAIN, VAL)}
        self.errors = Metrics.counter(COUNTER_NS, "errors")

    def setup(self):
        # Load the heavy libraries once per worker, not per element.
        import preprocessing.schema  # noqa: F401  (TensorFlow)

        self.seen = 0  # cases this DoFn instance has handled, for the progress log

    def _convert(self, case):
        try:
            return convert_case(case, self.cfg)
        except BadInput:
            raise
        except Exception as exc:  # not a known kind of bad input: keep the job going, say so loudly
            logging.getLogger(__name__).exception("unexpected failure on %s", case.image_path)
            raise BadInput(case.image_path, f"unexpected_error: {type(exc).__name__}: {exc}") from exc

    def process(self, case_dict):
        case = Case(**case_dict)
        self.read.inc()
        self.seen += 1
        if self.seen % PROGRESS_EVERY == 0:
            logging.getLogger(__name__).info("worker %d: %d cases converted", os.getpid(), self.seen)
        try:
            split, serialized, outcome = self._convert(case)
        except BadInput as exc:
            self.errors.inc()
            tag = reason_tag(exc.reason)
            Metrics.counter(COUNTER_NS, f"errors_{tag}").inc()
            yield beam.pvalue.TaggedOutput(ERRORS, error_record(case, exc))
            yield beam.pvalue.TaggedOutput(
                OUTCOMES, error_outcome(case, assign_split(case, self.cfg.val_fraction), exc.reason))
            return
        self.written[split].inc()
        yield beam.pvalue.TaggedOutput(split, serialized)
        yield beam.pvalue.TaggedOutput(OUTCOMES, outcome)


def shard_prefix(output_dir: str, split: str) -> str:
    return FileSystems.join(output_dir, split)


def tfrecord_suffix(compression: str) -> str:
    return ".tfrecord.gz" if compression == "gzip" else ".tfrecord"


def build(p: beam.Pipeline, case_dicts: list[dict], output_dir: str, cfg: ConvertConfig,
          compression: str = "gzip", num_shards: int = 0) -> None:
    """Add the job to pipeline ``p``: convert, write train/val shards, errors.jsonl and the stats side file.

    ``num_shards`` 0 lets the runner choose the number of shards (no extra
    shuffle); K > 0 gives exactly K shards per split (Beam adds a reshuffle).
    """
    ctype = CompressionTypes.GZIP if compression == "gzip" else CompressionTypes.UNCOMPRESSED
    results = (
        p
        | "Cases" >> beam.Create(case_dicts, reshuffle=True)
        | "Convert" >> beam.ParDo(ConvertCase(cfg)).with_outputs(TRAIN, VAL, ERRORS, OUTCOMES)
    )
    for split in (TRAIN, VAL):
        _ = results[split] | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
            shard_prefix(output_dir, split), file_name_suffix=tfrecord_suffix(compression),
            num_shards=num_shards, compression_type=ctype)
    _ = (results[ERRORS]
         | "ErrorJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
         | "WriteErrors" >> beam.io.WriteToText(
             FileSystems.join(output_dir, os.path.splitext(ERRORS_FILE)[0]), file_name_suffix=".jsonl",
             shard_name_template="", num_shards=1))
    _ = (results[OUTCOMES]
         | "Stats" >> beam.CombineGlobally(StatsFn())
         | "StatsJson" >> beam.Map(lambda s: json.dumps(s, sort_keys=True))
         | "WriteStats" >> beam.io.WriteToText(
             FileSystems.join(output_dir, STATS_PREFIX), file_name_suffix=".json",
             shard_name_template="", num_shards=1))
