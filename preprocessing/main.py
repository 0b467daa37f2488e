"""Beam preprocessing job: a competition-layout corpus -> sharded TFRecords + manifest.json + errors.jsonl.

    python -m preprocessing.main --input_dir DATA --output_dir OUT [--num_shards K] [--val_fraction 0.2]
        [--image_size 256] [--encoding png|raw] [--compression gzip|none] [--allow_pickle_masks]
        [--max_pixels N] [any Beam pipeline option, e.g. --direct_running_mode=multi_processing
        --direct_num_workers=2, or --runner=FlinkRunner|SparkRunner|DataflowRunner ...]

The expensive work (decoding big PNG/TIFF files, resizing, validating masks) is
done once here so training reads compact records. Flags this module does not
know are handed to Beam unchanged. ``run_pipeline`` is the same job as a Python API.
"""
from __future__ import annotations

import json
import logging
import sys

import apache_beam as beam
from absl import app, flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from preprocessing import pipeline as pl
from preprocessing.beam_runner import local_runner
from preprocessing.cases import discover_training_cases
from preprocessing.images import MAX_PIXELS
from preprocessing.schema import MANIFEST_FILE

_COMMAND: list[str] = []  # the command line, when run as ``python -m preprocessing.main``
_LOG = logging.getLogger(__name__)


def _check_crc32c() -> None:
    """Beam's TFRecord sink needs a CRC32C library; fail before the expensive work, not after."""
    for module in ("google_crc32c", "snappy", "crcmod"):
        try:
            __import__(module)
            return
        except ImportError:
            continue
    raise RuntimeError("Beam's TFRecord sink needs google-crc32c (or crcmod / python-snappy): "
                       "pip install google-crc32c")


def _validate(image_size: int, encoding: str, compression: str, num_shards: int, val_fraction: float,
              max_pixels: int) -> None:
    from preprocessing.schema import ENCODINGS

    if image_size < 0:
        raise ValueError(f"image_size must be >= 0 (0 = native resolution), got {image_size}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if compression not in ("gzip", "none"):
        raise ValueError(f"compression must be 'gzip' or 'none', got {compression!r}")
    if num_shards < 0:
        raise ValueError(f"num_shards must be >= 0 (0 = let the runner choose), got {num_shards}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be > 0, got {max_pixels}")


def _matches(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _clear_previous_outputs(output_dir: str) -> None:
    """Remove this job's own files from an earlier run, so the globs in the manifest see only this run."""
    stale = []
    for pattern in ("train-*-of-*.tfrecord*", "val-*-of-*.tfrecord*", pl.ERRORS_FILE, MANIFEST_FILE,
                    pl.STATS_PREFIX + ".json"):
        stale += _matches(FileSystems.join(output_dir, pattern))
    if stale:
        _LOG.warning("removing %d files of a previous run in %s", len(stale), output_dir)
        FileSystems.delete(stale)


def _read_json(path: str) -> dict:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def _write_json(path: str, obj: dict) -> None:
    with FileSystems.create(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def _counters(result) -> dict:
    """Beam counters of the job (runner permitting), for the log line."""
    try:
        metrics = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(pl.COUNTER_NS))
        return {c.key.metric.name: c.committed for c in metrics["counters"]}
    except Exception:  # some runners do not report metrics; the side files are the source of truth
        return {}


def _discovery_problems(problems) -> dict:
    """Problems that are not cases (orphan masks, duplicate images); missing masks become error lines."""
    other = [p for p in problems if not p.reason.startswith("missing_mask")]
    by_reason: dict = {}
    for p in other:
        tag = pl.reason_tag(p.reason)
        by_reason[tag] = by_reason.get(tag, 0) + 1
    return {"count": len(other), "by_reason": by_reason,
            "items": [p.to_dict() for p in other[:pl.MAX_LISTED]]}


def _manifest(summary: dict, discovered: int, problems, output_dir: str, options: dict) -> dict:
    """manifest.json: the pipeline's summary side file + what only the driver knows (shards, options)."""
    from preprocessing.schema import SCHEMA_VERSION, shard_pattern

    compression = options["compression"]
    files = {s: shard_pattern(s, compression) for s in pl.TRAIN_VAL}
    return {
        "schema_version": SCHEMA_VERSION,
        "image_size": options["image_size"],
        "encoding": options["encoding"],
        "compression": compression,
        "files": files,
        "num_shards": {s: len(_matches(FileSystems.join(output_dir, files[s]))) for s in pl.TRAIN_VAL},
        "counts": summary["counts"],
        "discovered": discovered,
        "written": summary["written"],
        "errors": summary["errors"],
        "errors_by_reason": summary["errors_by_reason"],
        "stats": dict(summary["stats"], discovery_problems=_discovery_problems(problems)),
        "options": options,
    }


def run_pipeline(input_dir: str, output_dir: str, image_size: int = 256, encoding: str = "png",
                 compression: str = "gzip", num_shards: int = 0, val_fraction: float = 0.2,
                 allow_pickle_masks: bool = False, max_pixels: int = MAX_PIXELS,
                 pipeline_args: list[str] | None = None) -> dict:
    """Run the job (DirectRunner unless ``pipeline_args`` say otherwise) and return the manifest it wrote.

    Raises ``RuntimeError`` if discovered cases != written examples + error lines.
    """
    _validate(image_size, encoding, compression, num_shards, val_fraction, max_pixels)
    _check_crc32c()
    pipeline_args = list(pipeline_args or [])
    cases, problems = discover_training_cases(input_dir)
    _LOG.info("discovered %d cases in %s", len(cases), input_dir)
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)
    _clear_previous_outputs(output_dir)

    cfg = pl.ConvertConfig(image_size=image_size, encoding=encoding, allow_pickle_masks=allow_pickle_masks,
                           max_pixels=max_pixels, val_fraction=val_fraction)
    options = PipelineOptions(pipeline_args)
    p = beam.Pipeline(runner=local_runner(options), options=options)
    pl.build(p, [c.to_dict() for c in cases], output_dir, cfg, compression=compression, num_shards=num_shards)
    result = p.run()
    result.wait_until_finish()

    stats_path = FileSystems.join(output_dir, pl.STATS_PREFIX + ".json")
    summary = _read_json(stats_path)
    FileSystems.delete([stats_path])
    options_record = {"input_dir": input_dir, "output_dir": output_dir, "image_size": image_size,
                      "encoding": encoding, "compression": compression, "num_shards": num_shards,
                      "val_fraction": val_fraction, "allow_pickle_masks": allow_pickle_masks,
                      "max_pixels": max_pixels, "pipeline_args": pipeline_args, "command": list(_COMMAND)}
    manifest = _manifest(summary, len(cases), problems, output_dir, options_record)
    _write_json(FileSystems.join(output_dir, MANIFEST_FILE), manifest)

    counters = _counters(result)
    if counters:
        _LOG.info("counters: %s", json.dumps(dict(sorted(counters.items()))))
    line = (f"preprocess: discovered={len(cases)} written={manifest['written']} "
            f"(train={manifest['counts']['train']['total']} val={manifest['counts']['val']['total']}) "
            f"errors={manifest['errors']} {json.dumps(manifest['errors_by_reason'])} "
            f"shards={json.dumps(manifest['num_shards'])} -> {output_dir}")
    print(line, flush=True)
    if manifest["written"] + manifest["errors"] != len(cases):
        raise RuntimeError(f"count mismatch: discovered {len(cases)} cases but wrote {manifest['written']} "
                           f"examples and {manifest['errors']} error lines")
    return manifest


# ----------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("input_dir", None, "Corpus in the competition layout (train_images/, train_masks/, "
                        "optional supplemental_images/ + supplemental_masks/).")
    flags.DEFINE_string("output_dir", None, "Where the shards, manifest.json and errors.jsonl go.")
    flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 lets the runner choose (no extra shuffle).")
    flags.DEFINE_float("val_fraction", 0.2, "Fraction of case ids (stable hash) put in the val split.")
    flags.DEFINE_integer("image_size", 256, "Model input size S: an image with a side over S is resized "
                         "to S x S; the others are stored at their own size and enlarged to S on the "
                         "accelerator; 0 keeps every native size.")
    flags.DEFINE_enum("encoding", "png", ["png", "raw"], "png: lossless, smaller; raw: uint8, fastest to read.")
    flags.DEFINE_enum("compression", "gzip", ["gzip", "none"], "TFRecord file compression.")
    flags.DEFINE_bool("allow_pickle_masks", False, "Load pickled .npy masks (they can run code: trusted data only).")
    flags.DEFINE_integer("max_pixels", MAX_PIXELS, "Refuse images with more pixels (decompression bombs).")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def _parse(argv: list[str]) -> list[str]:
    """Parse our flags; everything else is a Beam pipeline option."""
    try:
        return FLAGS(argv, known_only=True)
    except flags.Error as exc:
        sys.stderr.write(f"FATAL Flags parsing error: {exc}\nPass --helpfull to see the flags.\n")
        sys.exit(1)


def main(argv: list[str]) -> None:
    logging.getLogger("preprocessing").setLevel(logging.INFO)  # our progress lines, not every worker's
    _COMMAND[:] = ["python", "-m", "preprocessing.main"] + sys.argv[1:]
    run_pipeline(FLAGS.input_dir, FLAGS.output_dir, image_size=FLAGS.image_size, encoding=FLAGS.encoding,
                 compression=FLAGS.compression, num_shards=FLAGS.num_shards, val_fraction=FLAGS.val_fraction,
                 allow_pickle_masks=FLAGS.allow_pickle_masks, max_pixels=FLAGS.max_pixels,
                 pipeline_args=argv[1:])


if __name__ == "__main__":
    _define_flags()
    app.run(main, argv=sys.argv, flags_parser=_parse)
