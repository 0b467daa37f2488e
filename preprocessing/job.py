"""The Beam preprocessing job as a Python API (``run_pipeline``); ``preprocessing.main`` is its command.

The expensive work (decoding big PNG/TIFF files, resizing, validating masks) is done once here so
training reads compact records. The job writes into a staging folder beside the output directory
and moves its files into place when it has finished (``preprocessing.outputs``): a kill never
leaves half a dataset, and nothing in the output directory that the job did not write is touched.
"""
from __future__ import annotations

import fnmatch
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from preprocessing import outputs
from preprocessing import pipeline as pl
from preprocessing.beam_runner import local_runner
from preprocessing.cases import discover_training_cases
from preprocessing.constants import COMPRESSIONS, ERRORS_FILE, MANIFEST_FILE, SPLITS
from preprocessing.convert import MAX_LISTED, ConvertConfig, OutputConfig, reason_tag
from preprocessing.errors import UsageError
from preprocessing.progress import heartbeat

_LOG = logging.getLogger(__name__)
SHARD_GLOB = "{split}-*-of-*.tfrecord*"
STATS_FILE = pl.STATS_PREFIX + ".json"  # the pipeline's side file, folded into the manifest
OWNED = tuple(SHARD_GLOB.format(split=s) for s in SPLITS) + (ERRORS_FILE, MANIFEST_FILE, STATS_FILE)


def owned(rel: str) -> bool:
    """The files this job writes in its output directory (the only ones ``--overwrite`` replaces)."""
    return "/" not in rel and any(fnmatch.fnmatch(rel, pattern) for pattern in OWNED)


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
    """The flags' bounds, for callers of the Python API (the command line checks them when parsing)."""
    from preprocessing.constants import ENCODINGS

    if image_size < 0:
        raise UsageError(f"image_size must be >= 0 (0 = native resolution), got {image_size}")
    if encoding not in ENCODINGS:
        raise UsageError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if compression not in COMPRESSIONS:
        raise UsageError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if num_shards < 0:
        raise UsageError(f"num_shards must be >= 0 (0 = let the runner choose), got {num_shards}")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_pixels <= 0:
        raise UsageError(f"max_pixels must be > 0, got {max_pixels}")


def _matches(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


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
        tag = reason_tag(p.reason)
        by_reason[tag] = by_reason.get(tag, 0) + 1
    return {"count": len(other), "by_reason": by_reason,
            "items": [p.to_dict() for p in other[:MAX_LISTED]]}


def _manifest(summary: dict, discovered: int, problems, staging: str, options: dict) -> dict:
    """manifest.json: the pipeline's summary side file + what only the driver knows (shards, options)."""
    from preprocessing.schema import SCHEMA_VERSION, shard_pattern

    compression = options["compression"]
    files = {s: shard_pattern(s, compression) for s in SPLITS}
    return {
        "schema_version": SCHEMA_VERSION,
        "image_size": options["image_size"],
        "encoding": options["encoding"],
        "evidence": bool(options.get("evidence")),  # records hold the matcher's evidence map
        "compression": compression,
        "files": files,
        "num_shards": {s: len(_matches(FileSystems.join(staging, files[s]))) for s in SPLITS},
        "counts": summary["counts"],
        "discovered": discovered,
        "written": summary["written"],
        "errors": summary["errors"],
        "errors_by_reason": summary["errors_by_reason"],
        "stats": dict(summary["stats"], discovery_problems=_discovery_problems(problems)),
        "options": options,
    }


def split_configs(**options) -> tuple[ConvertConfig, OutputConfig]:
    """Keyword options -> the two configs (unknown names refused), defaults from the dataclasses."""
    fields = {c: set(c.__dataclass_fields__) for c in (ConvertConfig, OutputConfig)}
    unknown = sorted(set(options) - set().union(*fields.values()))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}")
    return tuple(c(**{k: v for k, v in options.items() if k in names}) for c, names in fields.items())


def _listing(counts: dict, before: str = "", after: str = "") -> str:
    """``{"train": 2, "val": 1}`` as ``train 2, val 1`` for the console ("" when empty)."""
    return f"{before}{', '.join(f'{k} {v}' for k, v in counts.items())}{after}" if counts else ""


def run_pipeline(input_dir: str, output_dir: str, pipeline_args: list[str] | None = None, overwrite: bool = False,
                 command: list[str] | None = None, **options) -> dict:
    """Run the job (DirectRunner unless ``pipeline_args`` say otherwise) and return the manifest it wrote.

    ``options``: fields of ``convert.ConvertConfig`` and ``OutputConfig`` (image_size, encoding,
    allow_pickle_masks, max_pixels, val_fraction, compression, num_shards). Refuses, before any work,
    an output directory that is not empty (unless ``overwrite``: then only this job's own files are
    replaced) or that holds the input. Raises ``RuntimeError`` if discovered cases != written
    examples + error lines.
    """
    cfg, out = split_configs(**options)
    _validate(cfg.image_size, cfg.encoding, out.compression, out.num_shards, cfg.val_fraction, cfg.max_pixels)
    _check_crc32c()
    pipeline_args = list(pipeline_args or [])
    output_dir = outputs.check_dir(output_dir, overwrite=overwrite, owned=owned,
                                   protected={"input directory": input_dir}, beam=True)
    cases, problems = discover_training_cases(input_dir, beam=True)
    _LOG.info("discovered %d cases in %s", len(cases), input_dir)
    if not cases:
        raise UsageError(f"--input_dir {input_dir}: no training image found (train_images/authentic, "
                         "train_images/forged or supplemental_images/): nothing to convert")

    with outputs.staged_dir(output_dir, owned, beam=True) as staging:
        beam_options = PipelineOptions(pipeline_args)
        p = beam.Pipeline(runner=local_runner(beam_options), options=beam_options)
        pl.build(p, [c.to_dict() for c in cases], staging, cfg, compression=out.compression,
                 num_shards=out.num_shards)
        with heartbeat(f"preprocess: converting {len(cases)} cases"):
            result = p.run()
            result.wait_until_finish()

        stats_path = FileSystems.join(staging, STATS_FILE)
        summary = _read_json(stats_path)
        FileSystems.delete([stats_path])
        options_record = {"input_dir": input_dir, "output_dir": output_dir, **cfg.__dict__, **out.__dict__,
                          "pipeline_args": pipeline_args, "command": list(command or [])}
        manifest = _manifest(summary, len(cases), problems, staging, options_record)
        _write_json(FileSystems.join(staging, MANIFEST_FILE), manifest)

    counters = _counters(result)
    if counters:
        _LOG.info("counters: %s", _listing(dict(sorted(counters.items()))))
    counts = manifest["counts"]
    line = (f"preprocess: discovered={len(cases)} written={manifest['written']} "
            f"(train={counts['train']['total']} val={counts['val']['total']}) "
            f"errors={manifest['errors']}{_listing(manifest['errors_by_reason'], ' (', ')')} "
            f"shards={_listing(manifest['num_shards'])} -> {output_dir}")
    print(line, flush=True)
    for split in SPLITS:
        if counts[split]["total"] == 0:
            print(f"warning: the {split} split is empty (val_fraction {cfg.val_fraction}, {manifest['written']} "
                  "records): trainer.main needs records in both splits", flush=True)
    if manifest["written"] + manifest["errors"] != len(cases):
        raise RuntimeError(f"count mismatch: discovered {len(cases)} cases but wrote {manifest['written']} "
                           f"examples and {manifest['errors']} error lines")
    return manifest
