"""From a records directory (or file pattern) to the TFRecord files of one split: one way, for every reader.

The Beam job writes ``manifest.json`` next to its shards (schema version, the model size S, encoding,
compression, one file glob and the counts per split). The trainer's input pipeline, calibration and
the benchmarks all find their files here; ``preprocessing.schema.parse_record`` then reads each record.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import tensorflow as tf

from preprocessing import fileio
from preprocessing.constants import FORGED, MANIFEST_FILE
from preprocessing.errors import UsageError
from preprocessing.schema import FEATURES, READABLE_VERSIONS


def read_manifest(data_dir: str) -> dict:
    """The Beam job's manifest.json in ``data_dir``, with its schema version checked."""
    path = os.path.join(data_dir, MANIFEST_FILE)
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path}: no {MANIFEST_FILE}; run `python -m preprocessing.main` first")
    text = fileio.read_text(path)
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); rerun `python -m preprocessing.main`") from exc
    if not isinstance(manifest, dict):
        raise UsageError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UsageError(f"{path}: schema_version {version}, but this code reads {READABLE_VERSIONS} "
                         f"({VERSION_CHANGE}); {rewrite_command(manifest)}")
    return manifest


# What the current schema version changed, for the message that refuses older records.
VERSION_CHANGE = "version 4 adds the dense field's planes to the evidence map"


def rewrite_command(manifest: dict) -> str:
    """How to rewrite refused records: the Beam job again, on the corpus the manifest names."""
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    corpus = options.get("input_dir") or "CORPUS"
    before = options.get("command")
    was = f"; they were written by `{' '.join(map(str, before))}`" if isinstance(before, list) and before else ""
    return (f"rewrite them with `python -m preprocessing.main --input_dir {corpus} --output_dir NEW_DIR` "
            f"and the same other flags{was}; then train on NEW_DIR")


@dataclass(frozen=True)
class Source:
    """Where one split's records live and what is known about them up front."""
    files: tuple[str, ...]
    compression: str  # "GZIP" or "" (TFRecordDataset's spelling)
    image_size: int   # the model size S; 0 = native sizes of any size (cannot be batched beyond 1)
    encoding: str | None  # "png" | "raw"; None if the records mix them
    counts: dict      # {"total", "authentic", "forged"}


def _glob(pattern: str) -> tuple[str, ...]:
    files = tuple(fileio.glob(pattern))  # through fileio: remote schemes registered before TF reads them
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern}")
    return files


def _scan(files: tuple[str, ...], compression: str) -> tuple[int, str | None, dict]:
    """(image size, encoding, label counts) from the records' small fields; for a bare file pattern."""
    keys = {k: FEATURES[k] for k in ("label", "image/height", "image/width", "image/format")}
    sizes, formats, counts = set(), set(), {"total": 0, "authentic": 0, "forged": 0}
    for r in tf.data.TFRecordDataset(list(files), compression).map(
            lambda s: tf.io.parse_single_example(s, keys)).as_numpy_iterator():
        sizes.add((int(r["image/height"]), int(r["image/width"])))
        formats.add(r["image/format"].decode())
        counts["total"] += 1
        counts["forged" if r["label"] == FORGED else "authentic"] += 1
    # One square size is the model size; records of several sizes need the manifest, which says S.
    square = {h for h, w in sizes if h == w}
    size = square.pop() if len(sizes) == 1 and square else 0
    return size, (formats.pop() if len(formats) == 1 else None), counts


def resolve_source(data_dir: str, split: str) -> Source:
    """A directory with manifest.json (preferred), or a glob of TFRecord files (``split`` ignored;
    gzip inferred from a ``.gz`` suffix; size and counts read from the records)."""
    if fileio.isdir(data_dir):
        manifest = read_manifest(data_dir)
        if split not in manifest["files"]:
            raise UsageError(f"split {split!r} not in {data_dir}/{MANIFEST_FILE} (has {sorted(manifest['files'])})")
        files = _glob(os.path.join(data_dir, manifest["files"][split]))
        compression = "GZIP" if manifest["compression"] == "gzip" else ""
        return Source(files, compression, int(manifest["image_size"]), manifest["encoding"],
                      dict(manifest["counts"][split]))
    files = _glob(data_dir)
    compression = "GZIP" if data_dir.endswith(".gz") else ""
    return Source(files, compression, *_scan(files, compression))


def num_examples(data_dir: str, split: str) -> int:
    """Records in a split (an epoch's size, also with class balancing)."""
    return int(resolve_source(data_dir, split).counts["total"])



def damaged_files(src: Source) -> list[tuple[str, str]]:
    """(file, error) of each shard of ``src`` that cannot be read to its end (bad CRC, truncated)."""
    bad = []
    for path in src.files:
        try:
            for _ in tf.data.TFRecordDataset(path, src.compression):
                pass
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            bad.append((path, exc.message.splitlines()[0]))
    return bad


def damaged_records_error(sources: list[Source], exc: Exception) -> ValueError:
    """TF's "truncated record at 166832" names no file: find the damaged shards and name them."""
    bad = [item for src in sources for item in damaged_files(src)]
    if not bad:
        return ValueError(f"reading the records failed: {exc}")
    listed = "; ".join(f"{path}: {why}" for path, why in bad)
    return ValueError(f"damaged TFRecord shard(s): {listed}. Rerun preprocessing.main to rewrite the records")
