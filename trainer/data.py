"""The tf.data input pipeline over the Beam job's TFRecords.

Shape of the pipeline (one per input worker):

    shard files -> parallel interleave -> [shard records] -> shuffle | class balance (training)
    -> parallel parse + validate + decode + pad -> batch -> JPEG recompression (training) -> prefetch

The Beam job stored each image either at the model size S or, when it fits in
S x S, at its own size (``preprocessing.images.fits``). The host only parses,
decodes, pads to S x S and (in training) recompresses the valid part;
everything else (enlarging to S with ``preprocessing.model_input.upscale``,
flips, scaling, the noise residual) runs on the accelerator in the model's
train and test steps. JPEG on the host so sees the image's own pixel grid, and
costs what the image's own size costs, not S x S.

Nothing is ever skipped and no batch is filled up with repeats, so every
record of an evaluation epoch is seen exactly once. A record whose content is wrong (bad format, byte count,
size, label or mask values) raises InvalidArgumentError naming the check, the
file and the case id; a damaged shard (bad CRC, truncated gzip) raises the
reader's DataLossError ("corrupted record at <offset>"), which TF does not let
us annotate with the file name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import tensorflow as tf

from preprocessing import model_input, schema
from preprocessing.schema import MANIFEST_FILE, read_manifest
from trainer import augment

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 256  # serialized records: ~260 KB each raw at 256 px, ~60 KB PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CACHE_LIMIT_BYTES = 4 << 30  # decoded training examples kept in RAM up to this size per input pipeline


@dataclass(frozen=True)
class Source:
    """Where one split's records live and what is known about them up front."""
    files: tuple[str, ...]
    compression: str  # "GZIP" or "" (TFRecordDataset's spelling)
    image_size: int   # the model size S; 0 = native sizes of any size (cannot be batched beyond 1)
    encoding: str | None  # "png" | "raw"; None if the records mix them
    counts: dict      # {"total", "authentic", "forged"}


def _glob(pattern: str) -> tuple[str, ...]:
    files = tuple(sorted(tf.io.gfile.glob(pattern)))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern}")
    return files


def _scan(files: tuple[str, ...], compression: str) -> tuple[int, str | None, dict]:
    """(image size, encoding, label counts) from the records' small fields; for a bare file pattern."""
    keys = {k: schema.FEATURES[k] for k in ("label", "image/height", "image/width", "image/format")}
    sizes, formats, counts = set(), set(), {"total": 0, "authentic": 0, "forged": 0}
    for r in tf.data.TFRecordDataset(list(files), compression).map(
            lambda s: tf.io.parse_single_example(s, keys)).as_numpy_iterator():
        sizes.add((int(r["image/height"]), int(r["image/width"])))
        formats.add(r["image/format"].decode())
        counts["total"] += 1
        counts["forged" if r["label"] == schema.LABEL_FORGED else "authentic"] += 1
    # One square size is the model size; records of several sizes need the manifest, which says S.
    square = {h for h, w in sizes if h == w}
    size = square.pop() if len(sizes) == 1 and square else 0
    return size, (formats.pop() if len(formats) == 1 else None), counts


def resolve_source(data_dir: str, split: str) -> Source:
    """A directory with manifest.json (preferred), or a glob of TFRecord files (``split`` ignored;
    gzip inferred from a ``.gz`` suffix; size and counts read from the records)."""
    if tf.io.gfile.isdir(data_dir):
        manifest = read_manifest(data_dir)
        if split not in manifest["files"]:
            raise ValueError(f"split {split!r} not in {data_dir}/{MANIFEST_FILE} (has {sorted(manifest['files'])})")
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


# --- parsing and validation -------------------------------------------------------------------

def _assert_all(checks: list[tuple[tf.Tensor, str]], filename: tf.Tensor, case_id: tf.Tensor, *values) -> tf.Operation:
    """One assertion for several conditions; the message lists the ones that failed, the file and
    the case id. (One op instead of one per check: this runs once per record on a busy host.)"""
    ok = tf.stack([c for c, _ in checks])
    failed = tf.strings.reduce_join(tf.boolean_mask([r for _, r in checks], tf.logical_not(ok)), separator="; ")
    return tf.debugging.Assert(tf.reduce_all(ok), ["corrupt record:", failed, "file:", filename, "case_id:", case_id,
                                                   *values], summarize=8)


def _bytes_ok(encoded: tf.Tensor, fmt: tf.Tensor, num_bytes: tf.Tensor) -> tf.Tensor:
    """Raw planes hold exactly H*W*C bytes; PNG planes start with the PNG signature."""
    raw_ok = tf.equal(tf.cast(tf.strings.length(encoded), tf.int64), num_bytes)
    png_ok = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    return tf.where(tf.equal(fmt, "raw"), raw_ok, png_ok)


_HIGH_BITS = -0x0101010101010102  # 0xFEFEFEFEFEFEFEFE: every bit of every byte except the lowest


def _is_binary(mask: tf.Tensor) -> tf.Tensor:
    """All uint8 values are 0 or 1, tested eight bytes at a time (an element-wise uint8 max over a
    256 px mask costs more than the rest of the record's parsing)."""
    flat = tf.reshape(mask, [-1])
    flat = tf.pad(flat, [[0, tf.math.floormod(-tf.size(flat), 8)]])
    words = tf.bitcast(tf.reshape(flat, [-1, 8]), tf.int64)
    return tf.reduce_all(tf.equal(tf.bitwise.bitwise_and(words, tf.constant(_HIGH_BITS, tf.int64)), 0))


def parse_record(filename: tf.Tensor, serialized: tf.Tensor, image_size: int, encoding: str | None = None) -> dict:
    """One record -> decoded dict (as ``schema.parse_example``) plus ``file``, after checks that turn
    corruption into an error naming the file and case id instead of a bare decoder message or a
    silent skip."""
    f = tf.io.parse_single_example(serialized, schema.FEATURES)
    case_id, fmt = f["case_id"], f["image/format"]
    h, w = f["image/height"], f["image/width"]
    allowed = [encoding] if encoding else list(schema.ENCODINGS)
    checks = [
        (tf.reduce_any(tf.equal(fmt, allowed)), f"image/format is not {' or '.join(allowed)}"),
        (tf.reduce_any(tf.equal(f["label"], [schema.LABEL_AUTHENTIC, schema.LABEL_FORGED])), "label is not 0/1"),
        (_bytes_ok(f["image/encoded"], fmt, h * w * 3), "image bytes do not match image/format and size"),
        (_bytes_ok(f["mask/encoded"], fmt, h * w), "mask bytes do not match image/format and size"),
    ]
    if image_size:
        checks.append((tf.reduce_all(tf.logical_and(tf.stack([h, w]) >= 1, tf.stack([h, w]) <= image_size)),
                       f"size does not fit the manifest image_size {image_size}x{image_size}"))
    with tf.control_dependencies([_assert_all(checks, filename, case_id, "format", fmt, "label", f["label"],
                                              "height", h, "width", w)]):
        h32, w32 = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
        image = schema.decode_plane(f["image/encoded"], fmt, h32, w32, 3)
        mask = schema.decode_plane(f["mask/encoded"], fmt, h32, w32, 1)
    decoded_checks = [(_is_binary(mask), "mask values are not 0/1")]
    if encoding != "raw":  # a PNG's own header may disagree with image/height,width
        decoded_hw = tf.stack([tf.shape(image)[:2], tf.shape(mask)[:2]])
        decoded_checks.append((tf.reduce_all(tf.equal(decoded_hw, tf.stack([h32, w32]))),
                               "decoded size differs from image/height,width"))
    with tf.control_dependencies([_assert_all(decoded_checks, filename, case_id, tf.shape(mask))]):
        image, mask = tf.identity(image), tf.identity(mask)
    if image_size:  # padded to S x S (S x S records pass through)
        image, mask = model_input.pad_to(image, image_size), model_input.pad_to(mask, image_size)
    out = {k: f[k] for k in ("case_id", "label", "source", "mask/num_instances", "orig/height", "orig/width")}
    out.update(image=image, mask=mask, size=tf.stack([h32, w32]), file=filename)
    return out


# --- the pipeline -----------------------------------------------------------------------------

def _records(src: Source, training: bool, input_context, seed) -> tf.data.Dataset:
    """(filename, serialized) pairs: files sharded across input workers when there are enough,
    else the records; parallel interleave over files."""
    files = tf.data.Dataset.from_tensor_slices(list(src.files))
    n = input_context.num_input_pipelines if input_context else 1
    shard_files = n > 1 and len(src.files) >= n
    shard_records = n > 1 and not shard_files
    if shard_files:
        files = files.shard(n, input_context.input_pipeline_id)
    if training and not shard_records:
        files = files.shuffle(len(src.files), seed=seed, reshuffle_each_iteration=True)

    def read(filename):
        return tf.data.TFRecordDataset(filename, src.compression).map(lambda r: (filename, r))

    # Sharding records needs every worker to see the same order before .shard(): fixed file order
    # and a deterministic interleave there (records are shuffled after sharding).
    records = files.interleave(read, cycle_length=max(1, min(len(src.files), 8)), block_length=1,
                               num_parallel_calls=AUTOTUNE, deterministic=True if shard_records else None)
    if shard_records:
        records = records.shard(n, input_context.input_pipeline_id)
    return records


def _is_forged(filename, serialized):
    label = tf.io.parse_single_example(serialized, {"label": schema.FEATURES["label"]})["label"]
    return tf.equal(label, schema.LABEL_FORGED)


def _balanced(records: tf.data.Dataset, src: Source, fraction: float, epoch_size: int,
              shuffle_buffer: int, seed) -> tf.data.Dataset:
    """Sample forged records with probability ``fraction`` (repeating them as needed) for an epoch
    of ``epoch_size`` records, so an epoch has the same number of steps as without balancing."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"forged_fraction must be in (0, 1), got {fraction}")
    if not src.counts.get("forged") or not src.counts.get("authentic"):
        raise ValueError(f"class balancing needs both classes; split counts are {src.counts}")
    forged = records.filter(_is_forged).repeat().shuffle(shuffle_buffer, seed=seed)
    authentic = records.filter(lambda f, r: tf.logical_not(_is_forged(f, r))).repeat().shuffle(
        shuffle_buffer, seed=seed)
    mixed = tf.data.Dataset.sample_from_datasets([authentic, forged], weights=[1.0 - fraction, fraction],
                                                 seed=seed)
    return mixed.take(epoch_size)


def should_cache(src: Source, n_pipelines: int = 1, limit_bytes: int = CACHE_LIMIT_BYTES) -> bool:
    """Cache decoded examples in RAM when one input pipeline's share fits under ``limit_bytes``."""
    if not src.image_size:
        return False
    per_example = src.image_size * src.image_size * 4  # RGB + mask, uint8
    return src.counts.get("total", 0) * per_example / max(1, n_pipelines) <= limit_bytes


TRAIN_FIELDS = ("image", "mask", "size", "label")
ID_FIELDS = ("case_id", "orig/height", "orig/width", "mask/num_instances")


def model_fields(example: dict, with_ids: bool) -> dict:
    """Only what the batches carry: every extra field is work for shuffle, cache and batch."""
    return {k: example[k] for k in TRAIN_FIELDS + (ID_FIELDS if with_ids else ())}


def _to_model_io(batch: dict, with_ids: bool):
    # The mask stays uint8 (0/1) and images stay at their stored size: the model's train/test step
    # enlarges both and casts the mask on the device (trainer.model.device_batch).
    inputs = {"images": batch["image"], "sizes": batch["size"]}
    targets = {"mask": batch["mask"], "image": tf.cast(batch["label"], tf.float32)[:, None]}
    if not with_ids:
        return inputs, targets
    ids = {"case_id": batch["case_id"],
           "orig_hw": tf.cast(tf.stack([batch["orig/height"], batch["orig/width"]], axis=1), tf.int32),
           "num_instances": batch["mask/num_instances"]}
    return inputs, targets, ids


def make_dataset(data_dir: str, split: str, global_batch_size: int, training: bool, input_context=None,
                 forged_fraction: float | None = None, seed: int | None = None, with_ids: bool = False,
                 *, augment_jpeg: bool | None = None, num_parallel_calls: int = AUTOTUNE,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, cache: bool | None = None) -> tf.data.Dataset:
    """Batches of ``({"images": uint8 [B,S,S,3], "sizes": int32 [B,2]}, {"mask": uint8 0/1 [B,S,S,1],
    "image": float32 [B,1]})`` (+ ``{"case_id", "orig_hw", "num_instances"}`` when ``with_ids``).
    Images and masks are as stored, padded at the bottom and right to S x S; ``sizes`` are their
    stored (height, width), and ``trainer.model.device_batch`` makes the model's S x S input of them.

    B is the per-replica batch when ``input_context`` is given (distribute_datasets_from_function),
    else ``global_batch_size``. Training: shuffled, JPEG-recompressed (``augment_jpeg`` overrides),
    optionally class-balanced to ``forged_fraction``, last partial batch dropped. Evaluation:
    deterministic order, every record exactly once, last partial batch kept. ``cache`` (training;
    default: when the decoded split fits in ``CACHE_LIMIT_BYTES``) keeps decoded examples in RAM
    after the first epoch. Flips are not
    applied here: the model's train_step calls ``trainer.augment.random_flips`` on the device.
    """
    src = resolve_source(data_dir, split)
    batch_size = input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    if batch_size < 1:
        raise ValueError(f"global batch {global_batch_size} gives per-replica batch {batch_size}")
    if src.image_size == 0 and batch_size > 1:
        raise ValueError(f"{data_dir}: records of several sizes and no model size (image_size 0); batches "
                         "need one: read the directory with its manifest.json, or rerun preprocessing.main "
                         "with --image_size")
    augment_jpeg = training if augment_jpeg is None else augment_jpeg
    n_pipelines = input_context.num_input_pipelines if input_context else 1

    records = _records(src, training, input_context, seed)
    parse = lambda f, r: model_fields(parse_record(f, r, src.image_size, src.encoding), with_ids)  # noqa: E731
    epoch_size = max(1, src.counts["total"] // n_pipelines)
    # Class balancing reads its streams partially (take), which would never complete a cache.
    cache = training and not forged_fraction and (should_cache(src, n_pipelines) if cache is None else cache)
    if cache:
        # Decode once and keep the examples in RAM: from the second epoch on the host only
        # shuffles and augments (reading + CRC + parsing a raw 256 px record costs about as much
        # as the JPEG recompression itself on a CPU).
        examples = records.map(parse, num_parallel_calls=num_parallel_calls).cache()
        examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        if training and forged_fraction:
            records = _balanced(records, src, forged_fraction, epoch_size, shuffle_buffer, seed)
        elif training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        examples = records.map(parse, num_parallel_calls=num_parallel_calls)
    ds = batch_for_model(examples, batch_size, training, with_ids, num_parallel_calls,
                         augment_jpeg=augment_jpeg, seed=seed)
    options = tf.data.Options()
    options.deterministic = (not training) or seed is not None
    # Sharding is done above from the input context; never let tf.distribute re-shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def host_augment(batch: dict, seed: tf.Tensor) -> dict:
    """Host-side training augmentation: JPEG recompression (a CPU-only op) of each image of a
    batch at its stored size, with its own coin and quality. ``seed``: a random int64 for the batch."""
    return dict(batch, image=augment.recompress_jpeg_batch(batch["image"], tf.stack([seed, 0]),
                                                           sizes=batch["size"]))


def batch_for_model(examples: tf.data.Dataset, batch_size: int, training: bool, with_ids: bool = False,
                    num_parallel_calls: int = AUTOTUNE, augment_jpeg: bool = False,
                    seed: int | None = None) -> tf.data.Dataset:
    """Decoded examples -> (JPEG-recompressed when ``augment_jpeg``) prefetched model batches; the
    last partial batch is dropped in training.

    Recompression happens here, per image but in one tf.data call per batch, because a call per
    image costs a fifth of the JPEG work on a CPU host. Each batch pairs with its own random
    int64 (fresh each epoch, reproducible with ``seed``), so the choices do not depend on which
    parallel map thread runs first.
    """
    ds = examples.batch(batch_size, drop_remainder=training)
    if augment_jpeg:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda b, s: _to_model_io(host_augment(b, s), with_ids),
                                                num_parallel_calls=num_parallel_calls)
    else:
        ds = ds.map(lambda b: _to_model_io(b, with_ids), num_parallel_calls=num_parallel_calls)
    return ds.prefetch(AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy, data_dir: str, split: str, global_batch_size: int,
                        training: bool, **kwargs) -> tf.distribute.DistributedDataset:
    """``make_dataset`` per input worker via ``strategy.distribute_datasets_from_function``: each
    worker batches at the per-replica size and reads its own shard (files if there are enough)."""
    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(data_dir, split, global_batch_size, training, input_context=input_context, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)
